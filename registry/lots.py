"""Lots: creation with collision-free ids, reads, and the simple lifecycle steps."""

from __future__ import annotations

import re
from typing import Any

from registry.assignments import end_assignments
from registry.base import Executor, _conn, _d, as_dict
from registry.errors import InvalidInput, LotNotFound
from registry.lifecycle import ACTIVE_STATES, STATES, append_event, transition
from registry.sample_hours import lot_sample_count

# ASCII digits only: \d would also take other scripts' digits
LOT_ID_PATTERN = r"^LOT_[0-9]{8}_[0-9]{4,6}$"
LOT_ID_RE = re.compile(LOT_ID_PATTERN)
SITE_RE = re.compile(r"^[A-Z]{2}$")
GENETICS = ("Mulard", "Barbarie", "Pekin")
# States in which samples may still arrive: the lot's sample count is counted live, not the stored column.
_RUNNING_COUNT = ("created", "gavage", "ready", "inspecting", "suspended")


def normalize_genetics(value: str) -> str:
    for g in GENETICS:
        if value.strip().lower() == g.lower():
            return g
    raise InvalidInput(f"genetics must be one of {', '.join(GENETICS)}, got {value!r}")


def format_lot_id(day: str, n: int) -> str:
    """LOT_YYYYMMDD_XXXX; past 9999 lots in a day the suffix widens (5, then 6 digits)."""
    if n > 999_999:
        raise InvalidInput(f"more than 999999 lots on {day}: lot id space for the day exhausted")
    return f"LOT_{day}_{n:04d}"


async def create_lot(db: Executor, *, farmer_id: str, farmer_name: str, site_code: str, genetics: str,
                     nb_ducks: int, planned_duration_days: int, quality_profile: str | None = None) -> dict[str, Any]:
    """Create a lot in state `created` with the next id of the (UTC) day and a `lot_created` event.

    The per-day counter row is bumped with INSERT .. ON CONFLICT DO UPDATE RETURNING in the same
    transaction as the lot insert: concurrent creations serialise on that row and never collide,
    and ids keep counting after a restart because the counter lives in the database.
    """
    genetics = normalize_genetics(genetics)
    if not SITE_RE.match(site_code):
        raise InvalidInput(f"site_code must be two capital letters (e.g. LL), got {site_code!r}")
    async with _conn(db) as conn, conn.transaction():
        day, n = await conn.fetchrow(
            """INSERT INTO lot_id_counters AS c (day, last) VALUES ((now() AT TIME ZONE 'UTC')::date, 1)
               ON CONFLICT (day) DO UPDATE SET last = c.last + 1
               RETURNING to_char(day, 'YYYYMMDD'), last""")
        lot_id = format_lot_id(day, n)
        row = await conn.fetchrow(
            """INSERT INTO lots (id, farmer_id, farmer_name, site_code, genetics, nb_ducks,
                                 planned_duration_days, quality_profile, live_ducks)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $6) RETURNING *""",
            lot_id, farmer_id, farmer_name, site_code, genetics, nb_ducks, planned_duration_days, quality_profile)
        await append_event(conn, lot_id, "registry", "lot_created",
                           {"farmer_id": farmer_id, "farmer_name": farmer_name, "site_code": site_code,
                            "genetics": genetics, "nb_ducks": nb_ducks,
                            "planned_duration_days": planned_duration_days},
                           f"lot created for {farmer_name} ({site_code}), {nb_ducks} {genetics} ducks")
    result = as_dict(row)
    assert result is not None
    return result


async def get_lot(db: Executor, lot_id: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT * FROM lots WHERE id = $1", lot_id)
    if row is None:
        raise LotNotFound(lot_id)
    lot = as_dict(row)
    assert lot is not None
    if lot["state"] in _RUNNING_COUNT:
        # Running count while samples arrive; the stored column is final once inspected.
        lot["sample_count"] = await lot_sample_count(db, lot_id)
    return lot


async def get_lots(db: Executor, lot_ids: list[str]) -> list[dict[str, Any]]:
    """The lots among `lot_ids` that exist, by id, each as `get_lot` gives it (the running sample
    count while samples can still arrive): one query for many lots (the realtime feed)."""
    if not lot_ids:
        return []
    rows = await db.fetch(
        """SELECT l.*, CASE WHEN l.state = ANY($2::text[])
                            THEN (SELECT COALESCE(sum(h.samples), 0) FROM sqal_sample_hours h WHERE h.lot_id = l.id)
                            ELSE l.sample_count END AS running_sample_count
           FROM lots l WHERE l.id = ANY($1::text[]) ORDER BY l.id""", sorted(set(lot_ids)), list(_RUNNING_COUNT))
    out = []
    for r in rows:
        d = as_dict(r)
        assert d is not None
        d["sample_count"] = int(d.pop("running_sample_count"))
        out.append(d)
    return out


async def list_lots(db: Executor, *, state: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    if state is not None and state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}, got {state!r}")
    rows = await db.fetch(
        "SELECT * FROM lots WHERE ($1::text IS NULL OR state = $1) ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
        state, limit, offset)
    return [d for d in map(as_dict, rows) if d is not None]


async def active_lots(db: Executor) -> list[dict[str, Any]]:
    """Lots still in progress: created, gavage, ready or inspecting (oldest first)."""
    rows = await db.fetch("SELECT * FROM lots WHERE state = ANY($1::text[]) ORDER BY created_at, id", list(ACTIVE_STATES))
    return [d for d in map(as_dict, rows) if d is not None]


async def mark_ready(db: Executor, lot_id: str) -> dict[str, Any]:
    """gavage -> ready: the hand-off from gavage to SQAL (ends the gavage period)."""
    async with _conn(db) as conn, conn.transaction():
        row = await transition(conn, lot_id, "mark_ready", set_sql="gavage_ended_at = COALESCE(gavage_ended_at, now())",
                               description="ready for slaughter: gavage finished")
    return _d(row)


async def suspend(db: Executor, lot_id: str, reason: str = "") -> dict[str, Any]:
    async with _conn(db) as conn, conn.transaction():
        row = await transition(conn, lot_id, "suspend", data={"reason": reason},
                               description=f"suspended{': ' + reason if reason else ''}")
    return _d(row)


async def resume(db: Executor, lot_id: str) -> dict[str, Any]:
    async with _conn(db) as conn, conn.transaction():
        row = await transition(conn, lot_id, "resume")
    return _d(row)


async def close(db: Executor, lot_id: str, reason: str = "") -> dict[str, Any]:
    """Any state but closed -> closed (terminal). Open device assignments of the lot end now."""
    async with _conn(db) as conn, conn.transaction():
        row = await transition(conn, lot_id, "close", data={"reason": reason}, set_sql="closed_at = now()",
                               description=f"closed{': ' + reason if reason else ''}")
        await end_assignments(conn, lot_id)
    return _d(row)
