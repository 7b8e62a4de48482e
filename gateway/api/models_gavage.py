"""Response models of the gavage reads (GET /api/gavage/feedings, gateway/api/gavage_ws.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gateway.api.models_lots import State


class Feeding(BaseModel):
    lot_id: str = Field(description="The lot fed")
    day: int = Field(description="Gavage day (1 = first)")
    moment: Literal["morning", "evening"] = Field(description="Morning or evening feeding")
    planned_dose_g: float = Field(description="Planned maize per duck (g)")
    actual_dose_g: float = Field(description="Maize actually fed per duck (g)")
    mean_weight_g: float | None = Field(description="Mean duck weight at this feeding (g)")
    live_ducks: int | None = Field(description="Ducks alive at this feeding")
    mortality_pct: float | None = Field(description="Mortality of the lot at this feeding (%)")
    temperature_c: float | None = Field(description="Barn temperature (C)")
    humidity_pct: float | None = Field(description="Barn humidity (%)")
    simulated_at: datetime | None = Field(description="The feeding's own (simulated) time, when the sender gave one")
    received_at: datetime = Field(description="When the registry recorded it")
    lot_state: State = Field(description="The lot's state now")
    nb_ducks: int = Field(description="Ducks the lot started with")
    planned_duration_days: int = Field(description="The lot's planned gavage days")


class FeedingPage(BaseModel):
    total: int = Field(description="Feedings matching the filters")
    limit: int = Field(description="Page size")
    offset: int = Field(description="Page start")
    feedings: list[Feeding] = Field(description="This page, newest first")
