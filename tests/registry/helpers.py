"""Bring lots to a given state through the real operations (no SQL shortcuts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from registry import assignments, feedback, gavage, inspection, lots, samples
from registry.gs1 import make_gtin

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


async def inspected_lot(pool: asyncpg.Pool, grades: list[str], device: str = "ESP32_CONS_LL_01") -> str:
    """A lot inspected with one sample of each of `grades`, by `device`."""
    lot_id = await new_lot(pool)
    await gavage.record_feeding(pool, lot_id, day=1, moment="morning", planned_dose_g=200, actual_dose_g=8000,
                                ready_for_slaughter=False)
    await lots.mark_ready(pool, lot_id)
    await assignments.assign_device(pool, lot_id, device, valid_from=datetime.now(UTC) - timedelta(seconds=10))
    now = datetime.now(UTC)
    await samples.store_samples(pool, [{"device_id": device, "boot": 1, "seq": i, "measured_at": now - timedelta(seconds=5),
                                        "grade": g, "score": 0.8, "weight_g": 500.0} for i, g in enumerate(grades)])
    await inspection.close_inspection(pool, lot_id)
    return lot_id


async def products_of(pool: asyncpg.Pool, lot_id: str, n: int = 2) -> list[dict[str, Any]]:
    """`n` products of the lot, GTINs 1..n of a test company prefix."""
    return [await feedback.create_product(pool, lot_id, make_gtin("376000000", i)) for i in range(1, n + 1)]


async def stage_pages(conn: asyncpg.Connection) -> int:
    """Pages of the ingest writers' staging table in this session (registry.samples.STAGE)."""
    return int(await conn.fetchval(f"SELECT pg_relation_size('{samples.STAGE}') / 8192"))
