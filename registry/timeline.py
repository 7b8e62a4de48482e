"""A lot's timeline: every event oldest first, paginated, with duration and counts by stage."""

from __future__ import annotations

import json
from typing import Any

from registry.base import Executor
from registry.errors import LotNotFound

STAGES = ("registry", "gavage", "sqal", "consumer")


async def timeline(db: Executor, lot_id: str, *, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """{lot_id, state, total, limit, offset, events[], first_at, last_at, duration_s,
    events_by_stage{registry,gavage,sqal,consumer}, feedings, samples, feedbacks}.

    Events are ordered by (at, id); `total` counts all of them, `events` is the requested page.
    duration_s spans the first to the last event.
    """
    head = await db.fetchrow(
        """SELECT l.state,
                  (SELECT count(*) FROM lot_events e WHERE e.lot_id = l.id) AS total,
                  (SELECT min(at) FROM lot_events e WHERE e.lot_id = l.id) AS first_at,
                  (SELECT max(at) FROM lot_events e WHERE e.lot_id = l.id) AS last_at,
                  (SELECT jsonb_object_agg(stage, n) FROM (SELECT stage, count(*) AS n FROM lot_events e
                        WHERE e.lot_id = l.id GROUP BY stage) s) AS by_stage,
                  (SELECT count(*) FROM gavage_feedings f WHERE f.lot_id = l.id) AS feedings,
                  (SELECT COALESCE(sum(h.samples), 0) FROM sqal_sample_hours h WHERE h.lot_id = l.id) AS samples,
                  (SELECT count(*) FROM consumer_feedback c WHERE c.lot_id = l.id) AS feedbacks
           FROM lots l WHERE l.id = $1""", lot_id)
    if head is None:
        raise LotNotFound(lot_id)
    rows = await db.fetch(
        "SELECT id, at, stage, type, data::text AS data, description FROM lot_events WHERE lot_id = $1 "
        "ORDER BY at, id LIMIT $2 OFFSET $3", lot_id, limit, offset)
    raw_stage = head["by_stage"]
    by_stage = json.loads(raw_stage) if isinstance(raw_stage, str) else dict(raw_stage or {})
    first, last = head["first_at"], head["last_at"]
    return {
        "lot_id": lot_id,
        "state": head["state"],
        "total": int(head["total"]),
        "limit": limit,
        "offset": offset,
        "first_at": first,
        "last_at": last,
        "duration_s": (last - first).total_seconds() if first and last else 0.0,
        "events_by_stage": {s: int(by_stage.get(s, 0)) for s in STAGES},
        "feedings": int(head["feedings"]),
        "samples": int(head["samples"]),
        "feedbacks": int(head["feedbacks"]),
        "events": [{"id": r["id"], "at": r["at"], "stage": r["stage"], "type": r["type"],
                    "data": json.loads(r["data"]), "description": r["description"]} for r in rows],
    }
