"""store_samples: batch dedupe on (device_id, boot, seq) and linking in SQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqalfw import codec

from registry import assignments, blobs, sample_payloads, samples
from registry.errors import InvalidInput
from tests.registry.helpers import lot_in_state

DEV = "ESP32_DEMO_LL_01"


def row(seq: int, **kw: Any) -> dict[str, Any]:
    return {"device_id": DEV, "boot": 7, "seq": seq, "grade": "A", "score": 0.81, "weight_g": 600.0,
            "volume_cm3": 633.6, "alerts": [], "features": {"tof": {"volume_cm3": 633.6}}, "raw": {"v": 1}, **kw}


async def test_dedupe_new_and_duplicates(db_pool: asyncpg.Pool) -> None:
    first = await samples.store_samples(db_pool, [row(1), row(2), row(3)])
    assert first.new == [True, True, True] and first.duplicate_count == 0
    again = await samples.store_samples(db_pool, [row(2), row(4), row(3), row(4)])
    assert again.new == [False, True, False, False], "re-sent and in-batch repeats are duplicates"
    assert await db_pool.fetchval("SELECT count(*) FROM sqal_samples") == 4
    other_boot = await samples.store_samples(db_pool, [row(1, boot=8)])
    assert other_boot.new == [True], "a new boot restarts seq: a different key"


async def test_fields_are_stored(db_pool: asyncpg.Pool) -> None:
    await samples.store_samples(db_pool, [row(1, alerts=["oxidation"], device_grade="B", device_score=0.7)])
    r = await sample_payloads.reading(db_pool, DEV, 7, 1)
    assert r is not None
    assert (r["grade"], r["device_grade"], r["alerts"]) == ("A", "B", ["oxidation"])
    assert r["features"] == {"tof": {"volume_cm3": 633.6}} and r["raw"] == {"v": 1}
    assert r["link_kind"] == "none" and r["link_issue"] == "no_assignment"


async def test_linking_explicit_unknown_assignment_late_and_none(db_pool: asyncpg.Pool) -> None:
    lot_a = await lot_in_state(db_pool, "ready")
    lot_b = await lot_in_state(db_pool, "ready")
    explicit = await lot_in_state(db_pool, "ready")
    t0 = datetime.now(UTC) - timedelta(hours=2)
    t1 = t0 + timedelta(hours=1)
    await assignments.assign_device(db_pool, lot_a, DEV, line="Ligne A", valid_from=t0)
    await assignments.assign_device(db_pool, lot_b, DEV, line="Ligne A", valid_from=t1)  # closes A's at t1
    assert [(a["lot_id"], a["valid_to"]) for a in await assignments.list_assignments(db_pool, device_id=DEV)] == [
        (lot_a, t1), (lot_b, None)]
    batch = [
        row(1, measured_at=t0 + timedelta(minutes=30)),         # late reading from A's interval
        row(2, measured_at=t1 + timedelta(minutes=1)),          # B's interval
        row(3, measured_at=t0 - timedelta(minutes=1)),          # before any assignment
        row(4, lot_id=explicit, measured_at=t0 + timedelta(minutes=5)),  # explicit id wins
        row(5, lot_id="LOT_20000101_0001", measured_at=t1 + timedelta(minutes=2)),  # unknown id: kept, flagged
        row(6, measured_at=datetime(2000, 1, 1, tzinfo=UTC), clock_synced=False),  # by received_at -> B
    ]
    res = await samples.store_samples(db_pool, batch)
    assert res.new == [True] * 6
    assert res.lot_ids == [lot_a, lot_b, None, explicit, None, lot_b]
    assert res.link_kinds == ["assignment", "assignment", "none", "explicit", "none", "assignment"]
    assert res.link_issues == [None, None, "no_assignment", None, "unknown_lot", None]
    kept = await db_pool.fetchrow("SELECT lot_id, requested_lot_id FROM sqal_samples WHERE seq = 5")
    assert (kept["lot_id"], kept["requested_lot_id"]) == (None, "LOT_20000101_0001")


async def test_one_aggregated_event_per_lot_per_batch(db_pool: asyncpg.Pool) -> None:
    lot_a = await lot_in_state(db_pool, "ready")
    lot_b = await lot_in_state(db_pool, "ready")
    now = datetime.now(UTC)
    batch = [row(i, lot_id=lot_a, grade="A" if i % 2 else "B", measured_at=now) for i in range(1, 6)]
    batch += [row(i, lot_id=lot_b, grade="C", measured_at=now) for i in range(6, 8)]
    await samples.store_samples(db_pool, batch)
    await samples.store_samples(db_pool, batch)  # all duplicates: no event at all
    events = await db_pool.fetch("SELECT lot_id, data FROM lot_events WHERE type = 'sqal_samples' ORDER BY lot_id")
    got = {e["lot_id"]: json.loads(e["data"]) for e in events}
    assert len(events) == 2
    assert got[lot_a]["count"] == 5 and got[lot_a]["grades"] == {"A": 3, "B": 2}
    assert got[lot_b]["count"] == 2 and got[lot_b]["grades"] == {"C": 2} and got[lot_b]["devices"] == [DEV]


async def test_bad_row_is_named_and_nothing_stored(db_pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidInput, match="row 1.*seq"):
        await samples.store_samples(db_pool, [row(1), {"device_id": DEV, "boot": 1}])
    with pytest.raises(InvalidInput, match="alerts"):
        await samples.store_samples(db_pool, [row(1, alerts="critical")])
    assert await db_pool.fetchval("SELECT count(*) FROM sqal_samples") == 0
    assert (await samples.store_samples(db_pool, [])).new == []


async def test_overlapping_assignment_refused(db_pool: asyncpg.Pool) -> None:
    from registry.errors import AssignmentConflict

    lot_a = await lot_in_state(db_pool, "ready")
    lot_b = await lot_in_state(db_pool, "ready")
    t0 = datetime.now(UTC)
    await assignments.assign_device(db_pool, lot_a, DEV, valid_from=t0, valid_to=t0 + timedelta(hours=1))
    with pytest.raises(AssignmentConflict, match=lot_a):
        await assignments.assign_device(db_pool, lot_b, DEV, valid_from=t0 + timedelta(minutes=10))
    assert (await db_pool.fetchval("SELECT state FROM lots WHERE id = $1", lot_b)) == "ready"


async def test_features_and_raw_are_compact_blobs_decoded_on_demand(db_pool: asyncpg.Pool) -> None:
    # Migration 006: features and the raw payload are stored as blobs (registry/blobs.py): a contract
    # sample in its binary form deflated with a preset dictionary, features as deflated JSON text.
    types = dict(await db_pool.fetch("""SELECT column_name, data_type FROM information_schema.columns
                                        WHERE table_name IN ('sqal_samples', 'sqal_sample_raw')
                                          AND column_name IN ('features_z', 'payload')"""))
    assert types == {"features_z": "bytea", "payload": "bytea"}
    sample = {"v": 1, "device_id": DEV, "boot": 7, "seq": 1, "ts": 1796532273398, "synced": True, "fw": "0.1.0",
              "tof": {"res": 4, "dist": list(range(50, 66)), "st": [5] * 16},
              "spec": {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150, "F8": 750,
                       "CLEAR": 6500, "NIR": 600, "gain": 4.0, "atime": 29, "astep": 599, "sat": False},
              "q": {"score": 0.812, "grade": "A"}}
    text = samples.JsonText('{"tof":{"volume_cm3":633.6},"clock":{"flags":[]}}')
    await samples.store_samples(db_pool, [row(1, features=text, raw=sample), row(2, raw={"not": "a sample"})])
    first = await sample_payloads.reading(db_pool, DEV, 7, 1)
    assert first is not None and first["features"] == json.loads(text) and first["raw"] == sample
    payload = await db_pool.fetchval("SELECT payload FROM sqal_sample_raw WHERE id = $1", first["id"])
    assert payload[0] == blobs.RAW_DEFLATE and len(payload) < len(codec.encode_sample_bin(sample))
    second = await sample_payloads.reading(db_pool, DEV, 7, 2)
    assert second is not None and second["raw"] == {"not": "a sample"}  # kept as its JSON
    assert await sample_payloads.reading(db_pool, DEV, 7, 3) is None