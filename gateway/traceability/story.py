"""Everything the registry knows about one lot, read in one place for the exports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry import dispatches, farms, gavage, lots, products, traceability
from registry.base import Executor

MAX_PRODUCTS = 1000
MAX_DISPATCHES = 10000


@dataclass
class LotStory:
    lot: dict[str, Any]
    farm: dict[str, Any] | None
    feedings: list[dict[str, Any]]
    inspection: dict[str, Any] | None  # registry.traceability.inspection_by_device, once inspected
    products: list[dict[str, Any]]
    dispatches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lot_id(self) -> str:
        return str(self.lot["id"])


async def load_lot_story(db: Executor, lot_id: str) -> LotStory:
    """Raises registry.errors.LotNotFound for an unknown lot."""
    lot = await lots.get_lot(db, lot_id)
    farm = await farms.get_farm(db, lot["farmer_id"])
    feedings = await gavage.list_feedings(db, lot_id)
    inspection = None
    if lot["inspected_at"] is not None:
        inspection = await traceability.inspection_by_device(db, lot_id, until=lot["inspected_at"])
    prods = await products.list_products(db, lot_id=lot_id, limit=MAX_PRODUCTS)
    _, disp = await dispatches.list_dispatches(db, lot_id=lot_id, limit=MAX_DISPATCHES)
    return LotStory(lot=lot, farm=farm, feedings=feedings, inspection=inspection, products=prods, dispatches=disp)
