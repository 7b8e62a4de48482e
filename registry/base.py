"""Small helpers shared by the registry modules (no SQL of their own)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, TypeAlias

import asyncpg

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection
JSON_COLUMNS = frozenset({"grade_distribution", "features", "raw", "data"})


def as_dict(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """A record as plain JSON-friendly values (numeric -> float)."""
    if row is None:
        return None
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, Decimal):
            v = float(v)
        elif k in JSON_COLUMNS and isinstance(v, str):
            v = json.loads(v)  # jsonb arrives as text unless the pool set a codec; same shape either way
        out[k] = v
    return out


def _d(row: asyncpg.Record) -> dict[str, Any]:
    d = as_dict(row)
    assert d is not None
    return d


class _conn:
    """`async with _conn(pool_or_conn) as conn`: acquire from a pool, or use the connection as is."""

    def __init__(self, db: Executor) -> None:
        self._db = db
        self._acquired: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        if isinstance(self._db, asyncpg.Pool):
            self._acquired = self._db.acquire()
            return await self._acquired.__aenter__()
        return self._db

    async def __aexit__(self, *exc: object) -> None:
        if self._acquired is not None:
            await self._acquired.__aexit__(*exc)
