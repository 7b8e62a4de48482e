"""Control panel API: gavage simulator, consumer simulator, orchestrated scenarios.

Fields, defaults and ranges are the original's (seed document): gavage nb_lots 1-10 (3),
acceleration 1-10000 (1440), duration 0 = until stopped; consumer feedbacks_per_hour 1-100 (10),
min_rating 3 / max_rating 5 (1-5, min <= max), duration, use_active_lots (true); orchestration
scenario_name, duration, acceleration, nb_lots, nb_sqal_devices, feedbacks_per_hour. Additions are
documented in docs/control-panel.md (seed, interval, profile, rating bounds for scenarios). The
original's `backend_url` is gone: the supervisor always points the simulators at this gateway.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.control_common import (
    PREFIX,
    TAG_CONSUMER,
    TAG_GAVAGE,
    TAG_ORCHESTRATE,
    Duration,
    Interval,
    Profile,
    Seed,
    orchestrator,
    run_context,
    supervisor,
)
from gateway.api.control_panel import fresh_seed
from gateway.scenarios import ScenarioError, ScenarioOptions
from gateway.supervisor import ConsumerParams, GavageParams, StartError
from registry import lots as reg_lots
from registry import stats as reg_stats

router = APIRouter(prefix=PREFIX)

NbLots = Annotated[int, Field(ge=1, le=10, description="Lots the simulator creates and feeds")]
Acceleration = Annotated[float, Field(ge=1, le=10000, description="1 = real time, 1440 = one day per minute")]
Rate = Annotated[int, Field(ge=1, le=100, description="Feedbacks per hour (interval 3600 / rate s)")]
Rating = Annotated[int, Field(ge=1, le=5)]


class GavageStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nb_lots: NbLots = 3
    acceleration: Acceleration = 1440
    duration: Duration = 0
    seed: Seed = None


class ConsumerStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    feedbacks_per_hour: Rate = 10
    min_rating: Rating = 3
    max_rating: Rating = 5
    duration: Duration = 0
    use_active_lots: bool = Field(default=True, description="Only products of lots that exist now")
    seed: Seed = None

    @model_validator(mode="after")
    def _bounds(self) -> ConsumerStart:
        if self.min_rating > self.max_rating:
            raise ValueError(f"min_rating ({self.min_rating}) must not exceed max_rating ({self.max_rating})")
        return self


class OrchestrateStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario_name: Literal["complete_demo", "quality_focus", "gavage_realtime", "consumer_analysis"] = "complete_demo"
    duration: Duration = 0
    acceleration: Acceleration = 1440
    nb_lots: NbLots = 3
    nb_sqal_devices: int | None = Field(default=None, ge=1, le=6, description="First N devices of the scenario "
                                        "(complete_demo 1-4, quality_focus 1-6); omitted = all")
    feedbacks_per_hour: Rate = 10
    min_rating: Rating = 1
    max_rating: Rating = 5
    use_active_lots: bool = True
    interval: Interval | None = Field(default=None, description="Override the SQAL devices' sample interval (s)")
    profile: Profile = "default"
    seed: Seed = None


def _fail(exc: Exception) -> HTTPException:
    if isinstance(exc, StartError):
        return HTTPException(503, str(exc))
    return HTTPException(422, str(exc))


def _answer(status: str, info: dict[str, Any]) -> dict[str, Any]:
    return {**info, "status": status, "state": info["status"]}


async def _stop(request: Request, name: str) -> dict[str, Any]:
    sup = supervisor(request)
    if name not in sup.children:
        raise HTTPException(404, f"the {name} simulator was never started")
    info = await sup.stop(name)
    return {**info, "status": "stopped" if info["stopped"] else "not_running", "state": info["status"]}


# ---- gavage ----

@router.post("/gavage/start", tags=[TAG_GAVAGE], dependencies=WRITE_DEPENDENCIES,
             summary="Start the gavage simulator (idempotent: already_running)")
async def gavage_start(body: GavageStart, request: Request) -> dict[str, Any]:
    try:
        p = GavageParams(nb_lots=body.nb_lots, acceleration=body.acceleration, duration=body.duration,
                         seed=fresh_seed(body.seed, "gavage"))
        return _answer(*await orchestrator(request).start_gavage(p, run_context(request)))
    except (StartError, ValueError) as exc:
        raise _fail(exc) from exc


@router.post("/gavage/stop", tags=[TAG_GAVAGE], dependencies=WRITE_DEPENDENCIES, summary="Stop the gavage simulator")
async def gavage_stop(request: Request) -> dict[str, Any]:
    return await _stop(request, "gavage")


@router.get("/gavage/status", tags=[TAG_GAVAGE], summary="Gavage simulator status (not_found if never started)")
async def gavage_status(request: Request) -> dict[str, Any]:
    return orchestrator(request).simulator_status("gavage")


# ---- consumer ----

@router.post("/consumer/start", tags=[TAG_CONSUMER], dependencies=WRITE_DEPENDENCIES,
             summary="Start the consumer feedback simulator (idempotent: already_running)")
async def consumer_start(body: ConsumerStart, request: Request) -> dict[str, Any]:
    try:
        p = ConsumerParams(feedbacks_per_hour=body.feedbacks_per_hour, min_rating=body.min_rating,
                           max_rating=body.max_rating, duration=body.duration, use_active_lots=body.use_active_lots,
                           seed=fresh_seed(body.seed, "consumer"))
        out = _answer(*await orchestrator(request).start_consumer(p, run_context(request)))
    except (StartError, ValueError) as exc:
        raise _fail(exc) from exc
    out["interval_seconds"] = round(3600 / body.feedbacks_per_hour, 1)
    return out


@router.post("/consumer/stop", tags=[TAG_CONSUMER], dependencies=WRITE_DEPENDENCIES,
             summary="Stop the consumer simulator")
async def consumer_stop(request: Request) -> dict[str, Any]:
    return await _stop(request, "consumer")


@router.get("/consumer/status", tags=[TAG_CONSUMER], summary="Consumer simulator status (not_found if never started)")
async def consumer_status(request: Request) -> dict[str, Any]:
    return orchestrator(request).simulator_status("consumer")


# ---- orchestration ----

@router.post("/orchestrate/start", tags=[TAG_ORCHESTRATE], dependencies=WRITE_DEPENDENCIES,
             summary="Start a scenario: complete_demo, quality_focus, gavage_realtime, consumer_analysis")
async def orchestrate_start(body: OrchestrateStart, request: Request) -> dict[str, Any]:
    data = body.model_dump()
    data["seed"] = fresh_seed(body.seed, body.scenario_name)
    options = ScenarioOptions(**data, explicit=set(body.model_fields_set), max_feedbacks_per_hour=100)
    pool = request.app.state.pool

    async def active_lots() -> int:
        return len(await reg_lots.active_lots(pool))

    try:
        return await orchestrator(request).start(options, run_context(request), active_lots)
    except ScenarioError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.post("/orchestrate/stop-all", tags=[TAG_ORCHESTRATE], dependencies=WRITE_DEPENDENCIES,
             summary="Stop every simulator (gavage, SQAL devices, consumer)")
async def orchestrate_stop_all(request: Request) -> dict[str, Any]:
    return await orchestrator(request).stop_all()


@router.get("/orchestrate/status", tags=[TAG_ORCHESTRATE],
            summary="Every simulator's state and the lot statistics")
async def orchestrate_status(request: Request) -> dict[str, Any]:
    out = orchestrator(request).status()
    s = await reg_stats.global_stats(request.app.state.pool)
    out["lots"] = {k: s[k] for k in ("total_lots", "active_lots", "completed_lots", "avg_itm")}
    return out
