"""Look stored samples up by their dedupe key, for answers that must name the stored row
(the WebSocket ack carries the row id and the grade stored the first time)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from registry import sample_hours
from registry.base import Executor


class SampleRef(NamedTuple):
    id: int
    score: float | None
    grade: str | None
    lot_id: str | None


async def sample_refs(db: Executor, keys: Iterable[tuple[str, int, int]]) -> dict[tuple[str, int, int], SampleRef]:
    """{(device_id, boot, seq): SampleRef} for the keys that are stored."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    rows = await db.fetch(
        """SELECT s.device_id, s.boot, s.seq, s.id, s.score, s.grade, s.lot_id
           FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS k(device_id, boot, seq)
           JOIN sqal_samples s USING (device_id, boot, seq)""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    return {(r["device_id"], r["boot"], r["seq"]): SampleRef(r["id"], r["score"], r["grade"], r["lot_id"])
            for r in rows}


async def grade_counts(db: Executor) -> dict[str, int]:
    """Stored samples per authoritative grade ('none' when ungraded), for dashboards (from the hour
    rows: registry/sample_hours.py)."""
    return await sample_hours.grade_counts(db)
