"""Registry HTTP API under /api/lots. Thin: validate with pydantic, call registry/, shape the answer.

Errors: unknown lot -> 404 naming it; illegal lifecycle step -> 409 with the registry's message;
invalid input -> 422 naming the field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Query, Request, status
from pydantic import Field

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.models_common import RequestBody
from gateway.api.models_lots import (
    Assignment,
    FeedingOut,
    Lot,
    LotFeedbacks,
    LotSamples,
    State,
    Stats,
    Timeline,
)
from gateway.api.query import LotId
from registry import assignments, feedback, gavage, inspection, lots, samples, stats, timeline

router = APIRouter(prefix="/api/lots", tags=["lots"])



def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool  # type: ignore[no-any-return]


class LotCreate(RequestBody):
    farmer_id: str = Field(min_length=1, max_length=64, examples=["G042"])
    farmer_name: str = Field(min_length=1, max_length=200, examples=["Jean Dupont"])
    site_code: str = Field(pattern=r"^[A-Z]{2}$", description="LL, LS, MT, BS, PX...", examples=["LL"])
    genetics: Literal["Mulard", "Barbarie", "Pekin"] = "Mulard"
    nb_ducks: int = Field(ge=1, le=100000, examples=[50])
    planned_duration_days: int = Field(ge=1, le=60, examples=[12])
    quality_profile: str | None = Field(default=None, max_length=32, examples=["premium"])


class FeedingIn(RequestBody):
    day: int = Field(ge=1, le=60)
    moment: Literal["morning", "evening"]
    planned_dose_g: float = Field(ge=0, le=2000, description="grams of maize per duck")
    actual_dose_g: float = Field(ge=0, le=2000, description="grams of maize per duck")
    mean_weight_g: float | None = Field(default=None, gt=0, le=20000)
    live_ducks: int | None = Field(default=None, ge=0)
    mortality_pct: float | None = Field(default=None, ge=0, le=100)
    temperature_c: float | None = Field(default=None, ge=-30, le=60)
    humidity_pct: float | None = Field(default=None, ge=0, le=100)
    simulated_at: datetime | None = Field(default=None, description="simulated time of the feeding")
    ready_for_slaughter: bool = Field(default=False, description="last evening: also move the lot to ready")


class AssignmentIn(RequestBody):
    device_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$", examples=["ESP32_DEMO_LL_01"])
    line: str | None = Field(default=None, max_length=100, examples=["Ligne A - Landes"])
    valid_from: datetime | None = Field(default=None, description="default: now")
    valid_to: datetime | None = Field(default=None, description="default: open until the next assignment")


class ReasonIn(RequestBody):
    reason: str = Field(default="", max_length=500)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Lot, dependencies=WRITE_DEPENDENCIES,
             summary="Create a lot (state created, new LOT_YYYYMMDD_XXXX id)")
async def create_lot(body: LotCreate, request: Request) -> dict[str, Any]:
    return await lots.create_lot(_pool(request), **body.model_dump())


@router.get("", response_model=list[Lot], summary="List lots, newest first, optionally by state")
async def list_lots(request: Request, state: State | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0)] = 0) -> list[dict[str, Any]]:
    return await lots.list_lots(_pool(request), state=state, limit=limit, offset=offset)


@router.get("/active", response_model=list[Lot], summary="Lots in progress (created, gavage, ready, inspecting)")
async def active(request: Request) -> list[dict[str, Any]]:
    return await lots.active_lots(_pool(request))


@router.get("/stats", response_model=Stats, summary="Global registry statistics")
async def global_stats(request: Request) -> dict[str, Any]:
    return await stats.global_stats(_pool(request))


@router.get("/{lot_id}", response_model=Lot, summary="One lot", responses={404: {"description": "Unknown lot"}})
async def get_lot(lot_id: LotId, request: Request) -> dict[str, Any]:
    return await lots.get_lot(_pool(request), lot_id)


@router.get("/{lot_id}/timeline", response_model=Timeline, summary="Every event of the lot, oldest first (paginated)",
            responses={404: {"description": "Unknown lot"}})
async def lot_timeline(lot_id: LotId, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                       offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    return await timeline.timeline(_pool(request), lot_id, limit=limit, offset=offset)


@router.get("/{lot_id}/samples", response_model=LotSamples, responses={404: {"description": "Unknown lot"}},
            summary="The lot's SQAL samples, in measurement order (paginated, optionally one grade)")
async def lot_samples(lot_id: LotId, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      offset: Annotated[int, Query(ge=0)] = 0,
                      grade: Literal["A+", "A", "B", "C", "REJECT"] | None = None) -> dict[str, Any]:
    total, rows = await samples.lot_samples(_pool(request), lot_id, limit=limit, offset=offset, grade=grade)
    return {"lot_id": lot_id, "total": total, "limit": limit, "offset": offset, "samples": rows}


@router.get("/{lot_id}/feedback", response_model=LotFeedbacks, responses={404: {"description": "Unknown lot"}},
            summary="Consumer feedback on the lot and its products, oldest first")
async def lot_feedback(lot_id: LotId, request: Request) -> dict[str, Any]:
    rows = await feedback.lot_feedback(_pool(request), lot_id)
    mean = round(sum(r["rating"] for r in rows) / len(rows), 2) if rows else None
    return {"lot_id": lot_id, "total": len(rows), "mean_rating": mean, "feedback": rows}


_TRANSITION_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown lot"}, 409: {"description": "Step not allowed from the lot's state"}}


@router.post("/{lot_id}/feedings", response_model=FeedingOut, dependencies=WRITE_DEPENDENCIES,
             responses=_TRANSITION_RESPONSES, summary="Record a gavage feeding (idempotent per day and moment)")
async def record_feeding(lot_id: LotId, body: FeedingIn, request: Request) -> dict[str, Any]:
    res = await gavage.record_feeding(_pool(request), lot_id, **body.model_dump())
    return {"new": res.new, "lot": res.lot}


@router.post("/{lot_id}/ready", response_model=Lot, dependencies=WRITE_DEPENDENCIES, responses=_TRANSITION_RESPONSES,
             summary="Gavage finished: gavage -> ready")
async def mark_ready(lot_id: LotId, request: Request) -> dict[str, Any]:
    return await lots.mark_ready(_pool(request), lot_id)


@router.post("/{lot_id}/assignments", response_model=Assignment, status_code=status.HTTP_201_CREATED,
             dependencies=WRITE_DEPENDENCIES, responses=_TRANSITION_RESPONSES,
             summary="Assign the lot to a SQAL device/line for a time interval: ready -> inspecting")
async def assign(lot_id: LotId, body: AssignmentIn, request: Request) -> dict[str, Any]:
    return await assignments.assign_device(_pool(request), lot_id, body.device_id, line=body.line,
                                           valid_from=body.valid_from, valid_to=body.valid_to)


@router.post("/{lot_id}/inspection/close", response_model=Lot, dependencies=WRITE_DEPENDENCIES,
             responses=_TRANSITION_RESPONSES,
             summary="Close the SQAL inspection (grades, liver weight, ITM): inspecting -> inspected")
async def close_inspection(lot_id: LotId, request: Request) -> dict[str, Any]:
    return await inspection.close_inspection(_pool(request), lot_id)


@router.post("/{lot_id}/suspend", response_model=Lot, dependencies=WRITE_DEPENDENCIES,
             responses=_TRANSITION_RESPONSES, summary="Suspend an active lot")
async def suspend(lot_id: LotId, request: Request, body: ReasonIn | None = None) -> dict[str, Any]:
    return await lots.suspend(_pool(request), lot_id, body.reason if body else "")


@router.post("/{lot_id}/resume", response_model=Lot, dependencies=WRITE_DEPENDENCIES,
             responses=_TRANSITION_RESPONSES, summary="Resume a suspended lot (back to its previous state)")
async def resume(lot_id: LotId, request: Request) -> dict[str, Any]:
    return await lots.resume(_pool(request), lot_id)


@router.post("/{lot_id}/close", response_model=Lot, dependencies=WRITE_DEPENDENCIES,
             responses=_TRANSITION_RESPONSES, summary="Close the lot (terminal)")
async def close(lot_id: LotId, request: Request, body: ReasonIn | None = None) -> dict[str, Any]:
    return await lots.close(_pool(request), lot_id, body.reason if body else "")
