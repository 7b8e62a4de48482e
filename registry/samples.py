"""SQAL samples, stored in batches.

`store_samples` is the ingest hot path: one COPY into a session temp table, then one statement
that links every row to its lot, inserts with ON CONFLICT (device_id, boot, seq) DO NOTHING,
and writes one aggregated `sqal_samples` event per lot of the batch. Linking, in SQL:

1. the row names a lot (explicit `lot_id`) that exists -> link_kind 'explicit';
   it names an unknown lot -> kept unlinked, requested_lot_id kept, link_issue 'unknown_lot'
   (no fallback to the assignment: the device said something else, a human must look);
2. else the device's assignment whose [valid_from, valid_to) covers the row's measured_at
   (received_at when the device clock is not synced) -> 'assignment' (late readings included);
3. else kept unlinked, link_issue 'no_assignment'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from registry.base import Executor, _conn, as_dict
from registry.errors import InvalidInput, LotNotFound

_COLUMNS = ("ord", "device_id", "boot", "seq", "lot_id", "measured_at", "received_at", "clock_synced", "score",
            "grade", "device_score", "device_grade", "weight_g", "volume_cm3", "alerts", "features", "raw")

_TEMP = """CREATE TEMP TABLE IF NOT EXISTS sqal_samples_in (
    ord integer, device_id text, boot bigint, seq bigint, lot_id text, measured_at timestamptz,
    received_at timestamptz, clock_synced boolean, score real, grade text, device_score real,
    device_grade text, weight_g real, volume_cm3 real, alerts text[], features text, raw text
) ON COMMIT DELETE ROWS"""

_STORE = """
WITH src AS (
    SELECT DISTINCT ON (device_id, boot, seq) i.*,
           CASE WHEN i.clock_synced AND i.measured_at IS NOT NULL THEN i.measured_at ELSE i.received_at END AS link_at
    FROM sqal_samples_in i ORDER BY device_id, boot, seq, ord
), linked AS (
    SELECT s.*, l.id AS known_lot, a.lot_id AS assigned_lot
    FROM src s
    LEFT JOIN lots l ON l.id = s.lot_id
    LEFT JOIN LATERAL (
        SELECT d.lot_id FROM device_assignments d
        WHERE s.lot_id IS NULL AND d.device_id = s.device_id
          AND d.valid_from <= s.link_at AND (d.valid_to IS NULL OR s.link_at < d.valid_to)
        ORDER BY d.valid_from DESC LIMIT 1
    ) a ON true
), ins AS (
    INSERT INTO sqal_samples (device_id, boot, seq, lot_id, link_kind, requested_lot_id, link_issue,
                              measured_at, received_at, clock_synced, score, grade, device_score, device_grade,
                              weight_g, volume_cm3, alerts, features, raw)
    SELECT device_id, boot, seq,
           COALESCE(known_lot, assigned_lot),
           CASE WHEN known_lot IS NOT NULL THEN 'explicit' WHEN assigned_lot IS NOT NULL THEN 'assignment' ELSE 'none' END,
           lot_id,
           CASE WHEN lot_id IS NOT NULL AND known_lot IS NULL THEN 'unknown_lot'
                WHEN lot_id IS NULL AND assigned_lot IS NULL THEN 'no_assignment' END,
           measured_at, received_at, clock_synced, score, grade, device_score, device_grade,
           weight_g, volume_cm3, COALESCE(alerts, '{}'), features::json, raw::json
    FROM linked ORDER BY ord
    ON CONFLICT (device_id, boot, seq) DO NOTHING
    RETURNING device_id, boot, seq, lot_id, link_kind, link_issue, grade, score, weight_g, measured_at, received_at
), ev AS (
    INSERT INTO lot_events (lot_id, stage, type, data, description)
    SELECT lot_id, 'sqal', 'sqal_samples',
           jsonb_build_object(
               'count', count(*),
               'devices', to_jsonb(array_agg(DISTINCT device_id)),
               'grades', (SELECT jsonb_object_agg(g, n) FROM (
                              SELECT COALESCE(i2.grade, 'none') AS g, count(*) AS n FROM ins i2
                              WHERE i2.lot_id = ins.lot_id GROUP BY 1) gg),
               'mean_score', round(avg(score)::numeric, 3),
               'mean_weight_g', round(avg(weight_g)::numeric, 1),
               'first_measured_at', min(COALESCE(measured_at, received_at)),
               'last_measured_at', max(COALESCE(measured_at, received_at))),
           count(*) || ' SQAL sample(s) from ' || string_agg(DISTINCT device_id, ', ')
    FROM ins WHERE lot_id IS NOT NULL GROUP BY lot_id
    RETURNING lot_id
)
SELECT device_id, boot, seq, lot_id, link_kind, link_issue FROM ins
"""


class JsonText(str):
    """JSON already encoded by the caller (the ingest encodes `features` and `raw` in its grading
    workers, off the event loop): stored as it is instead of being encoded again. Any other value
    of those keys is encoded with json.dumps, as before."""

    __slots__ = ()


@dataclass
class StoreResult:
    """Per input row, in input order: `new[i]` False means (device_id, boot, seq) was already stored
    (or repeated earlier in the same batch) and nothing was written for it."""

    new: list[bool] = field(default_factory=list)
    lot_ids: list[str | None] = field(default_factory=list)  # lot each new row was linked to (None for duplicates)
    link_kinds: list[str | None] = field(default_factory=list)
    link_issues: list[str | None] = field(default_factory=list)

    @property
    def new_count(self) -> int:
        return sum(self.new)

    @property
    def duplicate_count(self) -> int:
        return len(self.new) - self.new_count


def _row_tuple(i: int, r: Mapping[str, Any], now: datetime) -> tuple[Any, ...]:
    try:
        device_id, boot, seq = str(r["device_id"]), int(r["boot"]), int(r["seq"])
    except KeyError as exc:
        raise InvalidInput(f"sample row {i}: missing required field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"sample row {i}: boot and seq must be integers ({exc})") from exc
    alerts = r.get("alerts") or []
    if not isinstance(alerts, (list, tuple)) or not all(isinstance(a, str) for a in alerts):
        raise InvalidInput(f"sample row {i} ({device_id}/{boot}/{seq}): alerts must be a list of strings")

    def js(key: str) -> str | None:
        v = r.get(key)
        if v is None or type(v) is JsonText:
            return v
        return json.dumps(v, default=str)

    def num(key: str) -> float | None:
        v = r.get(key)
        return None if v is None else float(v)

    return (i, device_id, boot, seq, r.get("lot_id"), r.get("measured_at"), r.get("received_at") or now,
            bool(r.get("clock_synced", True)), num("score"), r.get("grade"), num("device_score"),
            r.get("device_grade"), num("weight_g"), num("volume_cm3"), list(alerts), js("features"), js("raw"))


async def store_samples(db: Executor, rows: Sequence[Mapping[str, Any]]) -> StoreResult:
    """Store a batch of samples (dicts with device_id, boot, seq and optional lot_id, measured_at,
    received_at, clock_synced, score, grade, device_score, device_grade, weight_g, volume_cm3,
    alerts, features, raw; `features` and `raw` may be `JsonText`, already encoded). Returns which rows
    were new and the lot each new row got."""
    if not rows:
        return StoreResult()
    now = datetime.now(UTC)
    records = [_row_tuple(i, r, now) for i, r in enumerate(rows)]
    async with _conn(db) as conn, conn.transaction():
        await conn.execute(_TEMP)
        await conn.copy_records_to_table("sqal_samples_in", records=records, columns=_COLUMNS)
        inserted = await conn.fetch(_STORE)
        await conn.execute("DELETE FROM sqal_samples_in")  # when the caller's transaction is still open
    by_key = {(r["device_id"], r["boot"], r["seq"]): r for r in inserted}
    result = StoreResult()
    for rec in records:
        key = (rec[1], rec[2], rec[3])
        hit = by_key.pop(key, None)  # pop: a repeat of the key later in the batch is a duplicate
        result.new.append(hit is not None)
        result.lot_ids.append(hit["lot_id"] if hit else None)
        result.link_kinds.append(hit["link_kind"] if hit else None)
        result.link_issues.append(hit["link_issue"] if hit else None)
    return result


_SUMMARY = ("id, device_id, boot, seq, link_kind, measured_at, received_at, clock_synced, score, grade, "
            "device_score, device_grade, weight_g, volume_cm3, alerts")


async def lot_samples(db: Executor, lot_id: str, *, limit: int = 100, offset: int = 0,
                      grade: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(how many samples the lot has, with `grade` if given; one page of them, without the raw
    payload and features), in measurement order (receive time when the clock was not trusted)."""
    async with _conn(db) as conn:
        if await conn.fetchval("SELECT 1 FROM lots WHERE id = $1", lot_id) is None:
            raise LotNotFound(lot_id)
        total = await conn.fetchval(
            "SELECT count(*) FROM sqal_samples WHERE lot_id = $1 AND ($2::text IS NULL OR grade = $2)", lot_id, grade)
        rows = await conn.fetch(
            f"""SELECT {_SUMMARY} FROM sqal_samples WHERE lot_id = $1 AND ($2::text IS NULL OR grade = $2)
                ORDER BY COALESCE(measured_at, received_at), device_id, boot, seq LIMIT $3 OFFSET $4""",
            lot_id, grade, limit, offset)
    return total, [d for d in map(as_dict, rows) if d is not None]
