"""Gavage feedings: accumulation, idempotence, ready flag."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from registry import gavage, lots
from registry.errors import InvalidInput
from tests.registry.helpers import new_lot


async def test_resent_feeding_changes_nothing(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool)
    kw = {"day": 1, "moment": "morning", "planned_dose_g": 200.0, "actual_dose_g": 205.5, "mean_weight_g": 4510.0,
              "live_ducks": 50, "mortality_pct": 0.0}
    first = await gavage.record_feeding(db_pool, lot_id, **kw)  # type: ignore[arg-type]
    events = await db_pool.fetchval("SELECT count(*) FROM lot_events WHERE lot_id = $1", lot_id)
    again = await gavage.record_feeding(db_pool, lot_id, **kw)  # type: ignore[arg-type]
    assert first.new and not again.new
    assert again.lot["maize_total_per_duck_g"] == 205.5
    assert await db_pool.fetchval("SELECT count(*) FROM lot_events WHERE lot_id = $1", lot_id) == events
    assert await db_pool.fetchval("SELECT count(*) FROM gavage_feedings WHERE lot_id = $1", lot_id) == 1


async def test_maize_accumulates_and_progress_follows(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool)
    sim = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    await gavage.record_feeding(db_pool, lot_id, day=1, moment="morning", planned_dose_g=200, actual_dose_g=198.4,
                                mean_weight_g=4480, live_ducks=50, mortality_pct=0, simulated_at=sim)
    await gavage.record_feeding(db_pool, lot_id, day=1, moment="evening", planned_dose_g=210, actual_dose_g=212.6,
                                mean_weight_g=4550, live_ducks=49, mortality_pct=2.0)
    lot = await lots.get_lot(db_pool, lot_id)
    assert lot["maize_total_per_duck_g"] == 411.0
    assert (lot["current_day"], lot["mean_weight_g"], lot["live_ducks"], lot["mortality_pct"]) == (1, 4550.0, 49, 2.0)
    assert lot["gavage_started_at"] == sim, "simulated time is kept as the gavage start"


async def test_ready_flag_on_last_evening(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool, planned_duration_days=1)
    await gavage.record_feeding(db_pool, lot_id, day=1, moment="morning", planned_dose_g=200, actual_dose_g=200)
    res = await gavage.record_feeding(db_pool, lot_id, day=1, moment="evening", planned_dose_g=490,
                                      actual_dose_g=490, ready_for_slaughter=True)
    assert res.lot["state"] == "ready" and res.lot["gavage_ended_at"] is not None


async def test_bad_moment_and_day(db_pool: asyncpg.Pool) -> None:
    lot_id = await new_lot(db_pool)
    with pytest.raises(InvalidInput, match="moment"):
        await gavage.record_feeding(db_pool, lot_id, day=1, moment="noon", planned_dose_g=1, actual_dose_g=1)
    with pytest.raises(InvalidInput, match="day"):
        await gavage.record_feeding(db_pool, lot_id, day=0, moment="morning", planned_dose_g=1, actual_dose_g=1)
    assert (await lots.get_lot(db_pool, lot_id))["state"] == "created"
