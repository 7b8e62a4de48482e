"""Lot creation, ids, reads and the lifecycle end to end."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from registry import assignments, gavage, inspection, lots, samples, timeline
from registry.errors import InvalidInput, LotNotFound
from tests.registry.helpers import LOT_ARGS, new_lot


async def test_create_lot_fields_and_id(db_pool: asyncpg.Pool) -> None:
    lot = await lots.create_lot(db_pool, **{**LOT_ARGS, "genetics": "barbarie"})
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert re.fullmatch(rf"LOT_{today}_\d{{4}}", lot["id"])
    assert lot["state"] == "created" and lot["genetics"] == "Barbarie" and lot["live_ducks"] == 50
    assert lot["maize_total_per_duck_g"] == 0.0
    events = await db_pool.fetch("SELECT type, stage FROM lot_events WHERE lot_id = $1", lot["id"])
    assert [(e["type"], e["stage"]) for e in events] == [("lot_created", "registry")]


async def test_hundred_concurrent_creations_get_distinct_ids(db_pool: asyncpg.Pool) -> None:
    ids = await asyncio.gather(*(new_lot(db_pool) for _ in range(100)))
    assert len(set(ids)) == 100
    suffixes = sorted(int(i.rsplit("_", 1)[1]) for i in ids)
    assert suffixes == list(range(1, 101))  # the per-day counter leaves no gap and no repeat


async def test_suffix_widens_past_9999(db_pool: asyncpg.Pool) -> None:
    await db_pool.execute("INSERT INTO lot_id_counters VALUES ((now() AT TIME ZONE 'UTC')::date, 9998)")
    a, b = await new_lot(db_pool), await new_lot(db_pool)
    assert a.endswith("_9999") and b.endswith("_10000")
    assert re.fullmatch(r"LOT_\d{8}_\d{4,6}", b)


async def test_invalid_input_is_named(db_pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidInput, match="genetics"):
        await lots.create_lot(db_pool, **{**LOT_ARGS, "genetics": "Rouen"})
    with pytest.raises(InvalidInput, match="site_code"):
        await lots.create_lot(db_pool, **{**LOT_ARGS, "site_code": "landes"})
    with pytest.raises(LotNotFound, match="LOT_20990101_0001"):
        await lots.get_lot(db_pool, "LOT_20990101_0001")
    assert await db_pool.fetchval("SELECT count(*) FROM lots") == 0


async def test_list_and_active(db_pool: asyncpg.Pool) -> None:
    a, b, c = await new_lot(db_pool), await new_lot(db_pool), await new_lot(db_pool)
    await lots.close(db_pool, c)
    await lots.suspend(db_pool, b)
    assert [lot["id"] for lot in await lots.active_lots(db_pool)] == [a]
    assert {l["id"] for l in await lots.list_lots(db_pool)} == {a, b, c}
    assert [lot["id"] for lot in await lots.list_lots(db_pool, state="closed")] == [c]
    with pytest.raises(InvalidInput, match="state"):
        await lots.list_lots(db_pool, state="bogus")


async def test_lifecycle_end_to_end(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool, planned_duration_days=2, nb_ducks=10)
    doses = [(1, "morning", 200.0), (1, "evening", 210.0), (2, "morning", 460.0), (2, "evening", 490.0)]
    for day, moment, dose in doses:
        res = await gavage.record_feeding(db_pool, lot_id, day=day, moment=moment, planned_dose_g=dose,
                                          actual_dose_g=dose, mean_weight_g=4500 + 100 * day, live_ducks=10,
                                          mortality_pct=0.0, temperature_c=21.0, humidity_pct=65.0)
        assert res.new
    lot = await lots.get_lot(db_pool, lot_id)
    assert (lot["state"], lot["current_day"], lot["maize_total_per_duck_g"]) == ("gavage", 2, 1360.0)
    await lots.mark_ready(db_pool, lot_id)
    start = datetime.now(UTC) - timedelta(minutes=5)
    await assignments.assign_device(db_pool, lot_id, "ESP32_DEMO_LL_01", line="Ligne A", valid_from=start)
    rows = [{"device_id": "ESP32_DEMO_LL_01", "boot": 3, "seq": s, "measured_at": start + timedelta(seconds=s),
             "grade": "A", "score": 0.8, "weight_g": w} for s, w in ((1, 80.0), (2, 90.0))]
    stored = await samples.store_samples(db_pool, rows)
    assert stored.lot_ids == [lot_id, lot_id]
    lot = await inspection.close_inspection(db_pool, lot_id)
    assert lot["state"] == "inspected" and lot["sample_count"] == 2
    assert lot["mean_liver_weight_g"] == 85.0 and lot["itm"] == 16.0 and lot["itm_grade"] == "A"
    assert lot["grade_distribution"] == {"A": 2}
    open_ = await db_pool.fetchval("SELECT count(*) FROM device_assignments WHERE valid_to IS NULL")
    assert open_ == 0, "closing the inspection ends the device assignment"
    await lots.close(db_pool, lot_id, "shipped")
    tl = await timeline.timeline(db_pool, lot_id)
    assert [e["type"] for e in tl["events"]] == [
        "lot_created", "record_feeding", "gavage_feeding", "gavage_feeding", "gavage_feeding", "gavage_feeding",
        "mark_ready", "assign", "sqal_samples", "close_inspection", "close"]
