"""Bring lots to a given state through the real operations (no SQL shortcuts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from registry import assignments, gavage, inspection, lots, samples

LOT_ARGS: dict[str, Any] = {"farmer_id": "G042", "farmer_name": "Jean Dupont", "site_code": "LL", "genetics": "Mulard",
                                "nb_ducks": 50, "planned_duration_days": 12}


async def new_lot(pool: asyncpg.Pool, **over: Any) -> str:
    return str((await lots.create_lot(pool, **{**LOT_ARGS, **over}))["id"])


async def lot_in_state(pool: asyncpg.Pool, state: str, device_id: str = "ESP32_TEST_LL_01") -> str:
    lot_id = await new_lot(pool)
    if state == "created":
        return lot_id
    if state == "suspended":
        await lots.suspend(pool, lot_id, "test")
        return lot_id
    if state == "closed":
        await lots.close(pool, lot_id, "test")
        return lot_id
    await gavage.record_feeding(pool, lot_id, day=1, moment="morning", planned_dose_g=200, actual_dose_g=201)
    if state == "gavage":
        return lot_id
    await lots.mark_ready(pool, lot_id)
    if state == "ready":
        return lot_id
    await assignments.assign_device(pool, lot_id, device_id)
    if state == "inspecting":
        return lot_id
    assert state == "inspected", state
    await samples.store_samples(pool, [{"device_id": device_id, "boot": 1, "seq": 1, "lot_id": lot_id,
                                        "measured_at": datetime.now(UTC) - timedelta(seconds=1),
                                        "grade": "A", "score": 0.8, "weight_g": 600.0}])
    await inspection.close_inspection(pool, lot_id)
    return lot_id


async def snapshot(pool: asyncpg.Pool, lot_id: str) -> tuple[Any, ...]:
    """Everything a refused step must leave unchanged."""
    lot = await pool.fetchrow("SELECT * FROM lots WHERE id = $1", lot_id)
    n_events = await pool.fetchval("SELECT count(*) FROM lot_events WHERE lot_id = $1", lot_id)
    n_feed = await pool.fetchval("SELECT count(*) FROM gavage_feedings WHERE lot_id = $1", lot_id)
    n_assign = await pool.fetchval("SELECT count(*) FROM device_assignments WHERE lot_id = $1", lot_id)
    return tuple(lot.items()), n_events, n_feed, n_assign
