"""complete_demo end to end on the real stack: PostgreSQL, the gateway's embedded MQTT broker, the
gavage simulator over /ws/gavage, emulated SQAL devices running the real firmware on MicroPython,
the dispatcher, the consumer simulator; all as the supervisor's child processes.

High acceleration (one simulated day per second), a small inspection target and a fast consumer,
set through the Python API (the HTTP API keeps the original's ranges), so that a lot goes the whole
way in about a minute.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console

from gateway import demo
from gateway.api.control_common import context_for
from gateway.app import create_app
from gateway.config import Settings
from gateway.scenarios import ScenarioOptions
from registry import stats as reg_stats
from registry import timeline as reg_timeline
from tests.fixtures.gateway import alive, serve
from tests.fixtures.postgres import make_data_dir

INSPECTION_SAMPLES = 4
TOKEN = "complete-demo-test-token"


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    settings = Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0, api_token=TOKEN,
                        inspection_samples=INSPECTION_SAMPLES, dispatch_poll_s=0.5)
    app = create_app(settings)
    async with app.router.lifespan_context(app), serve(app):
        yield app


def marked_processes(run_ids: set[str]) -> list[int]:
    """Every process (children and their children) carrying one of these supervisor run ids."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("SQAL_SUPERVISOR_RUN") in run_ids and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


@pytest.mark.slow
async def test_complete_demo_runs_the_whole_chain(gateway: Any) -> None:
    app = gateway
    pool = app.state.pool
    orch = app.state.orchestrator
    t0 = time.monotonic()
    out = await orch.start(ScenarioOptions(scenario_name="complete_demo", nb_lots=2, acceleration=86400,
                                           nb_sqal_devices=2, interval=1.0, feedbacks_per_hour=1800, seed=7),
                           context_for(app.state))
    assert out["status"] == "running", out
    assert out["gavage"]["status"] == "started" and out["consumer"]["status"] == "started"
    assert [d["device_id"] for d in out["sqal_devices"]] == ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]
    sup = app.state.supervisor
    run_ids = {c.run_id for c in sup.children.values() if c.run_id}
    assert len(marked_processes(run_ids)) >= 6  # 4 wrappers + 2 MicroPython boards

    lot_id = None
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and lot_id is None:
        await asyncio.sleep(1)
        for c in sup.children.values():  # a crashed simulator is a failure now, not a timeout later
            assert c.state() in ("running", "restarting"), (c.name, c.info(), c.logs.tail(30))
        lot_id = await pool.fetchval("SELECT lot_id FROM consumer_feedback ORDER BY id LIMIT 1")
    elapsed = time.monotonic() - t0
    logs = {name: [e["line"] for e in c.logs.tail(15)] for name, c in sup.children.items()}
    assert lot_id is not None, f"no lot reached consumer feedback in {elapsed:.0f}s; logs: {logs}"
    print(f"\ncomplete_demo: first lot with consumer feedback after {elapsed:.1f}s ({lot_id})")

    tl = await reg_timeline.timeline(pool, lot_id, limit=1000)
    types = [e["type"] for e in tl["events"]]

    def first(t: str) -> int:
        assert t in types, (t, types)
        return types.index(t)

    # the order of the chain, one lot id all the way
    assert types[0] == "lot_created"
    assert first("gavage_feeding") < first("mark_ready") < first("assign") < first("sqal_samples") \
        < first("close_inspection") < first("product_created") < first("consumer_feedback")
    feedings = [e for e in tl["events"] if e["type"] == "gavage_feeding"]
    assert len(feedings) == tl["feedings"] >= 2 * 11  # two feedings a day over 11-14 days
    closed = tl["events"][first("close_inspection")]["data"]
    assert closed["sample_count"] >= INSPECTION_SAMPLES and sum(closed["grade_distribution"].values()) >= \
        INSPECTION_SAMPLES
    assert closed["itm"] and closed["itm"] > 0 and closed["mean_liver_weight_g"] > 0
    assert tl["samples"] >= INSPECTION_SAMPLES and tl["feedbacks"] >= 1
    lot = await pool.fetchrow("SELECT state, itm, grade_distribution FROM lots WHERE id = $1", lot_id)
    assert lot["state"] == "inspected" and lot["itm"] is not None
    devices = {r["device_id"] for r in await pool.fetch("SELECT device_id FROM sqal_samples WHERE lot_id = $1",
                                                         lot_id)}
    assert devices <= {"ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"} and devices

    stats = await reg_stats.global_stats(pool)
    assert stats["avg_itm"] is not None and stats["avg_itm"] != 0
    assert stats["completed_lots"] >= 1 and stats["average_consumer_rating"] is not None
    status = orch.status()
    assert status["scenario"] == "complete_demo" and status["running_count"] == 5

    # the demo's live summary shows the chain
    console = Console(record=True, force_terminal=True, width=200)
    console.print(demo.render(await demo.snapshot(app), started=0.0))
    text = console.export_text()
    assert lot_id in text and "inspected" in text and "feedback" in text and "avg ITM" in text

    pids = [c.pid for c in sup.children.values()]
    res = await orch.stop_all()
    assert res["total_stopped"] == 5
    assert not any(alive(p) for p in pids)
    assert marked_processes(run_ids) == []  # the MicroPython boards too


@pytest.mark.slow
def test_sqal_demo_command_shows_a_complete_lot_and_stops_clean() -> None:
    """The README's main command on a fresh data dir (fast settings), read as a user would."""
    data_dir = make_data_dir("sqal-demo-")
    env = {**os.environ, "SQAL_DATA_DIR": str(data_dir), "SQAL_MQTT_EMBEDDED_PORT": "0", "SQAL_DISPATCH_POLL_S": "0.5"}
    for k in ("SQAL_DATABASE_URL", "SQAL_MQTT_URL", "SQAL_INSPECTION_SAMPLES", "SQAL_LOG_LEVEL"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--port", "0", "--acceleration", "86400",
                             "--nb-lots", "2", "--devices", "2", "--interval", "1", "--inspection-samples", "4",
                             "--feedbacks-per-hour", "1800"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 150
        done = False
        while time.monotonic() < deadline and not done:
            line = proc.stdout.readline()
            assert line, "demo exited early:\n" + "".join(seen[-40:])
            seen.append(line)
            m = re.search(r"feedback (\d+) \| avg ITM ([\d.]+)", line)
            done = bool(m and int(m.group(1)) >= 1 and float(m.group(2)) > 0)
        out = "".join(seen)
        assert done, "no consumer feedback shown in time:\n" + out[-3000:]
        assert re.search(r"SQAL gateway running: http://127\.0\.0\.1:\d+", out)
        assert re.search(r"web page:  http://127\.0\.0\.1:\d+/ui/", out)
        assert "API docs:" in out and "complete_demo running: 5 simulators running" in out
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        assert not any(alive(p) for p in children), "a process of the demo outlived it"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        from registry.embedded import EmbeddedPostgres

        EmbeddedPostgres(data_dir).stop()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
