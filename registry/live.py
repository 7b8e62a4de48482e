"""Reads behind the dashboards' live feed (/ws/realtime, gateway/ingest/realtime.py): the lot event
log from a cursor on. No writes.

Every change of a lot appends a row to `lot_events` in the change's own transaction (registry.lifecycle,
the ingest's sample statement), whoever makes it: so reading that log from the last id seen finds
every changed lot, across processes and replicas.
"""

from __future__ import annotations

from registry.base import Executor


async def last_lot_event_id(db: Executor) -> int:
    """The highest lot event id so far (0 when there is none)."""
    return int(await db.fetchval("SELECT COALESCE(max(id), 0) FROM lot_events"))


async def lot_events_after(db: Executor, after: int, limit: int = 5000) -> list[tuple[int, str, str]]:
    """(id, lot_id, type) of the committed lot events with an id above `after`, lowest id first, at
    most `limit`. Ids are handed out when a transaction inserts, not when it commits: an event can
    appear after one with a higher id (the caller keeps reading above its lowest unsettled id)."""
    rows = await db.fetch("SELECT id, lot_id, type FROM lot_events WHERE id > $1 ORDER BY id LIMIT $2",
                          after, limit)
    return [(int(r["id"]), str(r["lot_id"]), str(r["type"])) for r in rows]
