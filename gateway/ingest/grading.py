"""Decode + validate + grade a batch off the event loop, in a small pool of worker processes.

Why processes: the contract decoder and the quality model are pure Python (they also run on the
board), about 0.4-0.7 ms of CPU a sample, and they hold the GIL. In a thread they competed with the
event loop (paho, asyncpg, acks) for one core; in worker processes they use the other cores while
the event loop does I/O. Work goes out in chunks of a batch (never one task per message: pickling
and the pipe would cost more than the grading), and results come back in input order.

What crosses the process boundary is plain data: the message fields in, (kind, device id, row,
data, reject, clock flags) out. A sample row comes back with its whole PostgreSQL COPY line already
made (`registry.samples.encode_row`: escaping, float32 reals, timestamps, features and raw as
compact blobs), so the event loop only numbers the lines and sends them; the row keeps the small columns the
gateway answers and counts from, not `features` and `raw`. Pickling is kept cheap (it runs in the
gateway too): times cross as integer microseconds, the line as bytes (a datetime or a str subclass
pickles through __reduce__, which made a result row cost 49 us to pickle instead of 15);
`Grader.prepare` gives the rows back their datetimes. A chunk's pickled results cross through a
file and only its name through the pool's pipe (`run_spilled`: a worker killed mid-write cannot
leave half a message there).

A worker that dies (killed, out of memory, a crash in an extension) breaks the pool: the pool is
rebuilt and the chunk re-run whole once (most deaths have nothing to do with the messages). If it
breaks the pool again, it is re-run one message at a time, one message in flight at a time, so only
a message that kills a fresh worker by itself twice is blamed; it becomes a reject
('internal: grading worker died ...'), its neighbours are graded normally. `workers=0` prepares in
a thread of this process instead (same function, same results).

Workers come from a fork server that has imported this module once: a worker (re)start is a fork
of a small single-threaded process, not a new interpreter, and never a fork of the gateway itself
(its threads -- paho, the asyncio executor -- would be copied mid-flight). A worker holds both ends
of its task queue, so it would outlive a SIGKILLed gateway (and keep the fork server alive): each
one watches a lifeline pipe whose only write end is the gateway's and exits when it closes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqalfw import codec

from gateway.ingest import model
from gateway.ingest.envelope import Envelope
from gateway.ingest.prepare import DEFAULT_CLOCK, ClockPolicy, Prepared, prepare, reject_of
from registry import blobs
from registry.samples import ENCODED, encode_row

log = logging.getLogger(__name__)

# (source, topic, payload, received_at in us since the epoch, size, obj, kind_hint, path_device_id, pre_reject)
Wire = tuple[str, str, bytes, int, int, Any, str | None, str | None, str | None]
# (kind, device_id, row, data, reject, clock_flags); a row as `_pack_row` leaves it
Result = tuple[Any, ...]
WorkFn = Callable[[Sequence[Wire], ClockPolicy, int], list[Result]]

MIN_CHUNK = 25  # below this a batch is not split: the round trip to a worker costs more than it saves


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _to_us(t: datetime) -> int:
    if t.tzinfo is None:  # naive = local time, as datetime.timestamp() reads it
        t = t.astimezone(UTC)
    return (t - _EPOCH) // _US  # exact (integer arithmetic), unlike a float timestamp


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def to_wire(env: Envelope) -> Wire:
    return (env.source, env.topic, env.payload, _to_us(env.received_at), env.size, env.obj, env.kind_hint,
            env.path_device_id, env.pre_reject)


def _dumps(v: Any) -> str:
    """orjson: about 9x faster than json.dumps on a sample's features and raw (0.08 -> 0.01 ms a
    reading). A value it refuses (a non-str key, an unknown type) gets the stdlib's rules as before."""
    try:
        return orjson.dumps(v).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(v, default=str)


def _raw_blob(sample: dict[str, Any]) -> bytes:
    """The raw sample as stored: its contract binary form (the compiled codec when built), deflated
    (registry/blobs.py); a sample the binary form refuses keeps its JSON."""
    try:
        return blobs.pack_raw(model.codec.encode_sample_bin(sample))
    except Exception:  # noqa: BLE001 -- decoded samples always encode; this only keeps a bug from costing the row
        return blobs.pack_raw(_dumps(sample).encode())


def _pack_row(row: dict[str, Any]) -> dict[str, Any]:
    """In the worker: the row's COPY line made here (`registry.samples.encode_row`, features and raw
    packed as blobs: features as orjson text deflated, raw in its binary form deflated), so the event
    loop only numbers it; the row keeps the small columns the gateway answers and counts from (not
    features, raw or received_at, which the gateway has), measured_at as microseconds. A row the
    registry would refuse goes back unencoded (blobs as bytes): store_samples then refuses it on the
    event loop and the pipeline stores it as a reject."""
    row["features"] = blobs.pack_features(_dumps(row["features"]))
    row["raw"] = _raw_blob(row["raw"])
    try:
        row[ENCODED] = encode_row(row)
    except Exception:  # noqa: BLE001, S110 -- refused again, with its reason, at commit
        pass
    else:
        del row["features"], row["raw"]
    del row["received_at"]
    ma = row["measured_at"]
    row["measured_at"] = None if ma is None else _to_us(ma)
    return row


def _unpack_row(row: dict[str, Any], env: Envelope) -> dict[str, Any]:
    """In the gateway: the row as prepare() made it, minus features and raw when its COPY line came
    along (else they are the blobs, which store_samples keeps as they are)."""
    row["received_at"] = env.received_at
    ma = row["measured_at"]
    if ma is not None:
        row["measured_at"] = _from_us(ma)
    return row


def prepare_wire(wires: Sequence[Wire], policy: ClockPolicy, payload_limit: int) -> list[Result]:
    """The worker's job (module level so it pickles by name): prepare() each message, then encode
    the row's JSON columns here rather than on the event loop."""
    out: list[Result] = []
    for w in wires:
        env = Envelope(w[0], w[1], w[2], _from_us(w[3]), size=w[4], obj=w[5], kind_hint=w[6],
                       path_device_id=w[7], pre_reject=w[8])
        p = prepare(env, policy, payload_limit)
        row = None if p.row is None else _pack_row(p.row)
        out.append((p.kind, p.device_id, row, p.data, p.reject, p.clock_flags))
    return out


# A result larger than this goes back through a file (see run_spilled): a pipe write of at most
# PIPE_BUF (4096) bytes is atomic, so a worker killed while answering leaves no half message.
INLINE_MAX = 3072
_spills = itertools.count()


def run_spilled(fn: WorkFn, spill_dir: str, wires: Sequence[Wire], policy: ClockPolicy,
                limit: int) -> tuple[str, bytes | str]:
    """In the worker: `fn`'s results pickled, inline when small, else written to a file in
    `spill_dir` whose name alone is sent back. Why: the pool's result pipe is one for all workers
    and the gateway holds its write end too, so a worker killed in the middle of writing a chunk's
    results (hundreds of KB, many write() calls) left half a message that the pool's manager thread
    waited on forever -- no EOF, no broken pool: the ingest stopped. A file cut short is never read."""
    data = pickle.dumps(fn(wires, policy, limit), protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) <= INLINE_MAX:
        return ("inline", data)
    path = os.path.join(spill_dir, f"{os.getpid()}-{next(_spills)}.pickle")
    with open(path, "wb") as f:
        f.write(data)
    return ("file", path)


def _unspill(kind: str, value: bytes | str) -> list[Result]:
    if kind == "inline":
        assert isinstance(value, bytes)
        return pickle.loads(value)  # type: ignore[no-any-return]
    assert isinstance(value, str)
    try:
        with open(value, "rb") as f:
            return pickle.loads(f.read())  # type: ignore[no-any-return]
    finally:
        os.unlink(value)


def _noop() -> int:
    return os.getpid()


def _model_in_worker() -> tuple[str, str]:
    """What a worker grades with (it imported the model in the fork server, not in the gateway)."""
    return model.describe()


def _watch_lifeline(lifeline: Any) -> None:
    """Worker initializer: exit as soon as the gateway is gone, however it died (SIGKILL included)."""
    # Ctrl-C in a terminal reaches the whole process group: the gateway shuts the pool down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        try:
            lifeline.recv_bytes()  # the gateway never writes: this returns only at EOF
        except (EOFError, OSError):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


class Grader:
    """`await grader.prepare(envelopes) -> [Prepared]`, same order, never raises for a message."""

    def __init__(self, workers: int, policy: ClockPolicy = DEFAULT_CLOCK, payload_limit: int = 4096,
                 fn: WorkFn = prepare_wire) -> None:
        self.workers = max(0, workers)
        self.policy = policy
        self.payload_limit = payload_limit
        self.fn = fn
        self._pool: ProcessPoolExecutor | None = None
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload([__name__])  # applies when the fork server starts (once per process)
        self._lifeline: tuple[Any, Any] | None = None  # (read end for workers, write end kept here)
        self._spill_dir: str | None = None  # chunk results too large for one pipe write (run_spilled)
        self._recovering = asyncio.Lock()
        self.restarts = 0  # pools rebuilt after a worker died
        self.crash_rejects = 0  # messages blamed for killing a worker
        self.model = model.describe()  # (implementation, why) of the quality model; the workers' after start()

    # ---- lifecycle ----

    def _new_pool(self) -> ProcessPoolExecutor:
        if self._lifeline is None:
            self._lifeline = self._ctx.Pipe(duplex=False)
        return ProcessPoolExecutor(self.workers, mp_context=self._ctx, initializer=_watch_lifeline,
                                   initargs=(self._lifeline[0],))

    async def start(self) -> None:
        """Start the workers and wait until each has imported the model (so the first batch does
        not pay the start-up)."""
        if self.workers == 0:
            self.model = model.describe()
            return
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _noop) for _ in range(self.workers)))
        self.model = await loop.run_in_executor(self._pool, _model_in_worker)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
        life, self._lifeline = self._lifeline, None
        if life is not None:
            for end in life:
                end.close()
        spill, self._spill_dir = self._spill_dir, None
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)  # with any file a killed worker left behind

    def worker_pids(self) -> list[int]:
        """Live worker processes (tests kill them)."""
        procs = getattr(self._pool, "_processes", None) or {}
        return list(procs)

    # ---- work ----

    async def prepare(self, envs: Sequence[Envelope]) -> list[Prepared]:
        if not envs:
            return []
        wires = [to_wire(e) for e in envs]
        if self.workers == 0:
            results = await asyncio.to_thread(self.fn, wires, self.policy, self.payload_limit)
        else:
            n = max(1, min(self.workers, len(wires) // MIN_CHUNK))
            size = -(-len(wires) // n)
            chunks = [wires[i:i + size] for i in range(0, len(wires), size)]
            parts = await asyncio.gather(*(self._run_chunk(c) for c in chunks))
            results = [r for part in parts for r in part]
        return [Prepared(env, r[0], device_id=r[1], row=None if r[2] is None else _unpack_row(r[2], env),
                         data=r[3], reject=r[4], clock_flags=r[5])
                for env, r in zip(envs, results)]

    async def _submit(self, wires: Sequence[Wire]) -> list[Result]:
        if self._pool is None:
            self._pool = self._new_pool()
        if self._spill_dir is None:
            shm = "/dev/shm"  # memory, when the system has it: the file is written and read once
            self._spill_dir = tempfile.mkdtemp(prefix="sqal-grading-", dir=shm if os.path.isdir(shm) else None)
        loop = asyncio.get_running_loop()
        kind, value = await loop.run_in_executor(self._pool, run_spilled, self.fn, self._spill_dir, wires,
                                                 self.policy, self.payload_limit)
        return _unspill(kind, value)

    def _rebuild(self, broken: ProcessPoolExecutor | None) -> None:
        if broken is not None and broken is self._pool:  # several chunks may see the same break
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            self.restarts += 1

    async def _run_chunk(self, wires: Sequence[Wire]) -> list[Result]:
        for attempt in (1, 2):
            pool = self._pool
            try:
                return await self._submit(wires)
            except BrokenProcessPool as exc:
                log.error("ingest: a grading worker died (%s); %s", exc,
                          "re-grading the chunk" if attempt == 1 else "re-grading it one message at a time")
                self._rebuild(pool)
            except Exception:  # the pool itself failing (cannot start a process...): grade here rather than stall
                log.exception("ingest: grading pool failed; grading %d messages in this process", len(wires))
                return await asyncio.to_thread(self.fn, wires, self.policy, self.payload_limit)
        out: list[Result] = []
        async with self._recovering:  # one message in flight: a crash then points at its message
            for w in wires:
                out.append(await self._run_one(w))
        return out

    async def _run_one(self, w: Wire) -> Result:
        for attempt in (1, 2):
            pool = self._pool
            try:
                return (await self._submit([w]))[0]
            except BrokenProcessPool:
                self._rebuild(pool)
        self.crash_rejects += 1
        device_id = w[7]
        if device_id is None and w[6] is None:
            try:
                device_id = codec.parse_topic(w[1])[0]
            except Exception:  # noqa: BLE001 - any topic the parser refuses: the reject has no device
                device_id = None
        env = Envelope(w[0], w[1], w[2], _from_us(w[3]), size=w[4], kind_hint=w[6], path_device_id=w[7])
        reason = "internal: grading worker died on this message (twice, in a fresh worker each time)"
        p = reject_of(env, reason, device_id, self.payload_limit)
        return (p.kind, p.device_id, p.row, p.data, p.reject, p.clock_flags)
