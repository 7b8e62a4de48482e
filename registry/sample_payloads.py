"""One stored reading with its features and raw payload decoded (registry/blobs.py): the on-demand
read of what the rows keep compact. The raw payload is None once its day has been dropped by the
retention policy (registry/partitions.py); the reading's row and features stay longer."""

from __future__ import annotations

from typing import Any

from registry import blobs
from registry.base import Executor, as_dict


async def reading(db: Executor, device_id: str, boot: int, seq: int) -> dict[str, Any] | None:
    """The reading stored under this dedupe key: every column of its row, `features` and `raw`
    decoded (raw None when expired), or None when no such reading is stored."""
    row = await db.fetchrow(
        """SELECT s.*, r.payload FROM sqal_samples s
           LEFT JOIN sqal_sample_raw r ON r.day = (s.received_at AT TIME ZONE 'UTC')::date AND r.id = s.id
           WHERE s.device_id = $1 AND s.boot = $2 AND s.seq = $3""", device_id, boot, seq)
    d = as_dict(row)
    if d is None:
        return None
    d["features"] = blobs.features_of(d.pop("features_z"))
    d["raw"] = blobs.raw_of(d.pop("payload"))
    return d
