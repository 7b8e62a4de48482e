"""The readings' partitions (migration 006, registry/partitions.py, gateway/maintenance.py): made
ahead, dropped by the retention policy, dedupe exact across partitions, status."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

from gateway.ingest.metrics import IngestMetrics
from gateway.maintenance import MaintenanceMetrics, RetentionPolicy, run_once
from registry import partitions, sample_hours, sample_payloads, samples
from tests.registry.helpers import lot_in_state

DEV = "ESP32_PART_LL_01"


def reading(seq: int, received_at: datetime, *, boot: int = 4, **kw: Any) -> dict[str, Any]:
    return {"device_id": DEV, "boot": boot, "seq": seq, "received_at": received_at, "measured_at": received_at,
            "score": 0.8, "grade": "A", "weight_g": 610.0, "features": {"tof": {"seq": seq}},
            "raw": {"v": 1, "seq": seq}, **kw}


def at(d: date, hour: int = 12) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


async def names(pool: asyncpg.Pool, parent: str) -> list[str]:
    return [p.name for p in await partitions.partitions(pool, parent)]


async def where(pool: asyncpg.Pool, seq: int, boot: int = 4) -> str:
    """The partition holding a reading."""
    return str(await pool.fetchval("SELECT tableoid::regclass::text FROM sqal_samples WHERE device_id = $1 "
                                   "AND boot = $2 AND seq = $3", DEV, boot, seq))


async def test_a_run_makes_the_partitions_ahead(db_pool: asyncpg.Pool) -> None:
    today = datetime(2027, 3, 29, 10, tzinfo=UTC)
    metrics = MaintenanceMetrics()
    report = await run_once(db_pool, RetentionPolicy(ahead_days=5), metrics, today=today)
    assert report.ran
    raw = await names(db_pool, partitions.RAW)
    for d in range(-1, 6):
        assert f"sqal_sample_raw_{(today + timedelta(days=d)).strftime('%Y_%m_%d')}" in raw
    assert {"sqal_samples_2027_03", "sqal_samples_2027_04"} <= set(await names(db_pool, partitions.SAMPLES))
    assert set(report.created) >= {"sqal_samples_2027_04", "sqal_sample_raw_2027_04_03"}
    again = await run_once(db_pool, RetentionPolicy(ahead_days=5), metrics, today=today)
    assert again.created == [] and again.dropped == []  # idempotent
    text = metrics.registry.collect()
    runs = {s.labels["outcome"]: s.value for m in text for s in m.samples if s.name == "sqal_retention_runs_total"}
    assert runs == {"ok": 2.0}


async def test_a_run_drops_what_is_past_retention_and_keeps_the_rest(db_pool: asyncpg.Pool) -> None:
    lot = await lot_in_state(db_pool, "ready")
    today = date(2027, 3, 10)
    await partitions.ensure(db_pool, date(2027, 1, 1), today)
    old, recent = date(2027, 1, 20), date(2027, 3, 8)  # a January reading, a recent one
    res = await samples.store_samples(db_pool, [reading(1, at(old), lot_id=lot), reading(5000, at(recent), lot_id=lot)])
    assert res.new == [True, True]
    assert (await where(db_pool, 1), await where(db_pool, 5000)) == ("sqal_samples_2027_01", "sqal_samples_2027_03")
    before = await sample_hours.lot_summary(db_pool, lot)

    metrics = MaintenanceMetrics()
    report = await run_once(db_pool, RetentionPolicy(raw_days=20, samples_days=30, ahead_days=1), metrics,
                            today=at(today))
    dropped = {d.name for d in report.dropped}
    # raw: every day before 2027-02-18 (today - 20); readings: January (wholly before today - 30 = 2027-02-08)
    assert "sqal_sample_raw_2027_01_20" in dropped and "sqal_sample_raw_2027_02_17" in dropped
    assert "sqal_sample_raw_2027_02_18" not in dropped and "sqal_samples_2027_01" in dropped
    assert "sqal_samples_2027_02" not in dropped
    assert min(p.lo for p in await partitions.partitions(db_pool, partitions.RAW)) == date(2027, 2, 18)
    # the January reading is gone with its month, its span too; the recent one is whole
    assert await sample_payloads.reading(db_pool, DEV, 4, 1) is None
    assert await db_pool.fetchval("SELECT count(*) FROM sqal_sample_spans WHERE day < '2027-02-01'") == 0
    kept = await sample_payloads.reading(db_pool, DEV, 4, 5000)
    assert kept is not None and kept["raw"] == {"v": 1, "seq": 5000} and kept["features"] == {"tof": {"seq": 5000}}
    # lot-level records stay: the hour rows still count both readings
    assert await sample_hours.lot_summary(db_pool, lot) == before and before["samples"] == 2
    samples_ = {s.labels["table"]: s.value for m in metrics.registry.collect() for s in m.samples
                if s.name == "sqal_retention_partitions_dropped_total"}
    n_months = len([n for n in dropped if n.startswith("sqal_samples_")])
    assert samples_[partitions.SAMPLES] == n_months and samples_[partitions.RAW] == len(dropped) - n_months


async def test_raw_expires_before_the_reading(db_pool: asyncpg.Pool) -> None:
    today = date(2027, 3, 10)
    await partitions.ensure(db_pool, date(2027, 2, 1), today)
    await samples.store_samples(db_pool, [reading(1, at(date(2027, 2, 2)))])
    await run_once(db_pool, RetentionPolicy(raw_days=30, samples_days=730, ahead_days=1), today=at(today))
    r = await sample_payloads.reading(db_pool, DEV, 4, 1)
    assert r is not None and r["raw"] is None and r["features"] == {"tof": {"seq": 1}} and r["grade"] == "A"


async def test_a_late_replay_across_partitions_is_a_duplicate(db_pool: asyncpg.Pool) -> None:
    """Readings of a span go to the partition of the span's day, whenever they arrive: a copy replayed
    in another month hits the same partition's unique index."""
    await partitions.ensure(db_pool, date(2027, 1, 25), date(2027, 2, 28))
    first = at(date(2027, 1, 30))
    assert (await samples.store_samples(db_pool, [reading(7, first), reading(8, first)])).new == [True, True]
    late = at(date(2027, 2, 6))  # a week later, another month
    again = await samples.store_samples(db_pool, [reading(7, late), reading(9, late), reading(8, late, boot=5),
                                                 reading(4096, late)])
    assert again.new == [False, True, True, True]
    assert await where(db_pool, 9) == "sqal_samples_2027_01"  # same span as 7: January's partition
    assert await where(db_pool, 8, boot=5) == "sqal_samples_2027_02"  # another boot: a span of its own
    assert await where(db_pool, 4096) == "sqal_samples_2027_02"  # the next span of boot 4
    much_later = await samples.store_samples(db_pool, [reading(8, at(date(2027, 2, 27))), reading(9, late)])
    assert much_later.new == [False, False]
    assert await db_pool.fetchval("SELECT count(*) FROM sqal_samples") == 5
    # and the raw payloads went to the days they arrived
    raw_days = {r["day"] for r in await db_pool.fetch("SELECT day FROM sqal_sample_raw")}
    assert raw_days == {date(2027, 1, 30), date(2027, 2, 6)}


async def test_concurrent_writers_of_a_new_span_agree_on_its_partition(db_pool: asyncpg.Pool) -> None:
    """Two transactions storing the same new readings, one received on each side of midnight: the
    second waits for the first's span, then finds its copies are duplicates."""
    await partitions.ensure(db_pool, date(2027, 1, 30), date(2027, 2, 2))
    a, b = await db_pool.acquire(), await db_pool.acquire()
    try:
        ta, tb = a.transaction(), b.transaction()
        await ta.start()
        await tb.start()
        ra = await samples.store_samples(a, [reading(1, at(date(2027, 1, 31), 23)),
                                             reading(2, at(date(2027, 1, 31), 23))])

        pending = asyncio.create_task(samples.store_samples(b, [reading(2, at(date(2027, 2, 1), 0)),
                                                                reading(3, at(date(2027, 2, 1), 0))]))
        await asyncio.sleep(0.3)
        assert not pending.done()  # waits on the span a inserted
        await ta.commit()
        rb = await pending
        await tb.commit()
    finally:
        await db_pool.release(a)
        await db_pool.release(b)
    assert ra.new == [True, True] and rb.new == [False, True]
    assert {await where(db_pool, s) for s in (1, 2, 3)} == {"sqal_samples_2027_01"}


async def test_status_lists_partitions_oldest_data_and_next_drop(db_pool: asyncpg.Pool) -> None:
    today = date(2027, 3, 10)
    await partitions.ensure(db_pool, date(2027, 2, 1), today)
    await samples.store_samples(db_pool, [reading(1, at(date(2027, 2, 3)))])
    st = await partitions.status(db_pool, today, raw_days=30, samples_days=730)
    raw = st["readings"][partitions.RAW]
    assert raw["oldest_data"] == date(2027, 2, 3) and raw["retention_days"] == 30
    assert raw["next_drop"]["partition"] == min(p["name"] for p in raw["partitions"])
    first = min(p["to"] for p in raw["partitions"])
    assert raw["next_drop"]["on"] == max(today, first + timedelta(days=30))
    rd = st["readings"][partitions.SAMPLES]
    assert rd["oldest_data"] == date(2027, 2, 1) and rd["bytes"] > 0
    assert {"sqal_sample_hours", "lot_events", "lots"} <= set(st["tables"])


async def test_the_maintenance_figures_are_on_the_ingests_metrics_page(db_pool: asyncpg.Pool) -> None:
    ingest = IngestMetrics()  # /metrics renders the ingest's registry (gateway/app.py adds these to it)
    metrics = MaintenanceMetrics()
    metrics.register_into(ingest.registry)
    await run_once(db_pool, RetentionPolicy(raw_days=1, ahead_days=1), metrics, today=datetime(2027, 5, 2, tzinfo=UTC))
    text = ingest.render().decode()
    assert 'sqal_retention_runs_total{outcome="ok"} 1.0' in text
    assert 'sqal_retention_partitions_dropped_total{table="sqal_sample_raw"}' in text
    assert "sqal_retention_last_run_timestamp_seconds" in text
