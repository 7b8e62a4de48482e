"""Control panel API under /api/control-panel: health, stats, SQAL simulators, their logs (HTTP and
live WebSocket), the SQAL-only scenarios. Gavage, consumer and orchestration are in control_sims.py;
`routers()` returns both.

Docker-only fields of the original are replaced by their process equivalents: `container_id` ->
`run_id` (one id per start) + `pid`; Docker health -> the supervisor's health.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.control_common import (
    PREFIX,
    TAG_SQAL,
    DeviceId,
    Duration,
    Interval,
    Location,
    Profile,
    Seed,
    orchestrator,
    run_context,
    supervisor,
)
from gateway.scenarios import SQAL_SCENARIOS, ScenarioError
from gateway.supervisor import DeviceParams, StartError, UnknownSimulator
from registry import stats as reg_stats
from registry.devices import list_devices

router = APIRouter(prefix=PREFIX)


class SimulatorStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: DeviceId
    location: Location = "Ligne A - Landes"
    interval: Interval = 30.0
    profile: Profile = "default"
    seed: Seed = None
    duration: Duration = 0


class SimulatorStop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: DeviceId


class SqalScenarioStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario_name: Literal["multi_site", "stress_test", "production_demo"]
    interval: Interval | None = Field(default=None, description="Override every device's interval (s); "
                                                                 "omitted = the scenario's own intervals")
    profile: Profile = "default"
    seed: Seed = None
    duration: Duration = 0


def fresh_seed(seed: int | None, salt: str = "") -> int:
    """The caller's seed, or a new one drawn per start (reported in the status `config`)."""
    if seed is not None:
        return seed
    import secrets

    return (secrets.randbelow(2**31) ^ zlib.crc32(salt.encode())) % 2**31


@router.get("/health", tags=[TAG_SQAL], summary="Control panel health: supervisor, database, broker")
async def health(request: Request) -> dict[str, Any]:
    sup = getattr(request.app.state, "supervisor", None)
    try:
        await request.app.state.pool.fetchval("SELECT 1")
        database = "ok"
    except Exception as exc:  # noqa: BLE001  (a health probe answers, it does not raise)
        database = f"error: {exc}"
    ctx = run_context(request)
    ok = sup is not None and not sup.closed and database == "ok"
    return {"status": "healthy" if ok else "degraded", "supervisor": "ok" if sup is not None and not sup.closed
            else "unavailable", "database": database, "broker_url": ctx.broker_url, "api_url": ctx.api_url,
            "running": len(sup.running()) if sup is not None else 0,
            "catalogue": sup.catalogue.kinds() if sup is not None else []}


@router.get("/stats", tags=[TAG_SQAL], summary="Simulators by state, devices online, samples, lot stats")
async def stats(request: Request) -> dict[str, Any]:
    sup = supervisor(request)
    pool = request.app.state.pool
    sims = sup.list_status()
    by_status: dict[str, int] = {}
    for s in sims:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
    devices = await list_devices(pool, limit=5000)
    return {"simulators": {"total": len(sims), "running": len(sup.running()), "by_status": by_status,
                           "sqal_devices_running": len(sup.running("sqal_device"))},
            "devices": {"total": len(devices), "online": sum(1 for d in devices if d.get("state") == "online"),
                        "samples_stored": sum(int(d.get("samples_stored") or 0) for d in devices)},
            "lots": await reg_stats.global_stats(pool)}


@router.post("/simulators/start", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES,
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
        raise HTTPException(422, str(exc)) from exc
    return {"status": status, **{k: v for k, v in info.items() if k != "status"}, "state": info["status"]}


@router.post("/simulators/stop", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES,
             summary="Stop an emulated SQAL device (SIGTERM, then SIGKILL after a timeout)")
async def stop_simulator(body: SimulatorStop, request: Request) -> dict[str, Any]:
    sup = supervisor(request)
    child = sup.children.get(body.device_id)
    if child is None or child.kind != "sqal_device":
        raise HTTPException(404, f"no SQAL simulator {body.device_id!r}: start it first (see /simulators/list)")
    info = await sup.stop(body.device_id)
    return {**info, "status": "stopped" if info["stopped"] else "not_running", "state": info["status"]}


@router.post("/simulators/stop-all", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES,
             summary="Stop every SQAL device")
async def stop_all_simulators(request: Request) -> dict[str, Any]:
    results = await supervisor(request).stop_all({"sqal_device"})
    stopped = [r["device_id"] for r in results if r["stopped"]]
    return {"status": "stopped", "stopped": stopped, "total_stopped": len(stopped)}


@router.get("/simulators/list", tags=[TAG_SQAL], summary="Every SQAL device started since the gateway started")
async def list_simulators(request: Request) -> dict[str, Any]:
    sup = supervisor(request)
    sims = sup.list_status("sqal_device")
    return {"simulators": sims, "total": len(sims), "running": len(sup.running("sqal_device"))}


def _sqal(request: Request, device_id: str) -> Any:
    child = supervisor(request).children.get(device_id)
    if child is None:
        raise HTTPException(404, f"no simulator {device_id!r}: start it first (see /simulators/list)")
    return child


@router.get("/simulators/status/{device_id}", tags=[TAG_SQAL], summary="One SQAL device's process status")
async def simulator_status(device_id: str, request: Request) -> dict[str, Any]:
    child = _sqal(request, device_id)
    if child.kind != "sqal_device":
        raise HTTPException(404, f"no SQAL simulator {device_id!r} (it is the {child.kind} simulator)")
    return dict(child.info())


@router.get("/simulators/logs/{device_id}", tags=[TAG_SQAL],
            summary="Recent log lines of a simulator (SQAL device id, or 'gavage' / 'consumer')")
async def simulator_logs(device_id: str, request: Request,
                         tail: int = Query(200, ge=1, le=5000, description="Last N lines")) -> dict[str, Any]:
    child = _sqal(request, device_id)
    lines = child.logs.tail(tail)
    return {"device_id": device_id, "kind": child.kind, "lines": [e["line"] for e in lines], "entries": lines,
            "total_lines": child.logs.total, "log_file": str(child.logs.path)}


@router.post("/scenarios/start", tags=[TAG_SQAL], dependencies=WRITE_DEPENDENCIES,
             summary="Start a predefined set of SQAL devices (multi_site, stress_test, production_demo)")
async def start_sqal_scenario(body: SqalScenarioStart, request: Request) -> dict[str, Any]:
    orch = orchestrator(request)
    try:
        return await orch.start_sqal_scenario(body.scenario_name, run_context(request), interval=body.interval,
                                              profile=body.profile, duration=body.duration,
                                              seed=fresh_seed(body.seed, body.scenario_name))
    except ScenarioError as exc:
        raise HTTPException(422, str(exc)) from exc


assert set(SQAL_SCENARIOS) == set(SqalScenarioStart.model_fields["scenario_name"].annotation.__args__)  # type: ignore[union-attr]


@router.websocket("/ws/logs/{device_id}")
async def ws_logs(websocket: WebSocket, device_id: str,
                  tail: int = Query(50, ge=0, le=1000)) -> None:
    """Live log lines of a simulator: first the last `tail` lines, then each new line as printed.
    Messages: {"type": "log", "device_id", "n", "at", "run_id", "line"}. Unknown simulator: an
    {"type": "error"} message, then close code 4404."""
    await websocket.accept()
    sup = getattr(websocket.app.state, "supervisor", None)
    child = sup.children.get(device_id) if sup is not None else None
    if child is None:
        await websocket.send_json({"type": "error", "detail": f"no simulator {device_id!r}: start it first"})
        await websocket.close(code=4404)
        return
    queue = child.logs.subscribe()
    backlog = child.logs.tail(tail)  # taken with no await after subscribing: the queue holds only later lines
    receiver: asyncio.Task[str] | None = None
    try:
        for entry in backlog:
            await websocket.send_json({"type": "log", "device_id": device_id, **entry})
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
            await websocket.send_json({"type": "log", "device_id": device_id, **getter.result()})
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
