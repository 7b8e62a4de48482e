"""The data generator (registry/generate.py) writes a registry the rest of the code reads as its own:
every reading decodes to a contract sample naming its own key, time and lot, spans and partitions
as store_samples makes them, hour rows equal to a scan, lot results from their readings, and the
ingest path dedupes against it."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import asyncpg

from registry import sample_hours, sample_payloads, samples, timeline
from registry.generate import FleetPlan, generate
from registry.lots import get_lot

PLAN = FleetPlan(days=2, boards=3, rate_hz=0.02, hours_per_lot=8, end=date(2027, 1, 31), seed=5, pool_size=32)


async def test_generated_fleet_is_consistent(database_url: str, db_pool: asyncpg.Pool) -> None:
    report = await generate(database_url, PLAN, workers=1)
    per_day = int(86400 * PLAN.rate_hz)
    assert report.readings == 2 * 3 * per_day == await db_pool.fetchval("SELECT count(*) FROM sqal_samples")
    assert report.lots == 2 * 3 * 3 == await db_pool.fetchval("SELECT count(*) FROM lots")
    assert await db_pool.fetchval("SELECT count(*) FROM sqal_sample_raw") == report.readings
    assert report.events == await db_pool.fetchval("SELECT count(*) FROM lot_events")
    # a reading: row, raw payload and features agree
    dev = PLAN.device(1)
    boot = (date(2027, 1, 31) - date(2000, 1, 1)).days
    r = await sample_payloads.reading(db_pool, dev, boot, 100)
    assert r is not None and r["raw"] is not None
    raw = r["raw"]
    assert (raw["device_id"], raw["boot"], raw["seq"], raw["lot_id"]) == (dev, boot, 100, r["lot_id"])
    assert datetime.fromtimestamp(raw["ts"] / 1000, r["measured_at"].tzinfo) == r["measured_at"]
    assert raw["q"]["grade"] == r["device_grade"] and r["features"]["tof"]["grade"] is not None
    assert r["link_kind"] == "explicit" and r["requested_lot_id"] == r["lot_id"]
    # hour rows = a scan; the lot's results come from its readings; its timeline counts them
    lot = r["lot_id"]
    n, grades = await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE lot_id = $1", lot), {
        x["g"]: x["n"] for x in await db_pool.fetch(
            "SELECT grade AS g, count(*) AS n FROM sqal_samples WHERE lot_id = $1 GROUP BY 1", lot)}
    summary = await sample_hours.lot_summary(db_pool, lot)
    assert summary["samples"] == n and summary["grades"] == grades
    got = await get_lot(db_pool, lot)
    assert got["sample_count"] == n and got["state"] == "inspected" and got["grade_distribution"] == grades
    tl = await timeline.timeline(db_pool, lot, limit=1000)
    assert tl["samples"] == n
    assert [e["type"] for e in tl["events"]][:2] == ["lot_created", "assign"]
    assert tl["events"][-1]["type"] == "close_inspection"
    assert sum(e["data"]["count"] for e in tl["events"] if e["type"] == "sqal_samples") == n
    # the ingest's store path sees the generated readings as stored, and goes on after them
    again = await samples.store_samples(db_pool, [
        {"device_id": dev, "boot": boot, "seq": 100, "received_at": r["received_at"] + timedelta(days=3)},
        {"device_id": dev, "boot": boot, "seq": per_day, "received_at": r["received_at"]}])
    assert again.new == [False, True]
    # lot ids created later go on after the generated ones
    assert await db_pool.fetchval("SELECT last FROM lot_id_counters WHERE day = '2027-01-31'") == 9
