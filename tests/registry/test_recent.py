"""Reads across lots: the recent consumer feedback and gavage feedings (the control panel's tables),
lots by id, and the lot event log from a cursor on (the realtime feed), on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from registry import devices, feedback, gavage, live, lots
from registry.errors import InvalidInput, LotNotFound
from tests.gateway.ingest_support import uid
from tests.registry.helpers import lot_in_state, new_lot


async def test_recent_feedback_across_lots_newest_first(db_pool: asyncpg.Pool) -> None:
    a = await lot_in_state(db_pool, "inspected", device_id="ESP32_REC_LL_01")  # one sample graded A
    b = await lot_in_state(db_pool, "inspected", device_id="ESP32_REC_LL_02")
    pa = await feedback.create_product(db_pool, a, "03760123456784")
    posted = [await feedback.add_feedback(db_pool, product_id=pa["id"], rating=5, texture=4, flavor=5, freshness=3,
                                          comment="fondant", context="gift"),
              await feedback.add_feedback(db_pool, lot_id=b, rating=2),
              await feedback.add_feedback(db_pool, product_id=pa["id"], rating=3, context="home")]
    total, mean, rows = await feedback.recent_feedback(db_pool)
    assert total == 3 and mean == round((5 + 2 + 3) / 3, 2)
    assert [r["id"] for r in rows] == [f["id"] for f in reversed(posted)]
    first_posted = rows[-1]
    assert (first_posted["lot_id"], first_posted["product_id"], first_posted["product_gtin"]) == \
        (a, pa["id"], "03760123456784")
    assert (first_posted["rating"], first_posted["texture"], first_posted["flavor"], first_posted["freshness"],
            first_posted["context"], first_posted["comment"]) == (5, 4, 5, 3, "gift", "fondant")
    assert first_posted["sqal_grade"] == "A" and isinstance(first_posted["created_at"], datetime)
    on_lot = rows[1]
    assert on_lot["lot_id"] == b and on_lot["product_id"] is None and on_lot["product_gtin"] is None

    # one lot; pages; a time window
    total, mean, rows = await feedback.recent_feedback(db_pool, lot_id=a)
    assert (total, mean, [r["id"] for r in rows]) == (2, 4.0, [posted[2]["id"], posted[0]["id"]])
    total, _, rows = await feedback.recent_feedback(db_pool, limit=1, offset=1)
    assert total == 3 and [r["id"] for r in rows] == [posted[1]["id"]]
    assert (await feedback.recent_feedback(db_pool, offset=3))[2] == []
    created = {f["id"]: f["created_at"] for f in posted}
    total, _, rows = await feedback.recent_feedback(db_pool, since=created[posted[1]["id"]])
    assert {r["id"] for r in rows} == {posted[1]["id"], posted[2]["id"]} and total == 2
    total, mean, rows = await feedback.recent_feedback(db_pool, until=created[posted[1]["id"]])
    assert [r["id"] for r in rows] == [posted[0]["id"]] and (total, mean) == (1, 5.0)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert await feedback.recent_feedback(db_pool, since=later) == (0, None, [])
    with pytest.raises(LotNotFound, match="LOT_20990101_0001"):
        await feedback.recent_feedback(db_pool, lot_id="LOT_20990101_0001")
    with pytest.raises(InvalidInput, match="limit"):
        await feedback.recent_feedback(db_pool, limit=0)


async def test_recent_feedings_of_lots_in_progress(db_pool: asyncpg.Pool) -> None:
    a = await new_lot(db_pool, nb_ducks=40, planned_duration_days=12)
    b = await new_lot(db_pool)
    sim = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    await gavage.record_feeding(db_pool, a, day=1, moment="morning", planned_dose_g=200, actual_dose_g=205,
                                mean_weight_g=4500, live_ducks=40, mortality_pct=0, temperature_c=21.5,
                                humidity_pct=70, simulated_at=sim)
    await gavage.record_feeding(db_pool, b, day=1, moment="morning", planned_dose_g=200, actual_dose_g=199)
    await gavage.record_feeding(db_pool, a, day=1, moment="evening", planned_dose_g=210, actual_dose_g=212,
                                mean_weight_g=4550, live_ducks=39, mortality_pct=2.5)
    total, rows = await gavage.recent_feedings(db_pool)
    assert total == 3
    assert [(r["lot_id"], r["day"], r["moment"]) for r in rows] == [(a, 1, "evening"), (b, 1, "morning"),
                                                                    (a, 1, "morning")]
    first = rows[-1]
    assert (first["planned_dose_g"], first["actual_dose_g"], first["mean_weight_g"], first["live_ducks"],
            first["mortality_pct"], first["temperature_c"], first["humidity_pct"], first["simulated_at"]) == \
        (200.0, 205.0, 4500.0, 40, 0.0, 21.5, 70.0, sim)
    assert (first["lot_state"], first["nb_ducks"], first["planned_duration_days"]) == ("gavage", 40, 12)
    assert rows[0]["mortality_pct"] == 2.5 and rows[0]["live_ducks"] == 39

    total, rows = await gavage.recent_feedings(db_pool, lot_id=a, limit=1)
    assert total == 2 and [(r["day"], r["moment"]) for r in rows] == [(1, "evening")]
    total, rows = await gavage.recent_feedings(db_pool, lot_id=a, limit=1, offset=1)
    assert total == 2 and [(r["day"], r["moment"]) for r in rows] == [(1, "morning")]
    cut = rows[0]["received_at"]
    assert (await gavage.recent_feedings(db_pool, until=cut))[0] == 0
    assert (await gavage.recent_feedings(db_pool, since=cut))[0] == 3

    # a lot no longer in progress leaves the active list, stays in the inactive one and its own
    await lots.close(db_pool, b, "sold")
    assert [r["lot_id"] for r in (await gavage.recent_feedings(db_pool, active=True))[1]] == [a, a]
    assert [r["lot_id"] for r in (await gavage.recent_feedings(db_pool, active=False))[1]] == [b]
    (only_b,) = (await gavage.recent_feedings(db_pool, lot_id=b))[1]
    assert only_b["lot_state"] == "closed"
    with pytest.raises(LotNotFound):
        await gavage.recent_feedings(db_pool, lot_id="LOT_20990101_0001")


async def test_get_lots_counts_samples_while_they_arrive(db_pool: asyncpg.Pool) -> None:
    inspecting = await lot_in_state(db_pool, "inspecting", device_id="ESP32_GL_LL_01")
    created = await new_lot(db_pool)
    got = await lots.get_lots(db_pool, [inspecting, created, "LOT_20990101_0001", created])
    assert [x["id"] for x in got] == sorted([inspecting, created])  # unknown ids left out, each once
    for x in got:
        assert x == await lots.get_lot(db_pool, x["id"])
    assert await lots.get_lots(db_pool, []) == []


async def test_lot_events_after_a_cursor(db_pool: asyncpg.Pool) -> None:
    start = await live.last_lot_event_id(db_pool)
    lot_id = await new_lot(db_pool)
    await gavage.record_feeding(db_pool, lot_id, day=1, moment="morning", planned_dose_g=200, actual_dose_g=201)
    events = await live.lot_events_after(db_pool, start)
    assert [(e[1], e[2]) for e in events] == [(lot_id, "lot_created"), (lot_id, "record_feeding"),
                                              (lot_id, "gavage_feeding")]
    assert [e[0] for e in events] == sorted(e[0] for e in events)
    assert await live.last_lot_event_id(db_pool) == events[-1][0]
    assert await live.lot_events_after(db_pool, start, limit=1) == events[:1]
    assert await live.lot_events_after(db_pool, events[-1][0]) == []


async def test_devices_by_id(db_pool: asyncpg.Pool) -> None:
    from registry.devices import DeviceTouch, get_device, touch_devices

    a, b = uid("ESP32_BYID"), uid("ESP32_BYID")
    now = datetime.now(UTC)
    await touch_devices(db_pool, {a: DeviceTouch(now, now, stored=2), b: DeviceTouch(now, now, duplicates=1)})
    got = await devices.devices_by_id(db_pool, [b, a, "ESP32_NONE_01"])
    assert [d["id"] for d in got] == sorted([a, b])
    assert got == [await get_device(db_pool, d["id"]) for d in got]
    assert await devices.devices_by_id(db_pool, []) == []

