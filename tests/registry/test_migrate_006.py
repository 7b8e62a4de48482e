"""Migration 006 converts a registry made by 001-005 with readings in it: every reading kept (key,
link, grades, features and raw payload decoded as before), spans and hour rows built from them, ids
going on from where they were, and the dedupe still refusing the old keys."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from registry import sample_hours, sample_payloads, samples
from registry.migrate import default_migrations_dir, migrate
from tests.fixtures.postgres import PgServer

DEV = "ESP32_MIG_LL_01"


@pytest.fixture
async def db_005(pg_server: PgServer, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    name = await pg_server.create_database(migrated=False)
    old = tmp_path / "migrations"
    old.mkdir()
    for f in sorted(default_migrations_dir().glob("00[1-5]_*.sql")):
        shutil.copy(f, old / f.name)
    pool = await asyncpg.create_pool(pg_server.url_for(name), min_size=1, max_size=3)
    try:
        async with pool.acquire() as conn:
            assert await migrate(conn, old) == [1, 2, 3, 4, 5]
        yield pool
    finally:
        await pool.close()
        await pg_server.drop_database(name)


async def test_a_005_registry_with_readings_migrates(db_005: asyncpg.Pool) -> None:
    pool = db_005
    await pool.execute("""INSERT INTO lots (id, farmer_id, farmer_name, site_code, genetics, nb_ducks,
                                            planned_duration_days, state)
                          VALUES ('LOT_20261101_0001', 'F1', 'Farm', 'LL', 'Mulard', 50, 12, 'inspecting')""")
    t0 = datetime(2026, 11, 1, 8, tzinfo=UTC)
    raw = {"v": 1, "device_id": DEV, "boot": 2, "seq": 0, "note": "as the 005 ingest stored it"}
    for seq in range(30):  # a month of readings across two months, linked and not
        await pool.execute(
            """INSERT INTO sqal_samples (device_id, boot, seq, lot_id, link_kind, requested_lot_id, link_issue,
                                         measured_at, received_at, clock_synced, score, grade, weight_g, alerts,
                                         features, raw)
               VALUES ($1, 2, $2, $3, $4, $3, $5, $6, $6, true, $7, $8, $9, $10, $11::json, $12::json)""",
            DEV, seq, "LOT_20261101_0001" if seq % 3 else None, "explicit" if seq % 3 else "none",
            None if seq % 3 else "no_assignment", t0 + timedelta(days=seq, minutes=seq), 0.5 + seq / 100,
            "A" if seq % 2 else "B", 500.0 + seq, ["warning:x"] if seq == 4 else [],
            json.dumps({"tof": {"i": seq}}), json.dumps({**raw, "seq": seq}))
    old = await pool.fetch("SELECT * FROM sqal_samples ORDER BY seq")
    async with pool.acquire() as conn:
        applied = await migrate(conn)
    assert applied and applied[0] == 6
    for o in old:
        r = await sample_payloads.reading(pool, DEV, 2, o["seq"])
        assert r is not None and r["id"] == o["id"]
        for k in ("lot_id", "link_kind", "requested_lot_id", "link_issue", "measured_at", "received_at", "score",
                  "grade", "weight_g", "alerts"):
            assert r[k] == o[k], k
        assert r["features"] == json.loads(o["features"]) and r["raw"] == json.loads(o["raw"])
    linked = [o for o in old if o["lot_id"]]
    summary = await sample_hours.lot_summary(pool, "LOT_20261101_0001")
    assert summary["samples"] == len(linked)
    assert summary["grades"] == {g: sum(1 for o in linked if o["grade"] == g) for g in ("A", "B")}
    # one span (seqs 0-4095): all its readings in the partition of its first day; the raw payloads by
    # the day each arrived; the old keys are still duplicates; ids go on
    assert {r["p"] for r in await pool.fetch("SELECT tableoid::regclass::text AS p FROM sqal_samples")} == {
        "sqal_samples_2026_11"}
    assert await pool.fetchval("SELECT count(DISTINCT tableoid) FROM sqal_sample_raw") == 30
    again = await samples.store_samples(pool, [{"device_id": DEV, "boot": 2, "seq": 5},
                                               {"device_id": DEV, "boot": 2, "seq": 29},
                                               {"device_id": DEV, "boot": 2, "seq": 30}])
    assert again.new == [False, False, True]
    new_id = await pool.fetchval("SELECT id FROM sqal_samples WHERE seq = 30")
    assert new_id > max(o["id"] for o in old)
    assert await pool.fetchval("SELECT to_regclass('sqal_samples_005')") is None
