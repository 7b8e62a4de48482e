"""Gavage simulator: the model's arithmetic (seeded), and the simulator against a real gateway
(uvicorn + PostgreSQL): lots created over HTTP, every feeding over ONE WebSocket, a dropped
connection survived without a duplicate feeding, lots marked ready; the CLI."""

from __future__ import annotations

import asyncio
import collections
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI

from emulation import gavage as g
from emulation.sim_common import ActionLog
from gateway.app import create_app
from gateway.config import Settings
from tests.fixtures.gateway import serve_app
from tests.fixtures.mqtt import free_port

ROOT = Path(__file__).resolve().parents[2]


# ---- the model ----

def test_dose_ramp_endpoints_and_middle() -> None:
    assert g.planned_dose("morning", 1, 12) == 200 and g.planned_dose("morning", 12, 12) == 460
    assert g.planned_dose("evening", 1, 14) == 210 and g.planned_dose("evening", 14, 14) == 490
    assert g.planned_dose("morning", 6.5, 12) == pytest.approx(330)  # type: ignore[arg-type]
    assert g.mortality_probability(1) == pytest.approx(0.0006)
    assert g.mortality_probability(10) == pytest.approx(0.0015)


def test_lot_trajectory_follows_the_model() -> None:
    rng = random.Random(7)
    spec = g.LotSpec("G001", "Jean Dupont", "LL", "Mulard", 50, 12)
    f = g.simulate_lot(spec, rng)
    assert len(f) == 24 and [x.moment for x in f[:2]] == ["morning", "evening"]
    assert [x.ready_for_slaughter for x in f] == [False] * 23 + [True]
    assert f[-1].day == 12 and f[-1].moment == "evening"
    for x in f:
        assert 0.95 * x.planned_dose_g - 0.1 <= x.actual_dose_g <= 1.05 * x.planned_dose_g + 0.1
        assert 19 <= x.temperature_c <= 23 and 55 <= x.humidity_pct <= 75
        assert x.mortality_pct == pytest.approx(100 * (50 - x.live_ducks) / 50, abs=1e-3)
    weights = [x.mean_weight_g for x in f]
    assert weights == sorted(weights)  # every feeding gains
    # first gain is at most base_max x 1.5 x 1.1 on the initial weight range
    assert 4400 < weights[0] < 4600 + 90 * 1.5 * 1.1
    assert [x.live_ducks for x in f] == sorted((x.live_ducks for x in f), reverse=True)
    # same seed, same lot
    assert g.simulate_lot(spec, random.Random(7)) == f


def test_population_figures() -> None:
    rng = random.Random(11)
    lots = [g.draw_lot(rng) for _ in range(3000)]
    mix = collections.Counter(s.genetics for s in lots)
    assert abs(mix["Mulard"] / 3000 - 0.6) < 0.04 and abs(mix["Pekin"] / 3000 - 0.2) < 0.03
    assert {s.nb_ducks for s in lots} == set(range(45, 56))
    assert {s.planned_duration_days for s in lots} == {11, 12, 13, 14}
    assert {s.site_code for s in lots} == {"LL", "LS", "MT", "BS", "PX"}
    mulard = [s for s in lots if s.genetics == "Mulard"][:400]
    runs = [g.simulate_lot(s, rng) for s in mulard]
    final = statistics.mean(r[-1].mean_weight_g for r in runs)
    assert 6500 <= final <= 7000, final  # "final weight around 6.5-7 kg for Mulard"
    mortality = statistics.mean(r[-1].mortality_pct for r in runs)
    assert 2.0 < mortality < 4.0, mortality  # "about 3 % over a lot"
    profiles = collections.Counter(g.lot_profile(s, r) for s, r in zip(mulard, runs, strict=True))
    assert set(profiles) == {"premium", "standard", "low"}


@pytest.mark.parametrize(("genetics", "weight", "mortality", "profile"), [
    ("Mulard", 6500, 3.0, "premium"), ("Mulard", 6499, 0.0, "standard"), ("Mulard", 7000, 3.1, "standard"),
    ("Mulard", 5800, 5.0, "standard"), ("Mulard", 5799, 0.0, "low"), ("Mulard", 7000, 5.1, "low"),
    ("Barbarie", 6000, 1.0, "premium"), ("Barbarie", 5500, 1.0, "standard"), ("Pekin", 6200, 2.0, "premium"),
    ("Pekin", 5599, 2.0, "low"),
])
def test_quality_profile_rule(genetics: str, weight: float, mortality: float, profile: str) -> None:
    assert g.quality_profile(genetics, weight, mortality) == profile


# ---- against a real gateway ----


@pytest.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str, int]]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False))
    async with serve_app(app) as port:
        yield app, f"http://127.0.0.1:{port}", port


class DroppingProxy:
    """A TCP proxy in front of the gateway that can cut every connection through it (a real network
    fault: the simulator sees its socket die mid-stream)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [w, uw]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def drop_all(self) -> None:
        for w in self.writers:
            w.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.drop_all()
        assert self.server is not None
        self.server.close()


async def _feedings(db_pool: asyncpg.Pool, lot_ids: list[str]) -> dict[str, int]:
    rows = await db_pool.fetch("SELECT lot_id, count(*) AS n FROM gavage_feedings WHERE lot_id = ANY($1) GROUP BY 1",
                            lot_ids)
    return {r["lot_id"]: r["n"] for r in rows}


async def test_simulator_feeds_lots_over_one_connection(live: tuple[FastAPI, str, int], db_pool: asyncpg.Pool) -> None:
    app, api, _ = live
    sim = g.GavageSimulator(g.Config(api=api, nb_lots=2, acceleration=2e6, seed=3, max_lots=3),
                            ActionLog("gavage", io.StringIO()))
    assert await asyncio.wait_for(sim.run(asyncio.Event()), 120) == 0
    st = sim.stats
    assert st.lots_created == 3 and st.lots_ready == 3 and st.refused == 0
    assert app.state.gavage_ws.connections_total == 1 and st.connections == 1  # one persistent WebSocket
    expected = {}
    rng = random.Random(3)  # the same seed redraws the same lots
    for lot_id in st.lot_ids:
        spec = g.draw_lot(rng)
        feedings = g.simulate_lot(spec, rng)
        expected[lot_id] = len(feedings)
        lot = await db_pool.fetchrow("SELECT * FROM lots WHERE id = $1", lot_id)
        assert lot["state"] == "ready" and lot["genetics"] == spec.genetics and lot["nb_ducks"] == spec.nb_ducks
        assert lot["quality_profile"] == g.lot_profile(spec, feedings)
        assert lot["current_day"] == spec.planned_duration_days
        assert float(lot["maize_total_per_duck_g"]) == pytest.approx(sum(f.actual_dose_g for f in feedings), abs=0.5)
        assert float(lot["mean_weight_g"]) == pytest.approx(feedings[-1].mean_weight_g, abs=0.1)
        # simulated time: 12 h between feedings, whatever the wall clock did
        span = await db_pool.fetchval("SELECT max(simulated_at) - min(simulated_at) FROM gavage_feedings "
                                   "WHERE lot_id = $1", lot_id)
        assert span.total_seconds() == (len(feedings) - 1) * 12 * 3600
    assert await _feedings(db_pool, st.lot_ids) == expected
    assert st.feedings_acked == st.saved == sum(expected.values())


async def test_simulator_survives_dropped_connections(live: tuple[FastAPI, str, int], db_pool: asyncpg.Pool) -> None:
    app, _, port = live
    proxy = DroppingProxy(port)
    await proxy.start()
    log = ActionLog("gavage", io.StringIO())
    sim = g.GavageSimulator(g.Config(api=f"http://127.0.0.1:{proxy.port}", nb_lots=2, acceleration=4e5, seed=5,
                                     max_lots=2), log)
    run = asyncio.create_task(sim.run(asyncio.Event()))
    try:
        for _ in range(3):  # cut the stream three times while feedings flow
            while sim.stats.feedings_acked < 8 * (_ + 1) and not run.done():
                await asyncio.sleep(0.01)
            proxy.drop_all()
        assert await asyncio.wait_for(run, 120) == 0
    finally:
        await proxy.stop()
    lines = log.lines
    st = sim.stats
    assert st.reconnects >= 3 and st.connections >= 4, lines[-20:]
    assert app.state.gavage_ws.connections_total == st.connections
    assert any(" ws_lost " in x for x in lines) and st.resent >= 1  # the unacked feeding went again
    # every feeding recorded exactly once (the registry key is lot/day/moment), nothing missing
    counts = await _feedings(db_pool, st.lot_ids)
    rng = random.Random(5)
    for lot_id in st.lot_ids:
        spec = g.draw_lot(rng)
        n = len(g.simulate_lot(spec, rng))
        assert counts[lot_id] == n == 2 * spec.planned_duration_days
        maize = await db_pool.fetchval("SELECT maize_total_per_duck_g FROM lots WHERE id = $1", lot_id)
        summed = await db_pool.fetchval("SELECT sum(actual_dose_g) FROM gavage_feedings WHERE lot_id = $1", lot_id)
        assert maize == summed  # a re-sent feeding was not counted twice
    assert st.lots_ready == 2 and st.saved + st.duplicates == st.feedings_acked
    assert st.saved == sum(counts.values())


def _run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "emulation.gavage", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


async def _wait_line(proc: subprocess.Popen[str], word: str, timeout: float = 30) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            break
        lines.append(line)
        if word in line:
            return lines
    raise AssertionError(f"{word!r} not logged: {lines[-10:]}")


async def test_cli_sigterm_exits_zero(live: tuple[FastAPI, str, int], db_pool: asyncpg.Pool) -> None:
    _, api, _ = live
    # acceleration 1: the first feeding now, the next one 12 h later: it is idle when stopped
    proc = _run_cli(["--api", api, "--nb-lots", "2", "--acceleration", "1", "--duration", "0", "--seed", "9"],
                    env={"SQAL_API_TOKEN": "unused-when-auth-is-off"})
    try:
        lines = await _wait_line(proc, " feeding ")
        lines += await _wait_line(proc, " feeding ")
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines += out.splitlines()
    assert sum(" lot_created " in x for x in lines) == 2 and any(" stopped " in x for x in lines)
    assert all(x.split(" ")[1] == "gavage" for x in lines if x.strip())
    assert await db_pool.fetchval("SELECT count(*) FROM gavage_feedings") == 2


async def test_cli_duration_ends_the_run(live: tuple[FastAPI, str, int]) -> None:
    _, api, _ = live
    t0 = time.monotonic()
    proc = _run_cli(["--api", api, "--nb-lots", "1", "--acceleration", "1", "--duration", "1.5", "--seed", "1"])
    out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 0, err
    assert time.monotonic() - t0 >= 1.5
    assert " duration_reached seconds=1.5" in out


@pytest.mark.parametrize(("args", "words"), [
    (["--nb-lots", "2"], "--api"),
    (["--api", "localhost:8000"], "--api must be an http"),
    (["--api", "http://x", "--nb-lots", "0"], "--nb-lots must be between 1"),
    (["--api", "http://x", "--acceleration", "fast"], "--acceleration must be a float"),
    (["--api", "http://x", "--duration", "-1"], "--duration must be between 0"),
])
def test_cli_bad_arguments(args: list[str], words: str) -> None:
    r = subprocess.run([sys.executable, "-m", "emulation.gavage", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    assert r.returncode == 2 and words in r.stderr, r.stderr


def test_cli_retries_an_unreachable_api_until_the_duration_ends() -> None:
    # nothing listens there: it retries with backoff (logged) until the duration ends, then exits 0
    port = free_port()
    r = subprocess.run([sys.executable, "-m", "emulation.gavage", "--api", f"http://127.0.0.1:{port}",
                        "--duration", "1"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, check=False)
    assert r.returncode == 0 and " api_unreachable " in r.stdout and " duration_reached " in r.stdout

