"""Control panel API under /api/control-panel: health, stats, SQAL simulators, their logs (HTTP and
live WebSocket), the SQAL-only scenarios. Gavage, consumer and orchestration are in control_sims.py;
`routers()` returns both.

Answers carry v1's fields with v1's JSON types (gateway/api/models_control.py,
checked by tests/gateway/test_api_shapes.py). Docker-only fields keep their names with process
equivalents: `container_name` = the simulator's name, `container_id` = `run_id` (one id per
start), `docker_available` = the supervisor can start simulators.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import Field

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.control_common import (
    PREFIX,
    RUNNING_STATES,
    TAG_SQAL,
    DeviceId,
    Duration,
    Interval,
    Location,
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
    ControlHealth,
    ControlStats,
    LogsAnswer,
    SimulatorStatus,
    SqalScenarioAnswer,
    SqalStopAllAnswer,
    StartAnswer,
    StopAnswer,
)
from gateway.scenarios import SQAL_SCENARIOS, ScenarioError
from gateway.supervisor import DeviceParams, StartError, UnknownSimulator
from registry import stats as reg_stats
from registry.devices import list_devices

router = APIRouter(prefix=PREFIX)


class SimulatorStart(RequestBody):
    device_id: DeviceId
    location: Location = "Ligne A - Landes"
    interval: Interval = 30.0
    profile: Profile = "default"
    seed: Seed = None
    duration: Duration = 0


class SimulatorStop(RequestBody):
    device_id: DeviceId


class SqalScenarioStart(RequestBody):
    scenario_name: Literal["multi_site", "stress_test", "production_demo"]
    interval: Interval | None = Field(default=None, description="Override every device's interval (s); "
                                                                 "omitted = the scenario's own intervals")
    profile: Profile = "default"
    seed: Seed = None
    duration: Duration = 0




@router.get("/health", tags=[TAG_SQAL], response_model=ControlHealth,
            summary="Control panel health: supervisor, database, broker")
async def health(request: Request) -> dict[str, Any]:
    sup = getattr(request.app.state, "supervisor", None)
    try:
        await request.app.state.pool.fetchval("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001  (a health probe answers, it does not raise)
        database = f"error: {exc}"
    ctx = run_context(request)
    sup_ok = sup is not None and not sup.closed
    return {"status": "healthy" if sup_ok and database == "ok" else "degraded", "docker_available": sup_ok,
            "timestamp": datetime.now(UTC), "supervisor": "ok" if sup_ok else "unavailable", "database": database,
            "broker_url": ctx.broker_url, "api_url": ctx.api_url,
            "running": len(sup.running()) if sup is not None else 0,
            "catalogue": sup.catalogue.kinds() if sup is not None else []}


@router.get("/stats", tags=[TAG_SQAL], response_model=ControlStats,
            summary="SQAL simulators by state (v1's counts), all simulators, devices, lot stats")
async def stats(request: Request) -> dict[str, Any]:
    sup = supervisor(request)
    pool = request.app.state.pool
    sims = sup.list_status()
    by_status: dict[str, int] = {}
    for s in sims:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    sqal = [s["status"] for s in sims if s["kind"] == "sqal_device"]
    devices = await list_devices(pool, limit=5000)
    return {"total_simulators": len(sqal), "running_simulators": sum(s in RUNNING_STATES for s in sqal),
            "stopped_simulators": sum(s in ("stopped", "exited") for s in sqal),
            "error_simulators": sum(s == "failed" for s in sqal),
            "docker_available": not sup.closed, "backend_healthy": True,
            "simulators": {"total": len(sims), "running": len(sup.running()), "by_status": by_status,
                           "sqal_devices_running": len(sup.running("sqal_device"))},
            "devices": {"total": len(devices), "online": sum(1 for d in devices if d.get("state") == "online"),
                        "samples_stored": sum(int(d.get("samples_stored") or 0) for d in devices)},
            "lots": await reg_stats.global_stats(pool)}


@router.post("/simulators/start", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES, response_model=StartAnswer,
             summary="Start an emulated SQAL device (idempotent: already_running)")
async def start_simulator(body: SimulatorStart, request: Request) -> dict[str, Any]:
    orch = orchestrator(request)
    try:
        p = DeviceParams(device_id=body.device_id, location=body.location, interval=body.interval,
                         profile=body.profile, seed=fresh_seed(body.seed, body.device_id), duration=body.duration)
        status, info = await orch.start_device(p, run_context(request))
    except StartError as exc:
        raise HTTPException(503, str(exc)) from exc
    except ValueError as exc:
        raise invalid_input(str(exc), SimulatorStart.model_fields) from exc
    return start_answer(status, info)


@router.post("/simulators/stop", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES, response_model=StopAnswer,
             responses={404: {"description": "No SQAL simulator of that id was started"}},
             summary="Stop an emulated SQAL device (SIGTERM, then SIGKILL after a timeout)")
async def stop_simulator(body: SimulatorStop, request: Request) -> dict[str, Any]:
    sup = supervisor(request)
    child = sup.children.get(body.device_id)
    if child is None or child.kind != "sqal_device":
        raise HTTPException(404, f"no SQAL simulator {body.device_id!r}: start it first (see /simulators/list)")
    return stop_answer(await sup.stop(body.device_id))


@router.post("/simulators/stop-all", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES,
             response_model=SqalStopAllAnswer, summary="Stop every SQAL device")
async def stop_all_simulators(request: Request) -> dict[str, Any]:
    results = [r for r in await supervisor(request).stop_all({"sqal_device"}) if r["stopped"]]
    stopped = [r["device_id"] for r in results]
    return {"status": "stopped", "stopped_count": len(stopped), "results": [stop_answer(r) for r in results],
            "stopped": stopped, "total_stopped": len(stopped)}


@router.get("/simulators/list", tags=[TAG_SQAL], response_model=list[SimulatorStatus],
            summary="Every SQAL device started since the gateway started (a list, as in v1)")
async def list_simulators(request: Request) -> list[dict[str, Any]]:
    return [process_status(s) for s in supervisor(request).list_status("sqal_device")]


def _child(request: Request, device_id: str) -> Any:
    child = supervisor(request).children.get(device_id)
    if child is None:
        raise HTTPException(404, f"no simulator {device_id[:100]!r}: start it first (see /simulators/list)")
    return child


@router.get("/simulators/status/{device_id}", tags=[TAG_SQAL], response_model=SimulatorStatus,
            responses={404: {"description": "No SQAL simulator of that id was started"}},
            summary="One SQAL device's process status")
async def simulator_status(device_id: str, request: Request) -> dict[str, Any]:
    child = _child(request, device_id)
    if child.kind != "sqal_device":
        raise HTTPException(404, f"no SQAL simulator {device_id!r} (it is the {child.kind} simulator)")
    return process_status(child.info())


@router.get("/simulators/logs/{device_id}", tags=[TAG_SQAL], response_model=LogsAnswer,
            responses={404: {"description": "No simulator of that name was started"}},
            summary="Recent log lines of a simulator (SQAL device id, or 'gavage' / 'consumer')")
async def simulator_logs(device_id: str, request: Request,
                         tail: int = Query(100, ge=1, le=5000, description="Last N lines (v1's "
                                                                            "default, 100)")) -> dict[str, Any]:
    child = _child(request, device_id)
    entries = child.logs.tail(tail)
    lines = [e["line"] for e in entries]
    return {"device_id": device_id, "logs": "\n".join(lines), "kind": child.kind, "lines": lines,
            "entries": entries, "total_lines": child.logs.total, "log_file": str(child.logs.path)}


@router.post("/scenarios/start", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES, response_model=SqalScenarioAnswer,
             summary="Start a predefined set of SQAL devices (multi_site, stress_test, production_demo)")
async def start_sqal_scenario(body: SqalScenarioStart, request: Request) -> dict[str, Any]:
    orch = orchestrator(request)
    try:
        out = await orch.start_sqal_scenario(body.scenario_name, run_context(request), interval=body.interval,
                                             profile=body.profile, duration=body.duration,
                                             seed=fresh_seed(body.seed, body.scenario_name))
    except ScenarioError as exc:
        raise invalid_input(str(exc), SqalScenarioStart.model_fields) from exc
    devices = [step_answer(d["device_id"], d) for d in out["devices"]]
    return {**out, "devices": devices, "results": devices, "started_count": out["running_count"]}


assert set(SQAL_SCENARIOS) == set(SqalScenarioStart.model_fields["scenario_name"].annotation.__args__)  # type: ignore[union-attr]


def _log_message(device_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A log line as sent on the WebSocket: v1's {type, device_id, message} and ours."""
    return {"type": "log", "device_id": device_id, "message": entry["line"], **entry}


@router.websocket("/ws/logs/{device_id}")
async def ws_logs(websocket: WebSocket, device_id: str,
                  tail: int = Query(50, ge=0, le=1000)) -> None:
    """Live log lines of a simulator: first the last `tail` lines, then each new line as printed.
    Messages: {"type": "log", "device_id", "message", "n", "at", "run_id", "line"} (`message` is the
    v1's field, the same text as `line`). Unknown simulator: an {"type": "error", "detail",
    "message"} message, then close code 4404."""
    await websocket.accept()
    sup = getattr(websocket.app.state, "supervisor", None)
    child = sup.children.get(device_id) if sup is not None else None
    if child is None:
        problem = f"no simulator {device_id[:100]!r}: start it first"
        await websocket.send_json({"type": "error", "detail": problem, "message": problem})
        await websocket.close(code=4404)
        return
    queue = child.logs.subscribe()
    backlog = child.logs.tail(tail)  # taken with no await after subscribing: the queue holds only later lines
    receiver: asyncio.Task[str] | None = None
    try:
        for entry in backlog:
            await websocket.send_json(_log_message(device_id, entry))
        receiver = asyncio.create_task(websocket.receive_text())  # notices the client leaving
        while True:
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                if receiver.exception() is not None:
                    break
                receiver = asyncio.create_task(websocket.receive_text())  # client text is ignored
                continue
            await websocket.send_json(_log_message(device_id, getter.result()))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        child.logs.unsubscribe(queue)
        if receiver is not None:
            receiver.cancel()


def routers() -> list[APIRouter]:
    from gateway.api.control_sims import router as sims_router

    return [router, sims_router]


_ = UnknownSimulator  # re-exported for callers mapping supervisor errors
