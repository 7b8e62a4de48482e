"""The one ingest pipeline: bounded intake -> batches (size or time) -> one transaction -> answers.

- Intake is bounded. The message engine's source hands in no more than its room (messages fetched
  and not yet acknowledged, gateway/ingest/nats_source.py); a WebSocket awaits a slot of `slot_ws`,
  given back only once the message is committed and answered. So a slow database slows the sources
  down (the engine keeps the rest on disk); nothing is ever dropped to make room.
- Decoding and grading run in a small pool of worker processes (`grading.Grader`: the model is pure
  Python and holds the GIL, so a thread would take the event loop's core). A batch is split into
  one chunk per worker; up to `prepare_ahead` batches are graded while earlier ones commit.
- Sources hand messages over in bursts (a fetched batch at once). Counters are added per batch, not
  per message.
- One transaction per batch: samples (COPY, dedupe in SQL), rejects, device updates (last, one
  batch at a time). Up to `commit_lanes` batches commit at once, each on its own connection. Only
  after COMMIT are the `done` callbacks run (the MQTT ack, the WebSocket answer), strictly in
  receive order: a batch that committed first waits for the one before it to be answered.
- Database errors: connection-class errors are retried forever with capped backoff (the batch is
  kept, the intake fills and pushes back). Any other error isolates the bad item by committing the
  batch's items one by one; the item that still fails becomes a reject ('storage: ...').
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from gateway.ingest.envelope import Envelope, Outcome
from gateway.ingest.grading import Grader
from gateway.ingest.metrics import IngestMetrics, observe_many
from gateway.ingest.prepare import DEFAULT_CLOCK, ClockPolicy, Prepared
from gateway.ingest.rejects import reason_key, truncate
from registry import devices as reg_devices
from registry import partitions
from registry.errors import RegistryError
from registry.partitions import is_missing_partition
from registry.rejects import RejectRow, insert_rejects
from registry.sample_refs import SampleRef, sample_refs
from registry.samples import prepare_session, store_samples, tidy_session

log = logging.getLogger(__name__)


def default_workers() -> int:
    """Grading processes: one per core, at most 2 (the event loop, PostgreSQL and the broker want
    the rest; measured in docs/ingest.md)."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class PipelineConfig:
    batch_max: int = 500  # messages per transaction at most
    flush_s: float = 0.05  # a batch waits at most this long for more messages
    ws_capacity: int = 1000  # WebSocket messages received and not yet committed, at most
    payload_limit: int = 4096  # bytes kept of a rejected payload
    clock: ClockPolicy = DEFAULT_CLOCK
    retry_max_s: float = 5.0  # cap of the backoff between commit retries
    workers: int = field(default_factory=default_workers)  # grading processes (0: a thread of this process)
    prepare_ahead: int = 2  # batches being graded while one commits
    commit_lanes: int = 2  # batches committing at once, each on its own connection (answered in order)


TIDY_EVERY = 4  # batches a writer commits between two vacuums of its staging table (registry.samples.tidy_session)

DEVICES_LOCK = 0x5351414C_44455653  # pg_advisory_xact_lock key of the ingest's device updates ("SQALDEVS")


def is_transient(exc: BaseException) -> bool:
    """A database error worth retrying the same batch for (connection lost, server restarting,
    too many connections, serialization/deadlock, the client's connection state broken by a lost
    connection). Anything else is about the batch's content: its items are then committed one by
    one, and one that still fails becomes a reject."""
    # InternalClientError: asyncpg's "cannot switch to state 15; another operation (2) is in
    # progress" when the server went away in the middle of a call. Taken for a content error, it
    # split a batch during a PostgreSQL restart and made a reading a reject ('storage: ...'),
    # which lost it from the samples (found in a CI run of test_postgres_restart_mid_stream).
    if isinstance(exc, (OSError, ConnectionError, asyncio.TimeoutError, asyncpg.InterfaceError,
                        asyncpg.PostgresConnectionError, asyncpg.InternalClientError)):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ("08", "57", "53", "40")


UNEXPLAINED_RETRIES = 3  # tries of a batch (or item) whose error is neither transient nor a refusal of its content


def refuses_content(exc: BaseException) -> bool:
    """The database refused the content (an error with a SQLSTATE that is not transient), or the
    registry did before sending it (InvalidInput...): an item of the batch is the cause. Any other
    error (a client-side state, a bug) is retried a few times before an item is blamed for it."""
    return isinstance(exc, (asyncpg.PostgresError, RegistryError)) and not is_transient(exc)


Listener = Callable[[list[Prepared], dict[int, Outcome]], None]


class Pipeline:
    def __init__(self, pool: asyncpg.Pool, metrics: IngestMetrics | None = None,
                 config: PipelineConfig = PipelineConfig()) -> None:
        self.pool = pool
        self.metrics = metrics or IngestMetrics()
        self.config = config
        self.slot_ws = asyncio.Semaphore(config.ws_capacity)
        self._pending: collections.deque[Envelope] = collections.deque()  # received, not yet in a batch
        self._arrived = asyncio.Event()  # set when _pending gets messages (the collector waits on it)
        self._stage: asyncio.Queue[asyncio.Future[list[Prepared]]] = asyncio.Queue(maxsize=max(1, config.prepare_ahead))
        self.grader = Grader(config.workers, config.clock, config.payload_limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._listeners: list[Listener] = []
        self.metrics.set_queue_depth_source(lambda: float(self._in_flight))
        self.committed_batches = 0
        self._writers: list[asyncpg.pool.PoolConnectionProxy] = []  # idle writer connections, see _take_writer
        self._untidy: dict[int, int] = {}  # id(writer) -> batches since its staging table was vacuumed
        self._commits: set[asyncio.Task[None]] = set()  # batches committing or waiting to answer

    # ---- sources ----

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "pipeline not started"
        return self._loop

    def add_listener(self, fn: Listener) -> None:
        """Called on the event loop after each commit with the batch and its outcomes (realtime)."""
        self._listeners.append(fn)

    def put(self, envs: list[Envelope]) -> None:
        """From the event loop: messages a source took in (it bounds how many it has in hand)."""
        self._accept(envs)

    def _accept(self, envs: list[Envelope]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for env in envs:
            k = (env.source, env.kind_hint or _topic_kind(env.topic))
            counts[k] = counts.get(k, 0) + 1
        self._pending.extend(envs)
        self._arrived.set()
        self._in_flight += len(envs)
        for (source, kind), n in counts.items():
            self.metrics.received.labels(source, kind).inc(n)

    def _enqueue(self, env: Envelope) -> None:
        self._accept([env])

    async def submit(self, env: Envelope) -> Outcome:
        """From the event loop (WebSocket): wait for a slot, then for the committed outcome."""
        fut: asyncio.Future[Outcome] = self.loop.create_future()

        def done(outcome: Outcome) -> None:
            if not fut.done():
                fut.set_result(outcome)

        env.done = done
        async with self.slot_ws:
            self._enqueue(env)
            return await fut

    @property
    def depth(self) -> int:
        return self._in_flight

    # ---- lifecycle ----

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.grader.start()
        impl, why = self.grader.model
        self.metrics.model_compiled.set(1 if impl == "compiled" else 0)
        log.info("ingest: grading with the %s quality model (%s)", impl, why)
        self._tasks = [asyncio.create_task(self._collect(), name="ingest-collect"),
                       asyncio.create_task(self._write(), name="ingest-write")]

    async def drain(self, timeout: float = 10.0) -> bool:
        """Wait until everything received so far is committed (True) or the timeout passes."""
        deadline = time.monotonic() + timeout
        while self._in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self._in_flight == 0

    async def stop(self, drain_timeout: float = 10.0) -> None:
        await self.drain(drain_timeout)
        tasks = [*self._tasks, *self._commits]
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
        self._tasks = []
        while not self._stage.empty():  # batches graded but never committed: not acknowledged, redelivered
            self._stage.get_nowait().cancel()
        while self._writers:
            await self._release_writer(self._writers.pop())
        await self.grader.close()

    # ---- stage 1: batch and prepare ----

    async def _collect(self) -> None:
        """A batch leaves when it is full or `flush_s` after its first message. (Sending a batch as
        soon as a grader is idle was tried: under load its many small batches, each with a commit,
        gave a worse p99 on this machine; see docs/ingest.md.)"""
        cfg = self.config
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()  # (only this loop's thread appends: nothing can slip in between)
                await self._arrived.wait()
            batch: list[Envelope] = []
            deadline = loop.time() + cfg.flush_s
            while True:
                self._take(batch)
                left = deadline - loop.time()
                if len(batch) >= cfg.batch_max or left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            # Graded in the background; the stage queue bounds how many batches are ahead.
            await self._stage.put(asyncio.ensure_future(self.grader.prepare(batch)))

    def _take(self, batch: list[Envelope]) -> None:
        pending, room = self._pending, self.config.batch_max - len(batch)
        if len(pending) <= room:
            batch.extend(pending)
            pending.clear()
        else:
            batch.extend(pending.popleft() for _ in range(room))

    # ---- stage 2: commit, then answer ----

    async def _write(self) -> None:
        """Batches commit on up to `commit_lanes` connections at once -- one batch's round trips and
        fsync overlap the next one's -- and are answered strictly in receive order: a batch that
        committed first waits for the one before it to be answered."""
        loop = asyncio.get_running_loop()
        lanes = asyncio.Semaphore(self.lane_count())
        previous: asyncio.Future[None] | None = None
        while True:
            items = await (await self._stage.get())
            await lanes.acquire()
            answered: asyncio.Future[None] = loop.create_future()
            task = asyncio.create_task(self._commit_then_answer(items, lanes, previous, answered))
            self._commits.add(task)
            task.add_done_callback(self._commits.discard)
            previous = answered

    def lane_count(self) -> int:
        """`commit_lanes`, but one connection of the pool always left to the rest of the gateway (and
        to a lane's retry): each lane keeps a connection, and a lane waiting on an exhausted pool
        would hold up the answers of every batch after it."""
        return max(1, min(self.config.commit_lanes, self.pool.get_max_size() - 1))

    async def _commit_then_answer(self, items: list[Prepared], lanes: asyncio.Semaphore,
                                  previous: asyncio.Future[None] | None, answered: asyncio.Future[None]) -> None:
        try:
            started = time.perf_counter()
            try:
                refs, applied = await self._commit_with_retry(items)
            finally:
                lanes.release()
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
            if previous is not None:
                await previous  # cancelled when the batch before was: then this one is not answered either
            now = datetime.now(UTC)
            self.metrics.batch_size.observe(len(items))
            self.committed_batches += 1
            try:
                outcomes = self._outcomes(items, refs, applied)
            except Exception:  # a bug: the batch is committed all the same, so it is still answered
                log.exception("ingest: the outcomes of a committed batch of %d could not be made", len(items))
                self.metrics.internal_errors.labels("outcomes").inc()
                outcomes = {id(it): Outcome("committed", it.kind, it.device_id) for it in items}
            self._answer(items, outcomes, now)
            answered.set_result(None)
        except asyncio.CancelledError:
            answered.cancel()  # stopping: what is not answered is not acknowledged, the broker redelivers it
            raise
        except Exception:  # a bug here must not leave every later batch waiting for this one forever
            log.exception("ingest: answering a batch of %d failed", len(items))
            self.metrics.internal_errors.labels("answer").inc()
            answered.set_result(None)

    async def _take_writer(self) -> asyncpg.pool.PoolConnectionProxy:
        """A writer connection, kept from batch to batch: returning it to the pool after each batch
        cost a reset round trip, and keeping it lets its staging table be made once
        (registry.samples.prepare_session). One per commit lane; after a failed commit it goes back
        to the pool (_release_writer) and the next attempt starts on a fresh one."""
        if self._writers:
            return self._writers.pop()
        conn = await self.pool.acquire()
        try:
            await prepare_session(conn)
        except BaseException:
            await self._release_writer(conn)
            raise
        return conn

    async def _release_writer(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        self._untidy.pop(id(conn), None)
        try:
            await self.pool.release(conn)  # the pool resets it, or closes it if it is broken
        except Exception:  # a dead connection: the pool makes a new one next time
            log.debug("ingest: releasing a writer connection failed", exc_info=True)

    async def _commit_with_retry(self, items: list[Prepared]) -> tuple[dict[int, tuple[bool, SampleRef | None]], dict[int, bool]]:
        delay = 0.05
        unexplained = 0
        partitions_made = False
        while True:
            try:
                return await self._commit(items)
            except Exception as exc:  # noqa: BLE001 - classified below: transient, refused content, or a bug
                retry = is_transient(exc)
                if is_missing_partition(exc) and not partitions_made:  # today's were not made yet: once
                    partitions_made = retry = await self._make_partitions()
                if not retry and not refuses_content(exc) and unexplained < UNEXPLAINED_RETRIES:
                    unexplained += 1  # neither the connection nor the content for sure: try again before blaming an item
                    retry = True
                if retry:
                    self.metrics.db_retries.inc()
                    log.warning("ingest commit failed (%s: %s); retrying in %.2fs", type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self.config.retry_max_s)
                    continue
                if len(items) == 1:
                    if items[0].kind == "reject":  # even the reject row is refused: nothing left to try
                        log.error("ingest: could not store reject %r: %s", items[0].reject, exc)
                        self.metrics.rejected.labels("storage_failed").inc()
                        return {}, {}
                    self._to_reject(items[0], f"storage: {type(exc).__name__}: {exc}")
                    continue
                log.error("ingest batch refused (%s: %s); committing its %d items one by one",
                          type(exc).__name__, exc, len(items))
                refs: dict[int, tuple[bool, SampleRef | None]] = {}
                applied: dict[int, bool] = {}
                for it in items:  # results are keyed by id(item), so they merge as they are
                    r, a = await self._commit_with_retry([it])
                    refs.update(r)
                    applied.update(a)
                return refs, applied

    async def _make_partitions(self) -> bool:
        """Create the readings' partitions around today (registry/partitions.py); True when done."""
        try:
            made = await partitions.ensure_ahead(self.pool, datetime.now(UTC).date(), 1)
        except Exception as exc:  # noqa: BLE001 -- then the batch is refused as any other
            log.error("ingest: no partition for a reading and making them failed (%s: %s)", type(exc).__name__, exc)
            return False
        log.warning("ingest: a reading had no partition; made %s", made or "none (made meanwhile)")
        return True

    def _to_reject(self, it: Prepared, reason: str) -> None:
        env = it.env
        it.kind, it.row, it.data = "reject", None, None
        it.reject = RejectRow(received_at=env.received_at, source=env.source, topic=env.topic[:256],
                              device_id=it.device_id, reason_key=reason_key(reason), reason=reason[:1000],
                              payload=truncate(env.payload, self.config.payload_limit), payload_size=env.size)

    async def _commit(self, items: list[Prepared]) -> tuple[dict[int, tuple[bool, SampleRef | None]], dict[int, bool]]:
        """One transaction on a writer connection. Returns, keyed by id(item): samples -> (new, ref
        for WebSocket answers); status items -> applied (False when older than the stored status)."""
        conn = await self._take_writer()
        try:
            async with conn.transaction():
                result = await self._write_batch(conn, items)
        except BaseException:
            await self._release_writer(conn)
            raise
        await self._tidy(conn)
        return result

    async def _tidy(self, conn: asyncpg.pool.PoolConnectionProxy) -> None:
        """After a commit: every TIDY_EVERY batches, vacuum the writer's staging table, then keep the
        writer. The batch is committed whatever happens here: a failure (or a cancel) only costs the
        connection, which goes back to the pool, and the next batch starts on a fresh one."""
        n = self._untidy.get(id(conn), 0) + 1
        if n >= TIDY_EVERY:
            try:
                await tidy_session(conn)
            except asyncio.CancelledError:
                await self._release_writer(conn)
                raise
            except Exception as exc:  # noqa: BLE001 -- whatever it is, it costs only the connection
                log.warning("ingest: vacuuming a writer's staging table failed (%s: %s); the writer is replaced",
                            type(exc).__name__, exc)
                await self._release_writer(conn)
                return
            n = 0
        self._untidy[id(conn)] = n
        self._writers.append(conn)

    async def _write_batch(self, conn: asyncpg.pool.PoolConnectionProxy,
                           items: list[Prepared]) -> tuple[dict[int, tuple[bool, SampleRef | None]], dict[int, bool]]:
        samples = [it for it in items if it.kind == "sample"]
        rejects = [it.reject for it in items if it.kind == "reject" and it.reject is not None]
        touches: dict[str, reg_devices.DeviceTouch] = {}
        refs: dict[int, tuple[bool, SampleRef | None]] = {}
        applied: dict[int, bool] = {}
        if samples:
            res = await store_samples(conn, [it.row for it in samples if it.row is not None], session_ready=True)
            for it, new, lot in zip(samples, res.new, res.lot_ids):
                refs[id(it)] = (new, None)
                if new and it.row is not None:
                    it.row["linked_lot_id"] = lot  # the lot the registry linked it to (None: unlinked)
                t = touches.get(it.device_id or "")
                if t is None:  # not setdefault: that would build a DeviceTouch per sample
                    t = touches[it.device_id or ""] = reg_devices.DeviceTouch(it.env.received_at)
                elif it.env.received_at > t.last_seen:
                    t.last_seen = it.env.received_at
                if new:
                    t.stored += 1
                    ma = it.row["measured_at"] if it.row else None
                    if ma is not None and (t.last_sample_at is None or ma > t.last_sample_at):
                        t.last_sample_at = ma
                else:
                    t.duplicates += 1
            ws_keys = [it.key for it in samples if it.env.source == "ws" and it.key is not None]
            if ws_keys:
                found = await sample_refs(conn, ws_keys)
                for it in samples:
                    if it.env.source == "ws" and it.key is not None:
                        refs[id(it)] = (refs[id(it)][0], found.get(it.key))
        if rejects:
            await insert_rejects(conn, rejects)
            for it in items:
                if it.kind == "reject" and it.device_id:
                    t = touches.setdefault(it.device_id, reg_devices.DeviceTouch(it.env.received_at))
                    t.rejects += 1
        # Device rows come last, one batch at a time (a transaction-scoped advisory lock, also
        # across gateway replicas): statuses, telemetry and touches each lock rows in their own
        # order, and two batches doing that at once could deadlock.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", DEVICES_LOCK)
        latest_tel: dict[str, Prepared] = {}
        for it in items:
            if it.kind == "status" and it.data is not None:
                applied[id(it)] = await reg_devices.apply_status(conn, it.data, it.env.received_at)
            elif it.kind == "telemetry" and it.data is not None:
                latest_tel[it.data["device_id"]] = it  # QoS 0 snapshots: the newest of the batch is enough
            elif it.kind == "result" and it.data is not None and it.device_id:
                await reg_devices.apply_result(conn, it.device_id, it.data, it.env.received_at)
        for dev in sorted(latest_tel):
            it = latest_tel[dev]
            assert it.data is not None
            await reg_devices.apply_telemetry(conn, it.data, it.env.received_at)
        touches.pop("", None)
        await reg_devices.touch_devices(conn, touches)
        return refs, applied

    def _outcomes(self, items: list[Prepared], refs: dict[int, tuple[bool, SampleRef | None]],
                  applied: dict[int, bool]) -> dict[int, Outcome]:
        m = self.metrics
        out: dict[int, Outcome] = {}
        stored = dups = 0
        grades: dict[str, int] = {}
        for it in items:
            if it.kind == "sample" and it.row is not None:
                new, ref = refs.get(id(it), (False, None))
                row = it.row
                o = Outcome("saved" if new else "duplicate", "sample", row["device_id"], row["boot"], row["seq"],
                            lot_id=row.get("linked_lot_id"))
                if ref is not None:
                    o.sample_id, o.score, o.grade, o.lot_id = ref.id, ref.score, ref.grade, ref.lot_id
                elif new:
                    o.score, o.grade = row["score"], row["grade"]
                if new:
                    stored += 1
                    g = row["grade"] or "none"
                    grades[g] = grades.get(g, 0) + 1
                    for f in it.clock_flags:
                        m.clock_flags.labels(f).inc()
                else:
                    dups += 1
            elif it.kind == "reject" and it.reject is not None:
                o = Outcome("rejected", _topic_kind(it.env.topic) if it.env.kind_hint is None else it.env.kind_hint,
                            it.device_id, reason=it.reject.reason)
                m.rejected.labels(it.reject.reason_key).inc()
            else:
                ok = applied.get(id(it), True)
                o = Outcome("applied" if ok else "stale", it.kind, it.device_id)
                m.device_updates.labels(it.kind).inc()
            out[id(it)] = o
        if stored:
            m.stored.inc(stored)
        if dups:
            m.duplicates.inc(dups)
        for g, n in grades.items():
            m.grades.labels(g).inc(n)
        return out

    def _answer(self, items: list[Prepared], outcomes: dict[int, Outcome], now: datetime) -> None:
        """Each message's `done` (its ack, its answer); never raises (a source's room or a slot not
        given back would shrink the intake for good), whatever a callback, a metric or a listener does."""
        m = self.metrics
        for it in items:
            done = it.env.done
            try:
                if done is not None:
                    done(outcomes[id(it)])
            except Exception:  # an answer that cannot be sent (client gone) must not stop the others
                log.exception("ingest: answering %s failed", it.env.topic)
            finally:
                self._in_flight -= 1
        try:
            # per message, observed per batch (one lock round per bucket, not two per message)
            observe_many(m.latency_seconds, [max(0.0, (now - it.env.received_at).total_seconds()) for it in items])
            observe_many(m.lag_seconds, [max(0.0, (now - ma).total_seconds()) for it in items
                                         if it.kind == "sample" and it.row is not None
                                         and (ma := it.row["measured_at"]) is not None])
        except Exception:
            log.exception("ingest: latency metrics of a batch failed")
            m.internal_errors.labels("metrics").inc()
        for fn in self._listeners:
            try:
                fn(items, outcomes)
            except Exception:
                log.exception("ingest listener failed")
                m.internal_errors.labels("listener").inc()


def _topic_kind(topic: str) -> str:
    parts = topic.split("/", 3)
    kind = parts[3] if len(parts) == 4 else "unknown"
    return kind if kind in ("sample", "status", "telemetry", "cmd/result", "cmd") else "other"
