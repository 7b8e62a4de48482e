"""The control panel API on a real PostgreSQL and real child processes.

The catalogue entries are wrapped by a test-only stand-in (registered through the Python API, never
through HTTP): the real entry builds its argv from the request, the stand-in runs a small Python
program that prints that argv and stays up until SIGTERM. So the tests see exactly the command each
option produced, and run no simulator.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from gateway.app import create_app
from gateway.config import Settings
from gateway.supervisor import Catalogue, CommandSpec, RunContext
from gateway.supervisor import catalogue as real
from tests.fixtures.gateway import alive, serve

BASE = "/api/control-panel"
STANDIN = """
import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("standin argv " + json.dumps(sys.argv[1:]), flush=True)
i = 0
while True:
    time.sleep(0.05)
    i += 1
    if i % 4 == 0:
        print("standin alive %d" % i, flush=True)
"""


def standin_catalogue() -> Catalogue:
    cat = Catalogue()
    for kind, builder in (("sqal_device", real.sqal_device), ("gavage", real.gavage), ("consumer", real.consumer),
                          ("shipping", real.shipping)):
        def wrapped(params: Any, ctx: RunContext, builder: Any = builder) -> CommandSpec:
            spec = builder(params, ctx)
            return CommandSpec([sys.executable, "-c", STANDIN, *spec.argv], env=spec.env)
        cat.register(kind, wrapped)
    return cat


def argv_of(info: dict[str, Any]) -> list[str]:
    """The real command line inside the stand-in's argv."""
    argv = info["argv"]
    return argv[argv.index("-c") + 2:]


def opt(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    settings = Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False,
                        mqtt_url="mqtt://127.0.0.1:1883")
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        application.state.supervisor.catalogue = standin_catalogue()
        application.state.supervisor.stop_timeout = 5
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sqal.test") as c:
        yield c


async def wait_for(pred: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(0.05)
    return await pred()


def detail(r: httpx.Response) -> str:
    return json.dumps(r.json()["detail"])


async def test_openapi_paths_and_tags(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    expected = {
        "Control Panel - SQAL Simulators": ["/health", "/stats", "/simulators/start", "/simulators/stop",
                                            "/simulators/stop-all", "/simulators/list",
                                            "/simulators/status/{device_id}", "/simulators/logs/{device_id}",
                                            "/scenarios/start"],
        "Control Panel - Gavage Simulator": ["/gavage/start", "/gavage/stop", "/gavage/status"],
        "Control Panel - Consumer Simulator": ["/consumer/start", "/consumer/stop", "/consumer/status"],
        "Control Panel - Orchestrated Scenarios": ["/orchestrate/start", "/orchestrate/stop-all",
                                                   "/orchestrate/status"],
    }
    for tag, paths in expected.items():
        for p in paths:
            ops = spec["paths"][BASE + p]
            assert all(tag in op["tags"] for op in ops.values()), (tag, p)
    assert {t["name"] for t in spec["tags"]} >= set(expected)


async def test_health_and_stats(client: httpx.AsyncClient) -> None:
    h = (await client.get(f"{BASE}/health")).json()
    assert h["status"] == "healthy" and h["database"] == "ok" and h["supervisor"] == "ok"
    assert h["docker_available"] is True and h["timestamp"]  # the original's fields
    assert h["catalogue"] == ["consumer", "gavage", "shipping", "sqal_device"] and h["broker_url"] == "mqtt://127.0.0.1:1883"
    s = (await client.get(f"{BASE}/stats")).json()
    assert s["simulators"]["total"] == 0 and s["lots"]["total_lots"] == 0 and s["lots"]["avg_itm"] is None
    assert (s["total_simulators"], s["running_simulators"], s["stopped_simulators"], s["error_simulators"],
            s["docker_available"], s["backend_healthy"]) == (0, 0, 0, 0, True, True)


async def test_sqal_simulator_lifecycle(client: httpx.AsyncClient, tmp_path: Path) -> None:
    r = await client.post(f"{BASE}/simulators/start", json={"device_id": "ESP32_T_LL_01"})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["status"] == "started" and info["state"] == "running" and alive(info["pid"]) and info["run_id"]
    assert (info["container_name"], info["container_id"]) == ("ESP32_T_LL_01", info["run_id"])
    assert info["message"].startswith("Simulator ESP32_T_LL_01 started")
    # defaults of every option reached the command
    cfg = info["config"]
    assert (cfg["location"], cfg["interval"], cfg["profile"], cfg["duration"]) == ("Ligne A - Landes", 30.0,
                                                                                     "default", 0)
    argv = argv_of(info)
    assert argv[1:3] == ["-m", "emulation.run_device"]
    assert (opt(argv, "--device-id"), opt(argv, "--location"), opt(argv, "--interval"), opt(argv, "--profile"),
            opt(argv, "--duration"), opt(argv, "--seed")) == ("ESP32_T_LL_01", "Ligne A - Landes", "30", "default",
                                                             "0", str(cfg["seed"]))
    assert opt(argv, "--broker") == "mqtt://127.0.0.1:1883"
    assert opt(argv, "--flash-dir") == str(tmp_path / "devices" / "ESP32_T_LL_01")
    # start twice: already_running, same process
    r2 = (await client.post(f"{BASE}/simulators/start", json={"device_id": "ESP32_T_LL_01", "interval": 5})).json()
    assert r2["status"] == "already_running" and r2["pid"] == info["pid"] and r2["run_id"] == info["run_id"]
    assert "already running" in r2["message"]
    # every option takes effect
    r3 = (await client.post(f"{BASE}/simulators/start", json={
        "device_id": "ESP32_T_MT_02", "location": "Mont-de-Marsan", "interval": 0.5, "profile": "premium",
        "seed": 42, "duration": 120})).json()
    a3 = argv_of(r3)
    assert (opt(a3, "--location"), opt(a3, "--interval"), opt(a3, "--profile"), opt(a3, "--seed"),
            opt(a3, "--duration")) == ("Mont-de-Marsan", "0.5", "premium", "42", "120")

    st = (await client.get(f"{BASE}/simulators/status/ESP32_T_LL_01")).json()
    assert st["status"] == "running" and st["pid"] == info["pid"] and st["uptime_seconds"] >= 0
    assert st["exit_code"] is None and st["restarts"] == 0 and st["started_at"]
    assert isinstance(st["uptime_seconds"], int) and st["created_at"] == st["started_at"]
    assert (st["container_name"], st["location"], st["interval"], st["config_profile"]) == \
        ("ESP32_T_LL_01", "Ligne A - Landes", 30, "default")
    lst = (await client.get(f"{BASE}/simulators/list")).json()  # a list, as the original's
    assert isinstance(lst, list) and all(s["status"] == "running" for s in lst)
    assert {s["device_id"] for s in lst} == {"ESP32_T_LL_01", "ESP32_T_MT_02"}
    assert {s["config_profile"] for s in lst} == {"default", "premium"}

    async def logged() -> Any:
        logs = (await client.get(f"{BASE}/simulators/logs/ESP32_T_LL_01", params={"tail": 50})).json()
        return any(x.startswith("standin argv") for x in logs["lines"]) and logs
    logs = await wait_for(logged)
    assert logs and logs["lines"][0].startswith("supervisor: started sqal_device ESP32_T_LL_01")
    assert logs["logs"] == "\n".join(logs["lines"])  # the original's `logs`: one text

    r = await client.post(f"{BASE}/simulators/stop", json={"device_id": "ESP32_T_LL_01"})
    assert r.status_code == 200 and r.json()["status"] == "stopped" and r.json()["exit_code"] == 0
    assert r.json()["container_name"] == "ESP32_T_LL_01" and r.json()["message"] == "Simulator ESP32_T_LL_01 stopped"
    assert not alive(info["pid"])
    assert (await client.get(f"{BASE}/simulators/status/ESP32_T_LL_01")).json()["status"] == "stopped"
    # stopping again: known but not running
    assert (await client.post(f"{BASE}/simulators/stop", json={"device_id": "ESP32_T_LL_01"})).json()["status"] == \
        "not_running"
    r = await client.post(f"{BASE}/simulators/stop-all")
    assert r.json()["stopped"] == ["ESP32_T_MT_02"] and r.json()["total_stopped"] == 1
    assert r.json()["stopped_count"] == 1 and [x["device_id"] for x in r.json()["results"]] == ["ESP32_T_MT_02"]
    assert r.json()["results"][0]["status"] == "stopped"
    assert not alive(r3["pid"])


async def test_sqal_errors(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{BASE}/simulators/stop", json={"device_id": "ESP32_NEVER_01"})
    assert r.status_code == 404 and "ESP32_NEVER_01" in detail(r)
    for path in ("status", "logs"):
        r = await client.get(f"{BASE}/simulators/{path}/ESP32_NEVER_01")
        assert r.status_code == 404 and "ESP32_NEVER_01" in detail(r)
    cases = [({"device_id": "x"}, "device_id"), ({"device_id": "gavage"}, "reserved"),
             ({"device_id": "ESP32_A_01", "interval": 0.1}, "interval"),
             ({"device_id": "ESP32_A_01", "interval": 4000}, "less than or equal to 3600"),
             ({"device_id": "ESP32_A_01", "profile": "gold"}, "profile 'gold' unknown"),
             ({"device_id": "ESP32_A_01", "location": "x" * 65}, "location"),
             ({"device_id": "ESP32_A_01", "duration": -1}, "duration"),
             ({"device_id": "ESP32_A_01", "container_id": "abc"}, "container_id"),
             ({}, "device_id")]
    for body, needle in cases:
        r = await client.post(f"{BASE}/simulators/start", json=body)
        assert r.status_code == 422 and needle in detail(r), (body, r.text)
    r = await client.post(f"{BASE}/scenarios/start", json={"scenario_name": "chaos"})
    assert r.status_code == 422 and "scenario_name" in detail(r)
    assert (await client.get(f"{BASE}/simulators/list")).json() == []


async def test_sqal_scenarios(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{BASE}/scenarios/start", json={"scenario_name": "multi_site"})
    out = r.json()
    assert r.status_code == 200 and out["status"] == "running" and out["running_count"] == 4 and out["errors"] == []
    assert out["started_count"] == 4 and out["results"] == out["devices"]  # the original's fields
    assert {d["container_name"] for d in out["results"]} == {"ESP32_LL_01", "ESP32_LL_02", "ESP32_LS_01", "ESP32_MT_01"}
    by_id = {d["device_id"]: d for d in out["devices"]}
    assert {k: v["interval"] for k, v in by_id.items()} == {"ESP32_LL_01": 30, "ESP32_LL_02": 45, "ESP32_LS_01": 35,
                                                             "ESP32_MT_01": 40}
    sims = {s["device_id"]: s for s in (await client.get(f"{BASE}/simulators/list")).json()}
    assert opt(argv_of(sims["ESP32_LL_02"]), "--interval") == "45"
    r = await client.post(f"{BASE}/scenarios/start", json={"scenario_name": "production_demo", "interval": 2,
                                                           "profile": "low"})
    devs = r.json()["devices"]
    assert [d["device_id"] for d in devs] == ["ESP32_DEMO_01", "ESP32_DEMO_02"] and all(d["interval"] == 2 for d in devs)
    sims = {s["device_id"]: s for s in (await client.get(f"{BASE}/simulators/list")).json()}
    assert opt(argv_of(sims["ESP32_DEMO_02"]), "--profile") == "low"
    assert opt(argv_of(sims["ESP32_DEMO_02"]), "--interval") == "2"
    # the same scenario again: everything already running
    again = (await client.post(f"{BASE}/scenarios/start", json={"scenario_name": "multi_site"})).json()
    assert {d["status"] for d in again["devices"]} == {"already_running"}
    r = await client.post(f"{BASE}/simulators/stop-all")
    assert r.json()["total_stopped"] == 6
    assert not any(alive(s["last_pid"]) for s in sims.values())


async def test_gavage_endpoints(client: httpx.AsyncClient) -> None:
    nf = (await client.get(f"{BASE}/gavage/status")).json()
    assert nf["status"] == "not_found" and nf["container_name"] == "gavage" and nf["started_at"] is None
    r = await client.post(f"{BASE}/gavage/stop")
    assert r.status_code == 404 and "gavage" in detail(r)
    for body, needle in (({"nb_lots": 0}, "nb_lots"), ({"nb_lots": 11}, "less than or equal to 10"),
                         ({"acceleration": 0}, "acceleration"), ({"acceleration": 10001}, "10000"),
                         ({"duration": -5}, "duration"), ({"backend_url": "ws://evil/ws"}, "backend_url")):
        r = await client.post(f"{BASE}/gavage/start", json=body)
        assert r.status_code == 422 and needle in detail(r), (body, r.text)
    r = await client.post(f"{BASE}/gavage/start", json={})
    info = r.json()
    assert info["status"] == "started" and alive(info["pid"])
    assert (info["container_name"], info["container_id"], info["nb_lots"], info["acceleration"]) == \
        ("gavage", info["run_id"], 3, 1440)
    assert info["message"].startswith("Gavage simulator started with 3 lots")
    assert (info["config"]["nb_lots"], info["config"]["acceleration"], info["config"]["duration"]) == (3, 1440, 0)
    argv = argv_of(info)
    assert argv[1:3] == ["-m", "emulation.gavage"]
    assert (opt(argv, "--nb-lots"), opt(argv, "--acceleration"), opt(argv, "--duration")) == ("3", "1440", "0")
    assert opt(argv, "--api").startswith("http://")
    again = (await client.post(f"{BASE}/gavage/start", json={"nb_lots": 5})).json()
    assert again["status"] == "already_running" and again["pid"] == info["pid"]
    assert again["nb_lots"] == 3  # the running simulator's, not the refused request's
    st = (await client.get(f"{BASE}/gavage/status")).json()
    assert st["status"] == "running" and st["uptime_seconds"] >= 0 and st["run_id"] == info["run_id"]
    assert st["container_name"] == "gavage" and st["created_at"] and st["location"] is None
    logs = (await client.get(f"{BASE}/simulators/logs/gavage")).json()
    assert logs["kind"] == "gavage"
    r = (await client.post(f"{BASE}/gavage/stop")).json()
    assert r["status"] == "stopped" and not alive(info["pid"])
    assert (r["container_name"], r["message"]) == ("gavage", "Gavage simulator stopped")
    assert (await client.get(f"{BASE}/gavage/status")).json()["status"] == "stopped"
    r = (await client.post(f"{BASE}/gavage/start", json={"nb_lots": 7, "acceleration": 86400 / 10, "duration": 90,
                                                          "seed": 3})).json()
    argv = argv_of(r)
    assert (opt(argv, "--nb-lots"), opt(argv, "--acceleration"), opt(argv, "--duration"), opt(argv, "--seed")) == \
        ("7", "8640", "90", "3")


async def test_consumer_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{BASE}/consumer/status")).json()["status"] == "not_found"
    assert (await client.post(f"{BASE}/consumer/stop")).status_code == 404
    for body, needle in (({"feedbacks_per_hour": 0}, "feedbacks_per_hour"),
                         ({"feedbacks_per_hour": 101}, "less than or equal to 100"),
                         ({"min_rating": 0}, "min_rating"), ({"max_rating": 6}, "max_rating"),
                         ({"min_rating": 5, "max_rating": 4}, "min_rating (5) must not exceed max_rating (4)")):
        r = await client.post(f"{BASE}/consumer/start", json=body)
        assert r.status_code == 422 and needle in detail(r), (body, r.text)
    info = (await client.post(f"{BASE}/consumer/start", json={})).json()
    assert info["status"] == "started" and info["interval_seconds"] == 360.0
    assert (info["container_name"], info["container_id"], info["feedbacks_per_hour"], info["active_lots_count"]) == \
        ("consumer", info["run_id"], 10, 0)
    assert info["message"].startswith("Consumer simulator started targeting 0 lots")
    argv = argv_of(info)
    assert argv[1:3] == ["-m", "emulation.consumer"]
    assert (opt(argv, "--feedbacks-per-hour"), opt(argv, "--min-rating"), opt(argv, "--max-rating"),
            opt(argv, "--duration")) == ("10", "3", "5", "0") and "--use-active-lots" in argv
    assert (await client.post(f"{BASE}/consumer/start", json={})).json()["status"] == "already_running"
    assert (await client.post(f"{BASE}/consumer/stop")).json()["status"] == "stopped" and not alive(info["pid"])
    info = (await client.post(f"{BASE}/consumer/start", json={
        "feedbacks_per_hour": 60, "min_rating": 2, "max_rating": 4, "duration": 30, "use_active_lots": False})).json()
    argv = argv_of(info)
    assert (opt(argv, "--feedbacks-per-hour"), opt(argv, "--min-rating"), opt(argv, "--max-rating"),
            opt(argv, "--duration")) == ("60", "2", "4", "30") and "--no-use-active-lots" in argv
    await client.post(f"{BASE}/consumer/stop")


async def test_orchestration(client: httpx.AsyncClient, app: Any) -> None:
    r = await client.post(f"{BASE}/orchestrate/start", json={"scenario_name": "consumer_analysis", "nb_lots": 2})
    assert r.status_code == 422 and "nb_lots" in detail(r) and "consumer_analysis" in detail(r)
    r = await client.post(f"{BASE}/orchestrate/start", json={"scenario_name": "complete_demo", "nb_sqal_devices": 5})
    assert r.status_code == 422 and "between 1 and 4" in detail(r)
    r = await client.post(f"{BASE}/orchestrate/start", json={"scenario_name": "quality_focus",
                                                             "feedbacks_per_hour": 60})
    assert r.status_code == 422 and "at most 50" in detail(r)
    r = await client.post(f"{BASE}/orchestrate/start", json={"scenario_name": "nope"})
    assert r.status_code == 422

    r = await client.post(f"{BASE}/orchestrate/start", json={
        "scenario_name": "complete_demo", "nb_lots": 2, "acceleration": 8640, "nb_sqal_devices": 2,
        "feedbacks_per_hour": 30, "interval": 1, "duration": 600, "shipments_per_hour": 90})
    out = r.json()
    assert r.status_code == 200 and out["status"] == "running" and out["errors"] == [], out
    assert out["scenario"] == "complete_demo" and out["running_count"] == 5 and out["started_at"]
    assert [d["device_id"] for d in out["sqal_devices"]] == ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]
    assert out["gavage"]["status"] == "started" and out["consumer"]["status"] == "started"
    assert out["consumer"]["active_lots_count"] == 0 and out["consumer"]["feedbacks_per_hour"] == 30
    assert out["shipping"]["status"] == "started" and out["shipping"]["shipments_per_hour"] == 90
    assert (out["gavage"]["container_name"], out["gavage"]["container_id"], out["gavage"]["nb_lots"]) == \
        ("gavage", out["gavage"]["run_id"], 2)
    assert out["sqal_devices"][0]["container_name"] == "ESP32_DEMO_LL_01" and out["sqal_devices"][0]["message"]
    sup = app.state.supervisor
    g, d, c, s = (sup.status(n) for n in ("gavage", "ESP32_DEMO_LL_01", "consumer", "shipping"))
    # the original's order and delays: gavage -> 2 s -> SQAL devices -> 5 s -> consumer
    t = {k: v["started_at"] for k, v in (("g", g), ("d", d), ("c", c))}
    from datetime import datetime
    gap1 = (datetime.fromisoformat(t["d"]) - datetime.fromisoformat(t["g"])).total_seconds()
    gap2 = (datetime.fromisoformat(t["c"]) - datetime.fromisoformat(t["d"])).total_seconds()
    assert gap1 >= 1.9 and gap2 >= 4.9, (gap1, gap2)
    assert (opt(argv_of(g), "--nb-lots"), opt(argv_of(g), "--acceleration"), opt(argv_of(g), "--duration")) == \
        ("2", "8640", "600")
    assert opt(argv_of(d), "--interval") == "1" and opt(argv_of(d), "--location") == "Ligne A - Landes"
    assert opt(argv_of(c), "--feedbacks-per-hour") == "30" and opt(argv_of(c), "--min-rating") == "1"
    assert opt(argv_of(s), "--shipments-per-hour") == "90" and opt(argv_of(s), "--duration") == "600"

    st = (await client.get(f"{BASE}/orchestrate/status")).json()
    assert st["scenario"] == "complete_demo" and st["running_count"] == 5
    assert st["gavage"]["status"] == "running" and st["consumer"]["status"] == "running"
    assert st["shipping"]["status"] == "running"
    assert len(st["sqal_devices"]) == 2
    assert st["lots"] == {"total_lots": 0, "active_lots": 0, "completed_lots": 0, "avg_itm": None}
    assert st["overall_status"] == {"total_simulators": 5, "running_simulators": 5}  # 3 singletons + 2 devices
    assert st["sqal"] == {"total_devices": 2, "running_devices": 2,
                          "devices": [{"device_id": "ESP32_DEMO_LL_01", "status": "running"},
                                      {"device_id": "ESP32_DEMO_LL_02", "status": "running"}]}

    pids = [g["pid"], d["pid"], c["pid"], s["pid"], sup.status("ESP32_DEMO_LL_02")["pid"]]
    r = (await client.post(f"{BASE}/orchestrate/stop-all")).json()
    assert r["total_stopped"] == 5 and r["gavage"]["status"] == "stopped" and r["consumer"]["status"] == "stopped"
    assert r["shipping"]["status"] == "stopped"
    assert sorted(d["device_id"] for d in r["sqal_devices"]) == ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]
    assert {d["status"] for d in r["sqal_devices"]} == {"stopped"}
    assert not any(alive(p) for p in pids)
    again = (await client.post(f"{BASE}/orchestrate/stop-all")).json()
    assert again["total_stopped"] == 0 and again["sqal_devices"] == []  # only those that were running
    assert again["gavage"]["status"] == "not_running"  # known, already stopped: as the original
    st = (await client.get(f"{BASE}/orchestrate/status")).json()
    assert st["overall_status"]["running_simulators"] == 0 and st["sqal"]["running_devices"] == 0

    # quality_focus doubles the consumer rate; gavage_realtime starts the gavage only
    out = (await client.post(f"{BASE}/orchestrate/start", json={"scenario_name": "gavage_realtime", "nb_lots": 1})).json()
    assert out["gavage"]["status"] == "started" and out["sqal_devices"] == [] and out["consumer"] is None
    await client.post(f"{BASE}/orchestrate/stop-all")


async def test_logs_stream_live_over_websocket(app: Any, client: httpx.AsyncClient) -> None:
    async with serve(app) as url:
        ws_url = url.replace("http", "ws") + f"{BASE}/ws/logs/ESP32_WS_01"
        async with websockets.connect(ws_url) as ws:  # unknown simulator: an error, then close 4404
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert msg["type"] == "error" and "ESP32_WS_01" in msg["detail"] and msg["message"] == msg["detail"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404
        await client.post(f"{BASE}/simulators/start", json={"device_id": "ESP32_WS_01"})
        async with websockets.connect(ws_url + "?tail=0") as ws:
            got: list[dict[str, Any]] = []
            while len(got) < 3:  # lines the child prints after we connected, as they come
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert msg["type"] == "log" and msg["device_id"] == "ESP32_WS_01"
                assert msg["message"] == msg["line"]  # the original's field
                got.append(msg)
            assert [m["n"] for m in got] == sorted(m["n"] for m in got)
            assert any(m["line"].startswith("standin") for m in got)
            await client.post(f"{BASE}/simulators/stop", json={"device_id": "ESP32_WS_01"})
            lines: list[str] = []
            while not any("exited with code 0" in x for x in lines):
                lines.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["line"])
        # a new connection gets the backlog first
        async with websockets.connect(ws_url + "?tail=5") as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "log"
