"""Gavage feedings: one row per (lot, day, moment); a re-sent feeding changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry.base import Executor, _conn, as_dict
from registry.errors import InvalidInput
from registry.lifecycle import append_event, check, lock_lot, transition

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
