"""Control panel API: gavage simulator, consumer simulator, orchestrated scenarios.

Fields, defaults and ranges are control-panel API v1's, which existing clients rely on: gavage nb_lots 1-10 (3),
acceleration 1-10000 (1440), duration 0 = until stopped; consumer feedbacks_per_hour 1-100 (10),
min_rating 3 / max_rating 5 (1-5, min <= max), duration, use_active_lots (true); orchestration
scenario_name, duration, acceleration, nb_lots, nb_sqal_devices, feedbacks_per_hour. Additions are
documented in docs/control-panel.md (seed, interval, profile, rating bounds for scenarios). v1's
`backend_url` is gone: the supervisor always points the simulators at this gateway.
Answers: v1's fields and JSON types, plus ours (gateway/api/models_control.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import Field, model_validator

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.control_common import (
    PREFIX,
    RUNNING_STATES,
    TAG_CONSUMER,
    TAG_GAVAGE,
    TAG_ORCHESTRATE,
    Duration,
    Interval,
    Profile,
    Seed,
    fresh_seed,
    orchestrator,
    process_status,
    run_context,
    start_answer,
    step_answer,
    stop_answer,
    supervisor,
)
from gateway.api.models_common import RequestBody, invalid_input
from gateway.api.models_control import (
    ConsumerStartAnswer,
    GavageStartAnswer,
    OrchestrateAnswer,
    OrchestrateStatus,
    OrchestrateStopAnswer,
    SimulatorStatus,
    StopAnswer,
)
from gateway.scenarios import ScenarioError, ScenarioOptions
from gateway.supervisor import ConsumerParams, GavageParams, StartError
from registry import lots as reg_lots
from registry import stats as reg_stats

router = APIRouter(prefix=PREFIX)

NbLots = Annotated[int, Field(ge=1, le=10, description="Lots the simulator creates and feeds")]
Acceleration = Annotated[float, Field(ge=1, le=10000, description="1 = real time, 1440 = one day per minute")]
Rate = Annotated[int, Field(ge=1, le=100, description="Feedbacks per hour (interval 3600 / rate s)")]
Rating = Annotated[int, Field(ge=1, le=5)]


class GavageStart(RequestBody):
    nb_lots: NbLots = 3
    acceleration: Acceleration = 1440
    duration: Duration = 0
    seed: Seed = None


class ConsumerStart(RequestBody):
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


class OrchestrateStart(RequestBody):
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
    shipments_per_hour: float = Field(default=60, ge=1, le=3600, allow_inf_nan=False,
                                      description="complete_demo: dispatches of inspected lots' products to "
                                                  "customers per hour")
    seed: Seed = None


def _fail(exc: Exception, fields: Iterable[str]) -> HTTPException:
    if isinstance(exc, StartError):
        return HTTPException(503, str(exc))
    return invalid_input(str(exc), fields)


_NEVER_STARTED: dict[int | str, dict[str, Any]] = {404: {"description": "The simulator was never started"}}


async def _stop(request: Request, name: str) -> dict[str, Any]:
    sup = supervisor(request)
    if name not in sup.children:
        raise HTTPException(404, f"the {name} simulator was never started")
    return stop_answer(await sup.stop(name))


async def _active_lots(request: Request, use_active_lots: bool) -> int:
    """v1's active_lots_count: lots in progress, or 0 when the consumer does not use them."""
    return len(await reg_lots.active_lots(request.app.state.pool)) if use_active_lots else 0


# ---- gavage ----

@router.post("/gavage/start", tags=[TAG_GAVAGE], dependencies=WRITE_DEPENDENCIES, response_model=GavageStartAnswer,
             summary="Start the gavage simulator (idempotent: already_running)")
async def gavage_start(body: GavageStart, request: Request) -> dict[str, Any]:
    try:
        p = GavageParams(nb_lots=body.nb_lots, acceleration=body.acceleration, duration=body.duration,
                         seed=fresh_seed(body.seed, "gavage"))
        outcome, info = await orchestrator(request).start_gavage(p, run_context(request))
    except (StartError, ValueError) as exc:
        raise _fail(exc, GavageStart.model_fields) from exc
    out = start_answer(outcome, info)
    cfg = info.get("config") or {}  # already_running: the running simulator's own options
    out.update(nb_lots=cfg.get("nb_lots", body.nb_lots), acceleration=cfg.get("acceleration", body.acceleration))
    if outcome == "started":
        n = out["nb_lots"]
        out["message"] = f"Gavage simulator started with {n} lot{'s' if n != 1 else ''} (pid {info.get('pid')})"
    return out


@router.post("/gavage/stop", tags=[TAG_GAVAGE], dependencies=WRITE_DEPENDENCIES, response_model=StopAnswer,
             responses=_NEVER_STARTED, summary="Stop the gavage simulator")
async def gavage_stop(request: Request) -> dict[str, Any]:
    return await _stop(request, "gavage")


@router.get("/gavage/status", tags=[TAG_GAVAGE], response_model=SimulatorStatus,
            summary="Gavage simulator status (not_found if never started)")
async def gavage_status(request: Request) -> dict[str, Any]:
    return process_status(orchestrator(request).simulator_status("gavage"))


# ---- consumer ----

@router.post("/consumer/start", tags=[TAG_CONSUMER], dependencies=WRITE_DEPENDENCIES,
             response_model=ConsumerStartAnswer,
             summary="Start the consumer feedback simulator (idempotent: already_running)")
async def consumer_start(body: ConsumerStart, request: Request) -> dict[str, Any]:
    try:
        p = ConsumerParams(feedbacks_per_hour=body.feedbacks_per_hour, min_rating=body.min_rating,
                           max_rating=body.max_rating, duration=body.duration, use_active_lots=body.use_active_lots,
                           seed=fresh_seed(body.seed, "consumer"))
        outcome, info = await orchestrator(request).start_consumer(p, run_context(request))
    except (StartError, ValueError) as exc:
        raise _fail(exc, ConsumerStart.model_fields) from exc
    out = start_answer(outcome, info)
    cfg = info.get("config") or {}  # already_running: the running simulator's own options
    rate = int(cfg.get("feedbacks_per_hour", body.feedbacks_per_hour))
    count = await _active_lots(request, bool(cfg.get("use_active_lots", body.use_active_lots)))
    out.update(feedbacks_per_hour=rate, active_lots_count=count, interval_seconds=round(3600 / rate, 1))
    if outcome == "started":
        out["message"] = (f"Consumer simulator started targeting {count} lot{'s' if count != 1 else ''} "
                          f"(pid {info.get('pid')})")
    return out


@router.post("/consumer/stop", tags=[TAG_CONSUMER], dependencies=WRITE_DEPENDENCIES, response_model=StopAnswer,
             responses=_NEVER_STARTED, summary="Stop the consumer simulator")
async def consumer_stop(request: Request) -> dict[str, Any]:
    return await _stop(request, "consumer")


@router.get("/consumer/status", tags=[TAG_CONSUMER], response_model=SimulatorStatus,
            summary="Consumer simulator status (not_found if never started)")
async def consumer_status(request: Request) -> dict[str, Any]:
    return process_status(orchestrator(request).simulator_status("consumer"))


# ---- orchestration ----

@router.post("/orchestrate/start", tags=[TAG_ORCHESTRATE], dependencies=WRITE_DEPENDENCIES,
             response_model=OrchestrateAnswer,
             summary="Start a scenario: complete_demo, quality_focus, gavage_realtime, consumer_analysis")
async def orchestrate_start(body: OrchestrateStart, request: Request) -> dict[str, Any]:
    data = body.model_dump()
    data["seed"] = fresh_seed(body.seed, body.scenario_name)
    options = ScenarioOptions(**data, explicit=set(body.model_fields_set), max_feedbacks_per_hour=100)

    async def active_lots() -> int:
        return await _active_lots(request, body.use_active_lots)

    try:
        out = await orchestrator(request).start(options, run_context(request), active_lots)
    except ScenarioError as exc:
        raise invalid_input(str(exc), OrchestrateStart.model_fields) from exc
    if out["gavage"] is not None:
        out["gavage"] = {**step_answer("gavage", out["gavage"]), "nb_lots": body.nb_lots,
                         "acceleration": body.acceleration}
    if out["consumer"] is not None:
        out["consumer"] = step_answer("consumer", out["consumer"])
    if out["shipping"] is not None:
        out["shipping"] = {**step_answer("shipping", out["shipping"]), "shipments_per_hour": body.shipments_per_hour}
    out["sqal_devices"] = [step_answer(d["device_id"], d) for d in out["sqal_devices"]]
    return out


@router.post("/orchestrate/stop-all", tags=[TAG_ORCHESTRATE], dependencies=WRITE_DEPENDENCIES,
             response_model=OrchestrateStopAnswer, summary="Stop every simulator (gavage, SQAL devices, shipping, consumer)")
async def orchestrate_stop_all(request: Request) -> dict[str, Any]:
    orch = orchestrator(request)
    results = await supervisor(request).stop_all()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(stop_answer(r))
    stopped = [r["name"] for r in results if r["stopped"]]
    return {"status": "stopped", "scenario": orch.scenario,
            "gavage": next(iter(by_kind.get("gavage", [])), None),
            "sqal_devices": [a for a in by_kind.get("sqal_device", []) if a["stopped"]],
            "consumer": next(iter(by_kind.get("consumer", [])), None),
            "shipping": next(iter(by_kind.get("shipping", [])), None),
            "total_stopped": len(stopped), "stopped": stopped, "stopped_at": datetime.now(UTC)}


@router.get("/orchestrate/status", tags=[TAG_ORCHESTRATE], response_model=OrchestrateStatus,
            summary="Every simulator's state, the SQAL devices in short, the lot statistics, overall counts")
async def orchestrate_status(request: Request) -> dict[str, Any]:
    out = orchestrator(request).status()
    s = await reg_stats.global_stats(request.app.state.pool)
    singles = {name: process_status(out[name]) for name in ("gavage", "consumer", "shipping")}
    devices = [process_status(d) for d in out["sqal_devices"]]
    sqal_running = sum(d["status"] in RUNNING_STATES for d in devices)
    running = sqal_running + sum(x["status"] in RUNNING_STATES for x in singles.values())
    return {**out, **singles, "sqal_devices": devices,
            "sqal": {"total_devices": len(devices), "running_devices": sqal_running,
                     "devices": [{"device_id": d["device_id"], "status": d["status"]} for d in devices]},
            "lots": {k: s[k] for k in ("total_lots", "active_lots", "completed_lots", "avg_itm")},
            "overall_status": {"total_simulators": len(singles) + len(devices), "running_simulators": running}}
