"""Global registry statistics (the control panel's `lots` block)."""

from __future__ import annotations

from typing import Any

from registry.base import Executor
from registry.lifecycle import ACTIVE_STATES


async def global_stats(db: Executor) -> dict[str, Any]:
    """total_lots; active_lots (created, gavage, ready, inspecting); completed_lots (inspection
    closed, whatever happened after); total_ducks (sum of nb_ducks); average_gavage_days (mean
    last feeding day of lots whose gavage ended); avg_itm (mean ITM of lots that have one);
    average_consumer_rating (mean of all feedback ratings). Averages are null when there is
    nothing to average, never a made-up 0."""
    row = await db.fetchrow(
        """SELECT count(*) AS total_lots,
                  count(*) FILTER (WHERE state = ANY($1::text[])) AS active_lots,
                  count(*) FILTER (WHERE inspected_at IS NOT NULL) AS completed_lots,
                  COALESCE(sum(nb_ducks), 0) AS total_ducks,
                  round(avg(current_day) FILTER (WHERE gavage_ended_at IS NOT NULL), 2) AS average_gavage_days,
                  round(avg(itm), 3) AS avg_itm,
                  (SELECT round(avg(rating), 2) FROM consumer_feedback) AS average_consumer_rating
           FROM lots""", list(ACTIVE_STATES))
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in ("total_lots", "active_lots", "completed_lots", "total_ducks"):
            out[k] = int(v)
        else:
            out[k] = float(v) if v is not None else None
    return out
