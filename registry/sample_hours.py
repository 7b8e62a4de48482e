"""Readings summed per device, lot and hour (`sqal_sample_hours`, migration 006), written by
`store_samples` in the statement that stores the readings. What lot pages, inspection results,
the dispatcher and dashboards count from: a lot's figures are a sum over its few hour rows, never a
scan of its readings, and they stay after the readings' retention has dropped them.

Each figure equals the one a scan of the stored readings gives (tests/registry/test_sample_hours.py):
counts per grade ('none' = not graded), score sum / sum of squares / extremes over the graded
readings, the same over the weighed ones (weight_g > 0, as the inspection's mean liver weight),
first and last measurement (receive time when the clock was not trusted).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from registry.base import Executor

_LOT = """SELECT COALESCE(sum(samples), 0) AS samples, sum(score_n) AS score_n, sum(score_sum) AS score_sum,
                 sum(score_sumsq) AS score_sumsq, min(score_min) AS score_min, max(score_max) AS score_max,
                 sum(weight_n) AS weight_n, sum(weight_sum) AS weight_sum, sum(weight_sumsq) AS weight_sumsq,
                 min(weight_min) AS weight_min, max(weight_max) AS weight_max, min(first_at) AS first_at,
                 max(last_at) AS last_at, array_agg(DISTINCT device_id) AS devices,
                 (SELECT jsonb_object_agg(k, n) FROM (
                     SELECT key AS k, sum(value::bigint) AS n FROM sqal_sample_hours h2, jsonb_each_text(h2.grades)
                     WHERE h2.lot_id = $1 GROUP BY key) x)::text AS grades
          FROM sqal_sample_hours WHERE lot_id = $1"""


def _stats(n: int, s: float | None, sq: float | None) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) from a count, a sum and a sum of squares."""
    if not n or s is None:
        return None, None
    mean = s / n
    if n < 2 or sq is None:
        return mean, None
    var = (sq - s * s / n) / (n - 1)
    return mean, math.sqrt(var) if var > 0 else 0.0


async def lot_summary(db: Executor, lot_id: str) -> dict[str, Any]:
    """{samples, grades{grade: n}, devices[], score_mean/min/max/sd, weight_n, weight_mean/min/max/sd,
    first_at, last_at} of the lot's linked readings (zeros and nulls for a lot without any)."""
    r = await db.fetchrow(_LOT, lot_id)
    score_mean, score_sd = _stats(int(r["score_n"] or 0), r["score_sum"], r["score_sumsq"])
    weight_mean, weight_sd = _stats(int(r["weight_n"] or 0), r["weight_sum"], r["weight_sumsq"])
    return {
        "samples": int(r["samples"]),
        "grades": {k: int(v) for k, v in json.loads(r["grades"] or "{}").items()},
        "devices": sorted(d for d in (r["devices"] or []) if d is not None),
        "score_mean": score_mean, "score_min": r["score_min"], "score_max": r["score_max"], "score_sd": score_sd,
        "weight_n": int(r["weight_n"] or 0), "weight_mean": weight_mean, "weight_min": r["weight_min"],
        "weight_max": r["weight_max"], "weight_sd": weight_sd, "first_at": r["first_at"], "last_at": r["last_at"],
    }


async def lot_sample_counts(db: Executor, lot_ids: list[str]) -> dict[str, int]:
    """{lot_id: linked readings} for each of `lot_ids` (0 when none)."""
    rows = await db.fetch("""SELECT l, COALESCE((SELECT sum(samples) FROM sqal_sample_hours WHERE lot_id = l), 0) AS n
                             FROM unnest($1::text[]) AS l""", lot_ids)
    return {r["l"]: int(r["n"]) for r in rows}


async def lot_sample_count(db: Executor, lot_id: str, grade: str | None = None) -> int:
    """Linked readings of the lot (with that grade, 'none' = not graded, when given)."""
    if grade is None:
        return int(await db.fetchval("SELECT COALESCE(sum(samples), 0) FROM sqal_sample_hours WHERE lot_id = $1",
                                     lot_id))
    return int(await db.fetchval(
        "SELECT COALESCE(sum((grades->>$2)::bigint), 0) FROM sqal_sample_hours WHERE lot_id = $1", lot_id, grade))


async def grade_counts(db: Executor) -> dict[str, int]:
    """Stored readings per authoritative grade ('none' when ungraded), all time."""
    rows = await db.fetch("""SELECT key AS g, sum(value::bigint) AS n FROM sqal_sample_hours, jsonb_each_text(grades)
                             GROUP BY key""")
    return {r["g"]: int(r["n"]) for r in rows}


async def device_sent_lot(db: Executor, device_id: str, lot_id: str, since: datetime) -> bool:
    """Did the device send a reading naming this lot, received at or after `since`?"""
    return bool(await db.fetchval(
        """SELECT 1 FROM sqal_sample_hours WHERE device_id = $1 AND requested_lot_id = $2
                                               AND last_received_at >= $3 LIMIT 1""", device_id, lot_id, since))
