"""The per-hour aggregates (registry/sample_hours.py) give what a scan of the stored readings gives,
and the `sqal_samples` lot events are written at most once a minute per device and hour row."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from registry import assignments, inspection, sample_hours, sample_refs, samples, timeline
from registry.inspection_queue import device_sent_lot, devices_holding_ended_lots
from tests.registry.helpers import lot_in_state

GRADES = ["A+", "A", "B", "C", "REJECT", None]


def scan_sql() -> str:
    return """SELECT count(*) AS samples, avg(score) AS score_mean, min(score) AS score_min, max(score) AS score_max,
                     stddev_samp(score) AS score_sd, count(*) FILTER (WHERE weight_g > 0) AS weight_n,
                     avg(weight_g) FILTER (WHERE weight_g > 0) AS weight_mean,
                     min(weight_g) FILTER (WHERE weight_g > 0) AS weight_min,
                     max(weight_g) FILTER (WHERE weight_g > 0) AS weight_max,
                     stddev_samp(weight_g) FILTER (WHERE weight_g > 0) AS weight_sd,
                     min(COALESCE(CASE WHEN clock_synced THEN measured_at END, received_at)) AS first_at,
                     max(COALESCE(CASE WHEN clock_synced THEN measured_at END, received_at)) AS last_at,
                     array_agg(DISTINCT device_id) AS devices
              FROM sqal_samples WHERE lot_id = $1"""


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


async def test_lot_figures_from_the_hours_equal_a_scan_of_the_readings(db_pool: asyncpg.Pool) -> None:
    rnd = random.Random(23)
    lots = [await lot_in_state(db_pool, "ready") for _ in range(3)]
    t0 = datetime.now(UTC) - timedelta(hours=5)
    devs = ["ESP32_AGG_LL_01", "ESP32_AGG_LL_02", "ESP32_AGG_LL_03"]
    await assignments.assign_device(db_pool, lots[2], devs[2], valid_from=t0 - timedelta(hours=1))
    seq = 0
    for _batch in range(12):
        rows = []
        for _ in range(rnd.randint(1, 40)):
            seq += 1
            dev = rnd.choice(devs)
            synced = rnd.random() > 0.1
            rows.append({"device_id": dev, "boot": 1, "seq": seq, "received_at": t0 + timedelta(seconds=seq * 7),
                         "lot_id": None if dev == devs[2] else rnd.choice([lots[0], lots[1], "LOT_20000101_0001"]),
                         "measured_at": t0 + timedelta(seconds=seq * 7 - rnd.randint(0, 3000)) if synced else None,
                         "clock_synced": synced, "grade": rnd.choice(GRADES),
                         "score": None if rnd.random() < 0.1 else rnd.random(),
                         "weight_g": rnd.choice([None, 0.0, rnd.uniform(300, 800), rnd.uniform(300, 800)])})
        rows += rnd.sample(rows, min(3, len(rows)))  # repeats: duplicates, counted once
        await samples.store_samples(db_pool, rows)
    for lot in lots:
        agg = await sample_hours.lot_summary(db_pool, lot)
        scan = await db_pool.fetchrow(scan_sql(), lot)
        grades = {r["g"]: r["n"] for r in await db_pool.fetch(
            "SELECT COALESCE(grade, 'none') AS g, count(*) AS n FROM sqal_samples WHERE lot_id = $1 GROUP BY 1", lot)}
        assert agg["samples"] == scan["samples"] > 0 and agg["grades"] == grades
        assert agg["devices"] == sorted(scan["devices"]) and agg["weight_n"] == scan["weight_n"]
        for k in ("score_mean", "score_min", "score_max", "score_sd", "weight_mean", "weight_min", "weight_max",
                  "weight_sd"):
            assert close(agg[k], scan[k]), (k, agg[k], scan[k])
        assert (agg["first_at"], agg["last_at"]) == (scan["first_at"], scan["last_at"])
        assert (await timeline.timeline(db_pool, lot))["samples"] == scan["samples"]
        for g, n in grades.items():
            total, _ = await samples.lot_samples(db_pool, lot, grade=g, limit=1)
            assert total == n
    everything = {r["g"]: r["n"] for r in await db_pool.fetch(
        "SELECT COALESCE(grade, 'none') AS g, count(*) AS n FROM sqal_samples GROUP BY 1")}
    assert await sample_refs.grade_counts(db_pool) == everything
    # the inspection's results, from the hours, are the scan's
    scan = await db_pool.fetchrow(scan_sql(), lots[2])
    await db_pool.execute("UPDATE lots SET maize_total_per_duck_g = 9000 WHERE id = $1", lots[2])
    closed = await inspection.close_inspection(db_pool, lots[2])
    assert closed["sample_count"] == scan["samples"]
    assert closed["mean_liver_weight_g"] == round(float(scan["weight_mean"]), 1)


async def test_the_dispatchers_questions_answer_from_the_hours(db_pool: asyncpg.Pool) -> None:
    lot = await lot_in_state(db_pool, "ready")
    dev = "ESP32_AGG_LS_01"
    t = datetime.now(UTC)
    await samples.store_samples(db_pool, [{"device_id": dev, "boot": 1, "seq": 1, "lot_id": lot,
                                           "received_at": t - timedelta(minutes=10)}])
    assert await device_sent_lot(db_pool, dev, lot, t - timedelta(minutes=11))
    assert not await device_sent_lot(db_pool, dev, lot, t - timedelta(minutes=9))
    assert not await device_sent_lot(db_pool, dev, "LOT_20000101_0001", t - timedelta(hours=1))
    assert await devices_holding_ended_lots(db_pool) == []  # the device is not online: nothing to ask


@pytest.mark.parametrize("aged", [False, True])
async def test_lot_events_at_most_once_a_minute_per_device_hour(db_pool: asyncpg.Pool, aged: bool) -> None:
    lot = await lot_in_state(db_pool, "ready")
    dev = "ESP32_AGG_MT_01"
    t = datetime.now(UTC)
    for seq in range(1, 4):
        await samples.store_samples(db_pool, [{"device_id": dev, "boot": 1, "seq": seq, "lot_id": lot,
                                               "measured_at": t, "received_at": t}])
        if aged:  # the row's last event a minute ago or more: the next batch writes one
            await db_pool.execute("UPDATE sqal_sample_hours SET evented_at = evented_at - interval '61 seconds'")
    events = await db_pool.fetch("SELECT data FROM lot_events WHERE lot_id = $1 AND type = 'sqal_samples'", lot)
    assert len(events) == (3 if aged else 1)
    assert await sample_hours.lot_sample_count(db_pool, lot) == 3
