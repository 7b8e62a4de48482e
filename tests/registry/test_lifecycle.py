"""Every (state, step) pair: allowed steps land in the documented state, refused ones change nothing."""

from __future__ import annotations

import itertools

import asyncpg
import pytest

from registry import assignments, gavage, inspection, lots
from registry.errors import IllegalTransition
from registry.lifecycle import STATES, STEPS, TRANSITIONS
from tests.registry.helpers import lot_in_state, snapshot

EXPECTED_TARGET = {
    ("created", "record_feeding"): "gavage", ("gavage", "record_feeding"): "gavage",
    ("gavage", "mark_ready"): "ready",
    ("ready", "assign"): "inspecting", ("inspecting", "assign"): "inspecting",
    ("inspecting", "close_inspection"): "inspected",
    **{(s, "suspend"): "suspended" for s in ("created", "gavage", "ready", "inspecting")},
    **{(s, "close"): "closed" for s in STATES if s != "closed"},
}


def test_table_matches_documented_lifecycle() -> None:
    table = {(s, step) for step, (froms, _) in TRANSITIONS.items() for s in froms if step != "resume"}
    assert table == set(EXPECTED_TARGET)
    assert TRANSITIONS["resume"][0] == ("suspended",)


async def do_step(pool: asyncpg.Pool, lot_id: str, step: str) -> None:
    if step == "record_feeding":
        await gavage.record_feeding(pool, lot_id, day=5, moment="evening", planned_dose_g=300, actual_dose_g=310)
    elif step == "mark_ready":
        await lots.mark_ready(pool, lot_id)
    elif step == "assign":
        await assignments.assign_device(pool, lot_id, "ESP32_OTHER_LS_01")
    elif step == "close_inspection":
        await inspection.close_inspection(pool, lot_id)
    elif step == "suspend":
        await lots.suspend(pool, lot_id, "why")
    elif step == "resume":
        await lots.resume(pool, lot_id)
    elif step == "close":
        await lots.close(pool, lot_id)
    else:  # pragma: no cover
        raise AssertionError(step)


@pytest.mark.parametrize("state,step", list(itertools.product(STATES, STEPS)))
async def test_every_state_step_pair(db_pool: asyncpg.Pool, state: str, step: str) -> None:
    lot_id = await lot_in_state(db_pool, state)
    assert (await lots.get_lot(db_pool, lot_id))["state"] == state
    before = await snapshot(db_pool, lot_id)
    if step == "resume" and state == "suspended":
        await do_step(db_pool, lot_id, step)
        assert (await lots.get_lot(db_pool, lot_id))["state"] == "created"  # back where it was
    elif (state, step) in EXPECTED_TARGET:
        await do_step(db_pool, lot_id, step)
        assert (await lots.get_lot(db_pool, lot_id))["state"] == EXPECTED_TARGET[(state, step)]
        assert (await snapshot(db_pool, lot_id))[1] > before[1], "an applied step records an event"
    else:
        with pytest.raises(IllegalTransition) as err:
            await do_step(db_pool, lot_id, step)
        msg = str(err.value)
        assert lot_id in msg and f"'{state}'" in msg and step in msg
        assert await snapshot(db_pool, lot_id) == before, "a refused step must change nothing"


async def test_resume_returns_to_the_suspended_state(db_pool: asyncpg.Pool) -> None:
    lot_id = await lot_in_state(db_pool, "ready")
    await lots.suspend(db_pool, lot_id, "vet check")
    lot = await lots.get_lot(db_pool, lot_id)
    assert (lot["state"], lot["suspended_from"]) == ("suspended", "ready")
    lot = await lots.resume(db_pool, lot_id)
    assert (lot["state"], lot["suspended_from"]) == ("ready", None)


async def test_events_are_append_only(db_pool: asyncpg.Pool) -> None:
    lot_id = await lot_in_state(db_pool, "created")
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await db_pool.execute("UPDATE lot_events SET description = 'x' WHERE lot_id = $1", lot_id)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await db_pool.execute("DELETE FROM lot_events WHERE lot_id = $1", lot_id)
    assert await db_pool.fetchval("SELECT count(*) FROM lot_events WHERE lot_id = $1", lot_id) == 1
