"""The lot lifecycle, enforced in one place.

    created --record_feeding--> gavage --mark_ready--> ready --assign--> inspecting --close_inspection--> inspected
       \\________________________________ suspend ______________________________/
                                   suspended --resume--> (the state it was suspended from)
    any state except closed --close--> closed (terminal)

`transition()` locks the lot row, checks the step against TRANSITIONS, updates the state and
appends the event in the caller's transaction. A refused step raises IllegalTransition before
anything is written, so a refusal changes nothing (not even an event).
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from registry.errors import IllegalTransition, LotNotFound

STATES = ("created", "gavage", "ready", "inspecting", "inspected", "suspended", "closed")
ACTIVE_STATES = ("created", "gavage", "ready", "inspecting")
SUSPENDABLE = ("created", "gavage", "ready", "inspecting")

# step -> (states it is allowed from, target state; None = back to suspended_from)
TRANSITIONS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "record_feeding": (("created", "gavage"), "gavage"),
    "mark_ready": (("gavage",), "ready"),
    "assign": (("ready", "inspecting"), "inspecting"),
    "close_inspection": (("inspecting",), "inspected"),
    "suspend": (SUSPENDABLE, "suspended"),
    "resume": (("suspended",), None),
    "close": (("created", "gavage", "ready", "inspecting", "inspected", "suspended"), "closed"),
}
STEPS = tuple(TRANSITIONS)

STAGE_OF_STEP = {
    "record_feeding": "gavage", "mark_ready": "gavage", "assign": "sqal", "close_inspection": "sqal",
    "suspend": "registry", "resume": "registry", "close": "registry",
}


def allowed(step: str, state: str) -> bool:
    return state in TRANSITIONS[step][0]


def target_state(step: str, state: str, suspended_from: str | None) -> str:
    target = TRANSITIONS[step][1]
    if target is None:
        assert suspended_from is not None
        return suspended_from
    return target


async def lock_lot(conn: asyncpg.Connection, lot_id: str) -> asyncpg.Record:
    """The lot row, locked until the end of the transaction (FOR NO KEY UPDATE does not block
    the foreign-key checks of concurrent sample/event inserts)."""
    row = await conn.fetchrow("SELECT * FROM lots WHERE id = $1 FOR NO KEY UPDATE", lot_id)
    if row is None:
        raise LotNotFound(lot_id)
    return row


def check(lot: asyncpg.Record, step: str) -> str:
    """Raise IllegalTransition unless `step` is allowed; return the target state."""
    if step not in TRANSITIONS:
        raise ValueError(f"unknown lifecycle step {step!r}")
    if not allowed(step, lot["state"]):
        raise IllegalTransition(lot["id"], lot["state"], step, TRANSITIONS[step][0])
    return target_state(step, lot["state"], lot["suspended_from"])


async def append_event(conn: asyncpg.Connection, lot_id: str, stage: str, type_: str,
                       data: dict[str, Any] | None = None, description: str = "") -> int:
    return int(await conn.fetchval(
        "INSERT INTO lot_events (lot_id, stage, type, data, description) VALUES ($1, $2, $3, $4::text::jsonb, $5) RETURNING id",
        lot_id, stage, type_, json.dumps(data or {}, default=str), description))


async def transition(conn: asyncpg.Connection, lot_id: str, step: str, *, data: dict[str, Any] | None = None,
                     description: str = "", set_sql: str = "", set_args: tuple[Any, ...] = ()) -> asyncpg.Record:
    """Apply `step` to the lot inside the caller's transaction and return the updated row.

    `set_sql` adds assignments to the UPDATE (e.g. "inspected_at = now()"), with `$3..` args.
    """
    lot = await lock_lot(conn, lot_id)
    new_state = check(lot, step)
    suspended_from = lot["state"] if step == "suspend" else None
    extra = f", {set_sql}" if set_sql else ""
    row = await conn.fetchrow(
        f"UPDATE lots SET state = $2, suspended_from = ${3 + len(set_args)}, updated_at = now(){extra} "
        "WHERE id = $1 RETURNING *",
        lot_id, new_state, *set_args, suspended_from)
    event_data = {"from": lot["state"], "to": new_state, **(data or {})}
    await append_event(conn, lot_id, STAGE_OF_STEP[step], step, event_data,
                       description or f"{step.replace('_', ' ')}: {lot['state']} -> {new_state}")
    return row
