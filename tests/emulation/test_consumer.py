"""Consumer simulator: the rating model, and runs against a real gateway (uvicorn + PostgreSQL)
honouring rate, rating bounds, duration and use_active_lots; the CLI."""

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

from emulation import consumer as c
from emulation.sim_common import ActionLog
from gateway.app import create_app
from gateway.config import Settings
from registry import lots
from tests.fixtures.gateway import serve_app
from tests.registry.helpers import inspected_lot, products_of

ROOT = Path(__file__).resolve().parents[2]


def test_consumer_mix_and_grade_adjustment() -> None:
    rng = random.Random(1)
    kinds = collections.Counter(c.draw_consumer(rng)[0] for _ in range(20000))
    for name, share, _ in c.CONSUMER_MIX:
        assert abs(kinds[name] / 20000 - share) < 0.015, (name, kinds[name])
    b = [c.draw_feedback(rng, "B", 1, 5) for _ in range(4000)]
    a = [c.draw_feedback(rng, "A+", 1, 5) for _ in range(4000)]
    low = [c.draw_feedback(rng, "C", 1, 5) for _ in range(4000)]
    mb, ma, mc = (statistics.mean(x["overall_rating"] for x in s) for s in (b, a, low))
    assert ma > mb + 0.6 and mc < mb - 0.6  # +1 for A+/A, -1 for C (clipped at 5 and 1)
    assert {x["overall_rating"] for x in b} == {1, 2, 3, 4, 5}
    for x in b:
        for k in ("texture_rating", "flavor_rating", "freshness_rating"):
            assert abs(x[k] - x["overall_rating"]) <= 1 and 1 <= x[k] <= 5
        assert x["consumption_context"] in ("home", "restaurant", "special_event", "gift")
        assert x["comment"] in c.COMMENTS[x["overall_rating"]]
    bounded = [c.draw_feedback(rng, "A", 2, 3) for _ in range(500)]
    assert {v for x in bounded for k, v in x.items() if k.endswith("rating")} == {2, 3}


@pytest.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False))
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", app.state.pool


async def _two_lots(pool: asyncpg.Pool) -> tuple[str, str]:
    on_market = await inspected_lot(pool, ["A", "A"])
    closed = await inspected_lot(pool, ["B", "B"], device="ESP32_CONS_LL_02")
    await products_of(pool, on_market, 2)
    await products_of(pool, closed, 2)
    await lots.close(pool, closed, "recalled")
    return on_market, closed


def _sim(api: str, **kw: object) -> c.ConsumerSimulator:
    return c.ConsumerSimulator(c.Config(api=api, **kw), ActionLog("consumer", io.StringIO()))  # type: ignore[arg-type]


async def test_rate_bounds_duration_and_active_lots(live: tuple[str, asyncpg.Pool]) -> None:
    api, pool = live
    on_market, closed = await _two_lots(pool)
    sim = _sim(api, feedbacks_per_hour=7200, min_rating=4, max_rating=4, duration=3.0, seed=2)  # every 0.5 s
    t0 = time.monotonic()
    assert await sim.run(asyncio.Event()) == 0
    elapsed = time.monotonic() - t0
    assert 3.0 <= elapsed < 30  # stops by itself once the duration is over (not at once, not never)
    n = sim.stats.feedbacks
    assert 2 <= n <= 7, n  # slots at 0, 0.5 .. 3.0 s at most: the rate, never a burst
    assert set(sim.stats.lots) == {on_market}  # only the lot on the market
    rows = await pool.fetch("SELECT * FROM consumer_feedback ORDER BY id")
    assert len(rows) == n and sim.stats.scans == n
    assert {(r["rating"], r["texture"], r["flavor"], r["freshness"]) for r in rows} == {(4, 4, 4, 4)}
    assert all(r["product_id"] is not None and r["lot_id"] == on_market for r in rows)

    every = _sim(api, feedbacks_per_hour=36000, min_rating=1, max_rating=2, duration=2.0,
                 use_active_lots=False, seed=4)
    await every.run(asyncio.Event())
    assert set(every.stats.lots) == {on_market, closed}
    ratings = await pool.fetch("SELECT rating, texture, flavor, freshness FROM consumer_feedback WHERE id > $1",
                               rows[-1]["id"])
    assert {v for r in ratings for v in r.values()} <= {1, 2} and len(ratings) == every.stats.feedbacks


async def test_waits_for_products_without_failing(live: tuple[str, asyncpg.Pool]) -> None:
    api, _ = live
    sim = _sim(api, feedbacks_per_hour=36000, duration=0.5)
    assert await sim.run(asyncio.Event()) == 0
    assert sim.stats.feedbacks == 0 and sim.stats.no_products >= 1 and sim.stats.errors == 0


async def test_cli_sigterm_and_bad_arguments(live: tuple[str, asyncpg.Pool]) -> None:
    api, pool = live
    await _two_lots(pool)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "emulation.consumer", "--api", api, "--feedbacks-per-hour", "1", "--min-rating", "3",
            "--max-rating", "5", "--duration", "0", "--no-use-active-lots", "--seed", "8"]
    # the gateway under test serves from this event loop: nothing here may block it
    proc = await asyncio.to_thread(subprocess.Popen, argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = await asyncio.to_thread(proc.stdout.readline)
        assert " consumer start " in first and "use_active_lots=False" in first and "interval=3600.000s" in first
        line = await asyncio.to_thread(proc.stdout.readline)  # the first slot is immediate
        assert " consumer feedback " in line and "rating=" in line
        proc.send_signal(signal.SIGTERM)  # idle for an hour: SIGTERM ends it cleanly
        out, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert " consumer stopped feedbacks=1" in out
    for args, words in ((["--min-rating", "4", "--max-rating", "2"], "--min-rating (4) must not exceed"),
                        (["--min-rating", "0"], "--min-rating must be between 1 and 5"),
                        (["--feedbacks-per-hour", "0"], "--feedbacks-per-hour must be between")):
        r = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "emulation.consumer", "--api", api, *args],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 2 and words in r.stderr, r.stderr
