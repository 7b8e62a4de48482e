"""Rejected ingest messages: kept with their raw bytes (truncated), topic, time and precise reason.

Written in the same transaction as the batch they arrived with, so the broker is acknowledged only
once the reject is stored, exactly as for a stored sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry.base import Executor, _conn, as_dict

_COLUMNS = ("received_at", "source", "topic", "device_id", "reason_key", "reason", "payload", "payload_size",
            "truncated")


@dataclass(frozen=True)
class RejectRow:
    received_at: datetime
    source: str  # 'mqtt' | 'ws'
    topic: str | None
    device_id: str | None
    reason_key: str
    reason: str
    payload: bytes  # already truncated by the caller
    payload_size: int  # size before truncation

    def record(self) -> tuple[Any, ...]:
        return (self.received_at, self.source, _text(self.topic), _text(self.device_id), _text(self.reason_key),
                _text(self.reason), self.payload, self.payload_size, len(self.payload) < self.payload_size)


def _text(s: str | None) -> str | None:
    """PostgreSQL text cannot hold a NUL character: it is stored as the four characters \\x00. A
    topic can have one (a NATS client may publish any subject): refused, the reject row made the
    whole batch fail, then could not be stored at all (tests/gateway/test_ingest_hostile.py)."""
    return s.replace("\x00", "\\x00") if s is not None and "\x00" in s else s


async def insert_rejects(db: Executor, rows: Sequence[RejectRow]) -> int:
    """COPY the rejects in; returns how many were written."""
    if not rows:
        return 0
    async with _conn(db) as conn:
        await conn.copy_records_to_table("ingest_rejects", records=[r.record() for r in rows], columns=_COLUMNS)
    return len(rows)


async def list_rejects(db: Executor, *, limit: int = 100, offset: int = 0, reason_key: str | None = None,
                       device_id: str | None = None) -> list[dict[str, Any]]:
    """Newest first."""
    rows = await db.fetch(
        """SELECT id, received_at, source, topic, device_id, reason_key, reason, payload, payload_size, truncated
           FROM ingest_rejects WHERE ($1::text IS NULL OR reason_key = $1) AND ($2::text IS NULL OR device_id = $2)
           ORDER BY id DESC LIMIT $3 OFFSET $4""", reason_key, device_id, limit, offset)
    return [d for d in map(as_dict, rows) if d is not None]


async def count_by_reason(db: Executor) -> dict[str, int]:
    rows = await db.fetch("SELECT reason_key, count(*) AS n FROM ingest_rejects GROUP BY 1 ORDER BY 1")
    return {r["reason_key"]: int(r["n"]) for r in rows}
