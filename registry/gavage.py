"""Gavage feedings: one row per (lot, day, moment); a re-sent feeding changes nothing. The recent
feedings across lots feed the control panel's Gavage tab (GET /api/gavage/feedings)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry.base import Executor, _conn, as_dict
from registry.errors import InvalidInput, LotNotFound
from registry.lifecycle import ACTIVE_STATES, append_event, check, lock_lot, transition

MOMENTS = ("morning", "evening")


@dataclass(frozen=True)
class FeedingResult:
    lot: dict[str, Any]
    new: bool  # False: this (lot, day, moment) was already recorded; nothing changed


async def record_feeding(db: Executor, lot_id: str, *, day: int, moment: str, planned_dose_g: float,
                         actual_dose_g: float, mean_weight_g: float | None = None, live_ducks: int | None = None,
                         mortality_pct: float | None = None, temperature_c: float | None = None,
                         humidity_pct: float | None = None, simulated_at: datetime | None = None,
                         ready_for_slaughter: bool = False) -> FeedingResult:
    """Record one feeding (doses are grams per duck).

    The first feeding moves the lot created -> gavage; every new feeding adds its actual dose to
    the maize eaten per duck and updates day, mean weight, live ducks and mortality. A feeding
    already recorded for (lot, day, moment) is a no-op (new=False), whatever the lot's state.
    `ready_for_slaughter` (evening of the last day) also moves the lot gavage -> ready.
    """
    if moment not in MOMENTS:
        raise InvalidInput(f"moment must be 'morning' or 'evening', got {moment!r}")
    if not 1 <= day <= 60:
        raise InvalidInput(f"day must be between 1 and 60, got {day}")
    async with _conn(db) as conn, conn.transaction():
        lot = await lock_lot(conn, lot_id)
        seen = await conn.fetchval(
            "SELECT 1 FROM gavage_feedings WHERE lot_id = $1 AND day = $2 AND moment = $3", lot_id, day, moment)
        if seen:
            d = as_dict(lot)
            assert d is not None
            return FeedingResult(d, False)
        check(lot, "record_feeding")
        await conn.execute(
            """INSERT INTO gavage_feedings (lot_id, day, moment, planned_dose_g, actual_dose_g, mean_weight_g,
                   live_ducks, mortality_pct, temperature_c, humidity_pct, simulated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            lot_id, day, moment, planned_dose_g, actual_dose_g, mean_weight_g, live_ducks, mortality_pct,
            temperature_c, humidity_pct, simulated_at)
        if lot["state"] == "created":
            await transition(conn, lot_id, "record_feeding", set_sql="gavage_started_at = COALESCE($3, now())",
                             set_args=(simulated_at,), description="gavage started (first feeding)")
        row = await conn.fetchrow(
            """UPDATE lots SET maize_total_per_duck_g = maize_total_per_duck_g + $2,
                   current_day = GREATEST(current_day, $3),
                   mean_weight_g = COALESCE($4, mean_weight_g),
                   live_ducks = COALESCE($5, live_ducks),
                   mortality_pct = COALESCE($6, mortality_pct),
                   updated_at = now()
               WHERE id = $1 RETURNING *""",
            lot_id, actual_dose_g, day, mean_weight_g, live_ducks, mortality_pct)
        await append_event(
            conn, lot_id, "gavage", "gavage_feeding",
            {"day": day, "moment": moment, "planned_dose_g": planned_dose_g, "actual_dose_g": actual_dose_g,
             "mean_weight_g": mean_weight_g, "live_ducks": live_ducks, "mortality_pct": mortality_pct,
             "temperature_c": temperature_c, "humidity_pct": humidity_pct,
             "simulated_at": simulated_at.isoformat() if simulated_at else None},
            f"day {day} {moment}: {actual_dose_g:g} g per duck")
        if ready_for_slaughter:
            row = await transition(conn, lot_id, "mark_ready", set_sql="gavage_ended_at = COALESCE($3, now())",
                                   set_args=(simulated_at,), description="ready for slaughter: gavage finished")
    d = as_dict(row)
    assert d is not None
    return FeedingResult(d, True)


async def list_feedings(db: Executor, lot_id: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM gavage_feedings WHERE lot_id = $1 ORDER BY day, moment DESC", lot_id)
    return [d for d in map(as_dict, rows) if d is not None]


_FEEDING_COLS = """f.lot_id, f.day, f.moment, f.planned_dose_g, f.actual_dose_g, f.mean_weight_g, f.live_ducks,
                   f.mortality_pct, f.temperature_c, f.humidity_pct, f.simulated_at, f.received_at,
                   l.state AS lot_state, l.nb_ducks, l.planned_duration_days"""


async def recent_feedings(db: Executor, *, lot_id: str | None = None, active: bool | None = None,
                          since: datetime | None = None, until: datetime | None = None, limit: int = 50,
                          offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """Gavage feedings across lots, newest first (by the time the registry recorded them; within the
    same instant by lot, then latest day and moment first): (total matching, this page). Each row
    is the feeding with its lot's state, ducks and planned days. Filters: one lot (LotNotFound when
    there is no such lot); `active` true: lots in progress only (created, gavage, ready,
    inspecting), false: the others; `since` <= received_at < `until`."""
    if limit < 1 or offset < 0:
        raise InvalidInput(f"limit must be >= 1 and offset >= 0, got {limit} and {offset}")
    where = """($1::text IS NULL OR f.lot_id = $1) AND ($2::boolean IS NULL OR (l.state = ANY($3::text[])) = $2)
               AND ($4::timestamptz IS NULL OR f.received_at >= $4) AND ($5::timestamptz IS NULL OR f.received_at < $5)"""
    args = (lot_id, active, list(ACTIVE_STATES), since, until)
    async with _conn(db) as conn:
        if lot_id is not None and await conn.fetchval("SELECT 1 FROM lots WHERE id = $1", lot_id) is None:
            raise LotNotFound(lot_id)
        total = await conn.fetchval(
            f"SELECT count(*) FROM gavage_feedings f JOIN lots l ON l.id = f.lot_id WHERE {where}", *args)
        rows = await conn.fetch(
            f"""SELECT {_FEEDING_COLS} FROM gavage_feedings f JOIN lots l ON l.id = f.lot_id WHERE {where}
                ORDER BY f.received_at DESC, f.lot_id, f.day DESC, (f.moment = 'evening') DESC
                LIMIT $6 OFFSET $7""", *args, limit, offset)
    return int(total), [d for d in map(as_dict, rows) if d is not None]
