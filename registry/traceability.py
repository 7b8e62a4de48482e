"""Read-only queries behind the traceability exports (EPCIS, one step back/forward, the certificate).

- `inspection_by_device`: a lot's SQAL samples summarised per device and for the whole lot (counts
  per grade, score and liver weight statistics, first and last measurement). Only samples received
  up to the close of the inspection count, so the summary of an inspected lot never changes when a
  late reading is linked afterwards (the lot's stored results are computed the same way).
- `lots_with_activity`: the lots with something dated in a time range (an event of the registry, a
  feeding's own time, a dispatch), for exports per time range.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from registry.base import Executor


def _f(v: Any) -> float | None:
    return float(v) if v is not None else None


async def inspection_by_device(db: Executor, lot_id: str, until: datetime | None = None) -> dict[str, Any]:
    """{"lot": summary, "devices": [summary per device, by device id]}. A summary: device_id (None for
    the lot), location and site_code of the device, samples, grades {grade: count} ('none' = not
    graded), score_mean/min/max/sd, weight_mean/min/max/sd (g, weighed samples only), first_at,
    last_at (measurement time, or receive time when the device clock was not trusted). `until`:
    only samples received at or before it (the lot's inspected_at)."""
    rows = await db.fetch(
        """WITH s AS (SELECT device_id, grade, score, weight_g, COALESCE(measured_at, received_at) AS at
                      FROM sqal_samples WHERE lot_id = $1 AND ($2::timestamptz IS NULL OR received_at <= $2)),
                g AS (SELECT device_id, COALESCE(grade, 'none') AS grade, count(*) AS n FROM s
                      GROUP BY GROUPING SETS ((device_id, COALESCE(grade, 'none')), (COALESCE(grade, 'none'))))
           SELECT a.device_id, a.whole, d.location, d.site_code, a.samples, a.score_mean, a.score_min, a.score_max,
                  a.score_sd, a.weight_mean, a.weight_min, a.weight_max, a.weight_sd, a.first_at, a.last_at,
                  (SELECT jsonb_object_agg(g.grade, g.n) FROM g
                   WHERE (a.whole AND g.device_id IS NULL) OR (NOT a.whole AND g.device_id = a.device_id))::text
                   AS grades
           FROM (SELECT device_id, GROUPING(device_id) = 1 AS whole, count(*) AS samples,
                        avg(score) AS score_mean, min(score) AS score_min, max(score) AS score_max,
                        stddev_samp(score) AS score_sd,
                        avg(weight_g) FILTER (WHERE weight_g > 0) AS weight_mean,
                        min(weight_g) FILTER (WHERE weight_g > 0) AS weight_min,
                        max(weight_g) FILTER (WHERE weight_g > 0) AS weight_max,
                        stddev_samp(weight_g) FILTER (WHERE weight_g > 0) AS weight_sd,
                        min(at) AS first_at, max(at) AS last_at
                 FROM s GROUP BY GROUPING SETS ((device_id), ())) a
           LEFT JOIN devices d ON d.id = a.device_id AND NOT a.whole
           ORDER BY a.whole DESC, a.device_id""", lot_id, until)
    summaries: list[dict[str, Any]] = []
    for r in rows:
        summaries.append({
            "device_id": None if r["whole"] else r["device_id"],
            "location": r["location"], "site_code": r["site_code"], "samples": int(r["samples"]),
            "grades": {k: int(v) for k, v in json.loads(r["grades"] or "{}").items()},
            **{k: _f(r[k]) for k in ("score_mean", "score_min", "score_max", "score_sd", "weight_mean",
                                     "weight_min", "weight_max", "weight_sd")},
            "first_at": r["first_at"], "last_at": r["last_at"],
        })
    whole = next((s for s in summaries if s["device_id"] is None), None)
    if whole is None or whole["samples"] == 0:  # no sample: the grand total row still comes, with count 0
        whole = {"device_id": None, "location": None, "site_code": None, "samples": 0, "grades": {},
                 "score_mean": None, "score_min": None, "score_max": None, "score_sd": None, "weight_mean": None,
                 "weight_min": None, "weight_max": None, "weight_sd": None, "first_at": None, "last_at": None}
    return {"lot": whole, "devices": [s for s in summaries if s["device_id"] is not None]}


async def lots_with_activity(db: Executor, *, since: datetime | None, until: datetime | None,
                             limit: int) -> list[str]:
    """Ids of lots with a registry event, a feeding (its own time) or a dispatch in [since, until),
    oldest lot first, at most `limit`."""
    rows = await db.fetch(
        """SELECT l.id FROM lots l
           WHERE EXISTS (SELECT 1 FROM lot_events e WHERE e.lot_id = l.id
                           AND ($1::timestamptz IS NULL OR e.at >= $1) AND ($2::timestamptz IS NULL OR e.at < $2))
              OR EXISTS (SELECT 1 FROM gavage_feedings f WHERE f.lot_id = l.id AND f.simulated_at IS NOT NULL
                           AND ($1::timestamptz IS NULL OR f.simulated_at >= $1)
                           AND ($2::timestamptz IS NULL OR f.simulated_at < $2))
              OR EXISTS (SELECT 1 FROM dispatch_lines dl JOIN dispatches d ON d.id = dl.dispatch_id
                         WHERE dl.lot_id = l.id AND ($1::timestamptz IS NULL OR d.dispatched_at >= $1)
                           AND ($2::timestamptz IS NULL OR d.dispatched_at < $2))
           ORDER BY l.created_at, l.id LIMIT $3""", since, until, limit)
    return [r["id"] for r in rows]
