"""Partitions of the readings (migration 006): made ahead, dropped by the retention policy, listed.

- `sqal_samples` (one row per reading, features and grades): a partition per month of the readings'
  span day; kept `samples_days` (default two years).
- `sqal_sample_raw` (the raw payloads): a partition per UTC day of receipt; kept `raw_days`
  (default 30).

A partition is dropped once all of it is older than its table's retention: its upper bound <=
today - days. Dropping is `DETACH PARTITION .. CONCURRENTLY` then `DROP TABLE`: the detach takes
SHARE UPDATE EXCLUSIVE on the parent (inserts and reads go on) and waits for the transactions that
use it; the drop then locks only the detached table, which nothing reads any more. Before a month
of readings goes, the spans of that month are deleted (registry/samples.py, SPAN_SHIFT): a replay
of one of its readings that arrives after that is stored again as a new reading, in today's
partition -- dedupe holds as long as the reading it would duplicate is kept.

Partitions are created by `sqal_create_partitions` (migration 006): a plain table then ATTACH, so
creating ahead never takes the parent's ACCESS EXCLUSIVE lock either. Nothing here holds a lock
across partitions: the gateway's maintenance (gateway/maintenance.py) serialises runs with an
advisory lock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg

from registry.base import Executor, _conn

SAMPLES, RAW = "sqal_samples", "sqal_sample_raw"
PARENTS = (SAMPLES, RAW)
_BOUND = re.compile(r"FROM \('(\d{4}-\d{2}-\d{2})'\) TO \('(\d{4}-\d{2}-\d{2})'\)")
# Other tables `status` reports (the registry's own; sizes include their indexes and TOAST).
TABLES = ("sqal_sample_hours", "sqal_sample_spans", "lot_events", "lots", "devices", "device_assignments",
          "gavage_feedings", "ingest_rejects", "products", "consumer_feedback", "dispatches", "dispatch_lines")


@dataclass(frozen=True)
class Partition:
    parent: str
    name: str
    lo: date  # first day it holds
    hi: date  # first day it does not hold
    bytes: int  # heap + indexes + TOAST
    rows: int  # the planner's estimate (-1: never analysed)
    detach_pending: bool  # a concurrent detach was interrupted: finalised by the next drop


@dataclass(frozen=True)
class Dropped:
    parent: str
    name: str
    lo: date
    hi: date
    bytes: int
    seconds: float


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure(db: Executor, lo: date, hi: date) -> list[str]:
    """Create the partitions missing for the days lo..hi (both tables). Returns the tables made."""
    rows = await db.fetch("SELECT sqal_create_partitions($1, $2) AS name", lo, hi)
    return [r["name"] for r in rows]


async def ensure_ahead(db: Executor, today: date, ahead_days: int) -> list[str]:
    """Partitions from yesterday (late readings around midnight) to `ahead_days` after today."""
    return await ensure(db, today - timedelta(days=1), today + timedelta(days=ahead_days))


async def partitions(db: Executor, parent: str | None = None) -> list[Partition]:
    """The partitions of the readings' tables (or of `parent`), oldest first."""
    rows = await db.fetch(
        """SELECT p.relname AS parent, c.relname AS name, pg_get_expr(c.relpartbound, c.oid) AS bound,
                  pg_total_relation_size(c.oid) AS bytes, c.reltuples::bigint AS rows, i.inhdetachpending AS pending
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = ANY($1::text[]) AND p.relnamespace = c.relnamespace
             AND p.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())""",
        [parent] if parent else list(PARENTS))
    out = []
    for r in rows:
        m = _BOUND.search(r["bound"] or "")
        if m is None:  # not one of ours (a DEFAULT partition someone added): left alone
            continue
        out.append(Partition(r["parent"], r["name"], date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2)),
                             int(r["bytes"]), int(r["rows"]), bool(r["pending"])))
    return sorted(out, key=lambda p: (p.parent, p.lo))


def cutoff(today: date, days: int) -> date:
    """Partitions wholly before this day are past a retention of `days`."""
    return today - timedelta(days=days)


async def expired(db: Executor, today: date, *, raw_days: int, samples_days: int) -> list[Partition]:
    limits = {RAW: cutoff(today, raw_days), SAMPLES: cutoff(today, samples_days)}
    return [p for p in await partitions(db) if p.hi <= limits[p.parent]]


async def drop(db: Executor, part: Partition) -> Dropped:
    """Detach (concurrently) and drop one partition; for a month of readings, its spans first.
    Must run outside a transaction (DETACH .. CONCURRENTLY cannot run in one)."""
    t0 = time.perf_counter()
    async with _conn(db) as conn:
        if conn.is_in_transaction():
            raise RuntimeError("partitions.drop: call it outside a transaction (DETACH CONCURRENTLY)")
        if part.parent == SAMPLES:
            await conn.execute("DELETE FROM sqal_sample_spans WHERE day >= $1 AND day < $2", part.lo, part.hi)
        mode = "FINALIZE" if part.detach_pending else "CONCURRENTLY"
        await conn.execute(f"ALTER TABLE {_ident(part.parent)} DETACH PARTITION {_ident(part.name)} {mode}")
        await conn.execute(f"DROP TABLE {_ident(part.name)}")
    return Dropped(part.parent, part.name, part.lo, part.hi, part.bytes, time.perf_counter() - t0)


async def oldest_data(db: Executor, parts: list[Partition]) -> dict[str, date | None]:
    """Per table, the first day of its oldest partition that holds a row."""
    out: dict[str, date | None] = {p: None for p in PARENTS}
    async with _conn(db) as conn:
        for p in parts:
            if out[p.parent] is None and await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {_ident(p.name)})"):
                out[p.parent] = p.lo
    return out


async def table_sizes(db: Executor) -> dict[str, int]:
    """Bytes on disk (heap, indexes, TOAST) of the registry's other tables."""
    rows = await db.fetch("""SELECT t AS name, pg_total_relation_size(to_regclass(t)) AS bytes
                             FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL""", list(TABLES))
    return {r["name"]: int(r["bytes"]) for r in rows}


async def status(db: Executor, today: date, *, raw_days: int, samples_days: int) -> dict[str, Any]:
    """What `sqal db status` prints: per readings' table its partitions (range, bytes, rows), total,
    oldest data, retention and next drop (the partition and the day it goes); the other tables'
    sizes."""
    parts = await partitions(db)
    oldest = await oldest_data(db, parts)
    days = {RAW: raw_days, SAMPLES: samples_days}
    tables: dict[str, Any] = {}
    for parent in PARENTS:
        mine = [p for p in parts if p.parent == parent]
        nxt = mine[0] if mine else None
        tables[parent] = {
            "retention_days": days[parent],
            "bytes": sum(p.bytes for p in mine),
            "rows": sum(max(p.rows, 0) for p in mine),
            "oldest_data": oldest[parent],
            "newest_partition_end": mine[-1].hi if mine else None,
            "next_drop": None if nxt is None else {"partition": nxt.name,
                                                   "on": max(today, nxt.hi + timedelta(days=days[parent]))},
            "partitions": [{"name": p.name, "from": p.lo, "to": p.hi, "bytes": p.bytes, "rows": p.rows}
                           for p in mine],
        }
    return {"today": today, "readings": tables, "tables": await table_sizes(db)}


def is_missing_partition(exc: BaseException) -> bool:
    """A row for which no partition exists (the maintenance did not create it)."""
    return isinstance(exc, asyncpg.CheckViolationError) and "no partition of relation" in str(exc)
