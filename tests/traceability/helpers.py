"""A lot that went the whole way, through the real registry operations (no SQL shortcuts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from registry import assignments, dispatches, farms, feedback, gavage, inspection, lots, samples
from registry.gs1 import make_gtin

PREFIX = "376000000"  # SQAL_GTIN_COMPANY_PREFIX's default
DEVICES = ("ESP32_TEST_LL_01", "ESP32_TEST_LL_02")
# per device: (grade, score, weight_g) of its samples
SAMPLES: dict[str, list[tuple[str, float, float | None]]] = {DEVICES[0]: [("A+", 0.9, 620.0), ("A", 0.8, 600.0), ("A", 0.78, 580.0), ("B", 0.65, 540.0)],
           DEVICES[1]: [("A", 0.79, 610.0), ("C", 0.5, 500.0), ("REJECT", 0.3, None)]}
FARM: dict[str, Any] = {"name": "EARL Dupont", "address": "Lieu-dit Bordenave, 40500 Saint-Sever, France", "gln": None}
RECIPIENT: dict[str, Any] = {"recipient_name": "Epicerie fine Lafitte", "recipient_address": "12 rue des Arceaux, 33000 Bordeaux, France"}
SENDER: dict[str, Any] = {"sender_name": "SQAL Foie Gras", "sender_address": "Zone d'activites du Conte, 40000 Mont-de-Marsan, France"}


@dataclass
class FullLot:
    lot_id: str
    product_ids: list[int]
    dispatch_ids: list[int] = field(default_factory=list)
    gtins: list[str] = field(default_factory=list)


async def gavage_lot(pool: asyncpg.Pool, *, days: int = 11, farmer_id: str = "G042", ready: bool = True,
                     start: datetime | None = None) -> str:
    """A lot fed two times a day for `days` days (simulated times in the past), ready at the end."""
    lot_id = str((await lots.create_lot(pool, farmer_id=farmer_id, farmer_name="Jean Dupont", site_code="LL",
                                        genetics="Mulard", nb_ducks=50, planned_duration_days=days))["id"])
    t0 = start or datetime.now(UTC) - timedelta(days=days + 2)
    for day in range(1, days + 1):
        for i, moment in enumerate(("morning", "evening")):
            n = 2 * (day - 1) + i
            await gavage.record_feeding(
                pool, lot_id, day=day, moment=moment, planned_dose_g=200 + 20 * day, actual_dose_g=201 + 20 * day,
                mean_weight_g=4500 + 90 * n, live_ducks=50 - day // 5, mortality_pct=2 * (day // 5),
                temperature_c=20 + (n % 3), humidity_pct=60 + (n % 5), simulated_at=t0 + timedelta(hours=12 * n),
                ready_for_slaughter=ready and day == days and moment == "evening")
    return lot_id


async def inspected_lot(pool: asyncpg.Pool, **kw: Any) -> str:
    lot_id = await gavage_lot(pool, **kw)
    await assignments.assign_device(pool, lot_id, DEVICES[0], line="Ligne A - Landes")
    t = datetime.now(UTC) - timedelta(minutes=5)
    rows = []
    for dev, items in SAMPLES.items():
        for seq, (grade, score, weight) in enumerate(items, 1):
            rows.append({"device_id": dev, "boot": 1, "seq": int(lot_id.rsplit("_", 1)[1]) * 100 + seq,
                         "lot_id": lot_id, "measured_at": t + timedelta(seconds=seq), "grade": grade, "score": score,
                         "weight_g": weight})
    await samples.store_samples(pool, rows)
    await inspection.close_inspection(pool, lot_id)
    return lot_id


async def full_lot(pool: asyncpg.Pool, *, products: int = 3, farm: bool = True, **kw: Any) -> FullLot:
    """Inspected, `products` products, a registered farm, two dispatches (one of two lines)."""
    lot_id = await inspected_lot(pool, **kw)
    lot = await lots.get_lot(pool, lot_id)
    if farm:
        await farms.upsert_farm(pool, lot["farmer_id"], **FARM)
    out = FullLot(lot_id, [])
    for ref in range(1, products + 1):
        p = await feedback.create_product(pool, lot_id, make_gtin(PREFIX, ref))
        out.product_ids.append(int(p["id"]))
        out.gtins.append(p["gtin"])
    if products >= 2:
        d1 = await dispatches.create_dispatch(pool, lines=[(out.product_ids[0], 12), (out.product_ids[1], 6)],
                                              **SENDER, **RECIPIENT)
        d2 = await dispatches.create_dispatch(pool, lines=[(out.product_ids[0], 24)], **SENDER,
                                              recipient_name="Restaurant Le Relais Landais",
                                              recipient_address="3 place de la Mairie, 40800 Aire-sur-l'Adour, France",
                                              recipient_gln="3760000000017")
        out.dispatch_ids = [int(d1["id"]), int(d2["id"])]
    return out
