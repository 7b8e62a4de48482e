"""The registry's upkeep in the gateway: the readings' partitions made ahead and dropped by the
retention policy (registry/partitions.py), at start-up and then every SQAL_RETENTION_INTERVAL_S.

- Made ahead: from yesterday to SQAL_PARTITIONS_AHEAD_DAYS after today, so a reading always finds
  its partition (the ingest also makes today's itself if it ever meets a missing one).
- Dropped: a day of raw payloads once it is SQAL_RETENTION_RAW_DAYS old, a month of readings
  (features, grades) once SQAL_RETENTION_SAMPLES_DAYS old. Lots, their events and the per-hour
  aggregates are never dropped. Each drop is logged (table, partition, range, bytes, seconds) and
  counted on /metrics.
- One replica at a time: a run holds a session advisory lock; a replica that does not get it skips
  the run (another is doing it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.config import Settings
from registry import partitions

log = logging.getLogger(__name__)

# Arbitrary constant ("SQALRET" in ASCII): the advisory lock key of a maintenance run.
MAINTENANCE_LOCK_KEY = 0x5351414C524554


@dataclass(frozen=True)
class RetentionPolicy:
    raw_days: int = 30
    samples_days: int = 730
    ahead_days: int = 7
    interval_s: float = 3600.0

    @classmethod
    def from_settings(cls, s: Settings) -> RetentionPolicy:
        return cls(raw_days=s.retention_raw_days, samples_days=s.retention_samples_days,
                   ahead_days=s.partitions_ahead_days, interval_s=s.retention_interval_s)


@dataclass
class RunReport:
    ran: bool  # False: another replica held the lock
    created: list[str] = field(default_factory=list)
    dropped: list[partitions.Dropped] = field(default_factory=list)
    seconds: float = 0.0


class MaintenanceMetrics:
    """On their own registry (added to the ingest's /metrics by `register_into`)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter("sqal_retention_runs", "Maintenance runs (partitions made ahead, retention applied)",
                            ["outcome"], registry=r)
        self.created = Counter("sqal_retention_partitions_created", "Partitions made ahead", ["table"], registry=r)
        self.dropped = Counter("sqal_retention_partitions_dropped", "Partitions dropped by the retention policy",
                               ["table"], registry=r)
        self.dropped_bytes = Counter("sqal_retention_dropped_bytes", "Bytes on disk freed by dropped partitions",
                                     ["table"], registry=r)
        self.drop_seconds = Gauge("sqal_retention_last_drop_seconds", "Duration of the last partition drop",
                                  ["table"], registry=r)
        self.last_run = Gauge("sqal_retention_last_run_timestamp_seconds", "When the last run ended (Unix time)",
                              registry=r)

    def register_into(self, registry: CollectorRegistry) -> None:
        for c in (self.runs, self.created, self.dropped, self.dropped_bytes, self.drop_seconds, self.last_run):
            registry.register(c)


async def run_once(pool: asyncpg.Pool, policy: RetentionPolicy, metrics: MaintenanceMetrics | None = None,
                   today: datetime | None = None) -> RunReport:
    """One run: partitions made ahead, expired ones dropped (oldest first). `today` for tests."""
    t0 = time.perf_counter()
    day = (today or datetime.now(UTC)).astimezone(UTC).date()
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY):
            log.info("retention: another replica is running the maintenance; skipped")
            return RunReport(ran=False)
        try:
            report = RunReport(ran=True)
            report.created = await partitions.ensure_ahead(conn, day, policy.ahead_days)
            if report.created:
                log.info("retention: partitions made ahead: %s", ", ".join(report.created))
            for part in await partitions.expired(conn, day, raw_days=policy.raw_days,
                                                 samples_days=policy.samples_days):
                d = await partitions.drop(conn, part)
                report.dropped.append(d)
                log.info("retention: dropped %s (%s, %s..%s, %d bytes) in %.3f s", d.name, d.parent, d.lo, d.hi,
                         d.bytes, d.seconds)
                if metrics is not None:
                    metrics.dropped.labels(d.parent).inc()
                    metrics.dropped_bytes.labels(d.parent).inc(d.bytes)
                    metrics.drop_seconds.labels(d.parent).set(d.seconds)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY)
    report.seconds = time.perf_counter() - t0
    if metrics is not None:
        for name in report.created:
            metrics.created.labels(partitions.SAMPLES if name.startswith("sqal_samples_") else partitions.RAW).inc()
        metrics.runs.labels("ok").inc()
        metrics.last_run.set(time.time())
    return report


class Maintenance:
    """`await start()` runs once (so the ingest finds today's partitions), then every interval."""

    def __init__(self, pool: asyncpg.Pool, policy: RetentionPolicy) -> None:
        self.pool = pool
        self.policy = policy
        self.metrics = MaintenanceMetrics()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await run_once(self.pool, self.policy, self.metrics)
        except Exception:  # the gateway starts anyway: the ingest makes today's partitions itself if need be
            log.exception("retention: maintenance run at start-up failed")
            self.metrics.runs.labels("failed").inc()
        self._task = asyncio.create_task(self._loop(), name="sqal-maintenance")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.policy.interval_s)
            try:
                await run_once(self.pool, self.policy, self.metrics)
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed run is retried at the next interval; the gateway goes on
                log.exception("retention: maintenance run failed")
                self.metrics.runs.labels("failed").inc()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
