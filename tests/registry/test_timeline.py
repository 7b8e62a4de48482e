"""Timeline order, pagination, duration and counts."""

from __future__ import annotations

import asyncpg
import pytest

from registry import gavage, timeline
from registry.errors import LotNotFound
from tests.registry.helpers import new_lot


async def test_order_and_pagination(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool)
    for day in range(1, 5):
        for moment in ("morning", "evening"):
            await gavage.record_feeding(db_pool, lot_id, day=day, moment=moment, planned_dose_g=300,
                                        actual_dose_g=300)
    full = await timeline.timeline(db_pool, lot_id, limit=1000)
    assert full["total"] == 10  # created + gavage start + 8 feedings
    events = full["events"]
    assert [e["type"] for e in events[:2]] == ["lot_created", "record_feeding"]
    keys = [(e["at"], e["id"]) for e in events]
    assert keys == sorted(keys), "oldest first"
    assert [(e["data"]["day"], e["data"]["moment"]) for e in events[2:]] == [
        (d, m) for d in range(1, 5) for m in ("morning", "evening")]
    pages = []
    for offset in range(0, 12, 3):
        page = await timeline.timeline(db_pool, lot_id, limit=3, offset=offset)
        assert page["total"] == 10 and page["offset"] == offset
        pages.extend(page["events"])
    assert [e["id"] for e in pages] == [e["id"] for e in events]
    assert full["events_by_stage"] == {"registry": 1, "gavage": 9, "sqal": 0, "consumer": 0}
    assert full["feedings"] == 8 and full["samples"] == 0
    assert full["duration_s"] == (events[-1]["at"] - events[0]["at"]).total_seconds()
    assert full["duration_s"] > 0


async def test_unknown_lot(db_pool: asyncpg.Pool) -> None:
    with pytest.raises(LotNotFound):
        await timeline.timeline(db_pool, "LOT_20990101_0001")
