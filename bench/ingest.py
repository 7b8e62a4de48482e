"""Ingest benchmark on the message engine: stored readings per second end to end, boards' MQTT QoS 1
publishes -> NATS's MQTT listener -> JetStream (the engine's MQTT message stream) -> the gateway -> PostgreSQL, next to
(a) the raw ceiling: a bare consumer on the same stream and durable consumer that only counts, and
(b) the naive design: a plain MQTT QoS 1 subscriber on the engine's MQTT listener that decodes +
grades + stores (the registry's store of one reading) + commits + PUBACKs each message. All are
measured THE SAME WAY, interleaved, in the same run.

The raw ceiling pulls with the gateway's own mechanism, so SQAL / raw compares like with like: the
core-NATS pull of gateway/nats/pull.py (an inbox subscription, pull requests of up to 500 published
to `$JS.API.CONSUMER.MSG.NEXT.$MQTT_msgs.sqal-gateway`, at most the gateway's 5,000 messages
asked for and not acknowledged), each message acknowledged at once by a publish to its reply
subject, as the gateway's ack loop does; it does nothing else. (Until 2026-12-06 it used nats-py's
`fetch`, which the gateway used then: about 20,000 msg/s at 42-47 us a message, against 60,000+ at
about 10 us for the core pull; bench/results.md, round 8.)

1. Throughput = drain rate. N samples are preloaded by publisher processes (each PUBACKed by the
   engine, and counted in the stream -- or in the naive subscriber's offline MQTT session) while
   nobody consumes them; then the consumer starts and the clock runs from its first delivery to
   its last reading counted (raw) or committed (naive, SQAL). The publishers' speed is out of the
   figure: this measures the consumer, the engine and the database.
2. CPU per stored reading, of every process taking part: this process (the gateway's event loop,
   the naive consumer, or the raw one), the grading workers, nats-server and PostgreSQL (psutil
   over the process trees, user + system, from the consumer's start to its last commit). SQAL's
   total beside the naive design's, and their ratio: unlike SQAL / naive in readings/s, it does
   not depend on how many cores the machine has (the naive design is one sequential loop).
3. Latency at half the max rate: publisher processes send live at half the median SQAL drain rate;
   each sample's `ts` is its publish time, the pipeline's commit listener compares it with the
   commit time (publish -> committed, wall clock, same machine).

    .venv/bin/python bench/ingest.py [--n 20000] [--naive-n 3000] [--repeat 3] [--workers N]
    .venv/bin/python bench/ingest.py --live-only RATE   # only the latency run, at RATE readings/s offered
    .venv/bin/python bench/ingest.py --ungraded ...     # each round also drains with grading nearly free

The engine is the one the gateway embeds (gateway.nats.embedded.EmbeddedNats), started by the bench
in its temporary directory: JetStream on disk, the streams and the durable consumer of
gateway/nats/streams.py, the MQTT listener on loopback. SQAL is `IngestService` as the gateway runs
it (grading workers, batches of 500 / 50 ms, two commit lanes, acks after the commit), in this
process, pointed at the engine by URL. --ungraded adds a drain with grading replaced by a cached
result per device (bench/ungraded.py): the rest of the pipeline's ceiling on this machine.

Every stream's ten devices are first assigned to a lot in inspection, and each drain checks that all
its readings are stored once and linked to it: the production path (lot lookup, foreign key, lot
index, lot_events), for naive and SQAL alike. The publishers stand in for devices, which do not run
on the gateway's cores in production: they use bench/lean_publisher.py and are not counted in the
CPU figures (they have finished before a drain starts).

PostgreSQL is the embedded server with its default durability (fsync on). Everything shares this
machine's cores: see docs/ingest.md for how to read the figures, bench/results.md for every run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import paho.mqtt.client as paho
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support import (
    ProcessCpu,
    check_linked,
    check_stamp,
    cpu_line,
    load,
    lot_in_inspection,
    new_prefix,
    pct,
    per_reading_ms,
    publish,
    publish_all,
    spread,
)
from bench.ungraded import prepare_cached
from gateway.ingest import model
from gateway.ingest.envelope import Envelope
from gateway.ingest.grading import WorkFn
from gateway.ingest.prepare import ClockPolicy, prepare
from gateway.ingest.service import IngestService, IngestSettings
from gateway.nats import streams, subjects
from gateway.nats.embedded import EmbeddedNats
from gateway.nats.pull import PullConsumer, PullSettings
from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate_dsn
from registry.samples import store_samples

SAMPLE_FILTER = "sqal/v1/+/sample"
PULL_BATCH = IngestSettings.batch_max  # a raw pull request asks for this many, as the gateway's (NatsConfig.fetch_batch)
RAW_CAPACITY = IngestSettings.queue_max  # and the raw consumer holds no more unacknowledged (NatsConfig.capacity)
DRAIN_TIMEOUT_S = 600.0


# ---- the engine ----

class Engine:
    """The message engine as the gateway embeds it, started by the bench: nats-server with JetStream
    on disk and the boards' MQTT listener (EmbeddedNats), the SQAL streams and the durable consumer
    created as a gateway creates them (streams.ensure), and a connection of the bench's own to look
    at the stream, purge it, pause and resume the consumer."""

    def __init__(self, data_dir: Path) -> None:
        self.server = EmbeddedNats(data_dir, mqtt_port=0)
        self.limits = streams.StreamLimits()
        self._nc: NatsClient | None = None

    async def start(self) -> None:
        await self.server.start()
        self._nc = await nats.connect(self.nats_url)
        await streams.ensure(self.js, self.limits)

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.close()
        await self.server.stop()

    @property
    def js(self) -> JetStreamContext:
        assert self._nc is not None, "engine not started"
        return self._nc.jetstream()

    @property
    def nats_url(self) -> str:
        """The client URL with the gateway's user (as SQAL_NATS_URL would give it)."""
        user, password = self.server.gateway_credentials()
        return self.server.url.replace("nats://", f"nats://{user}:{password}@", 1)

    @property
    def mqtt(self) -> tuple[str, int]:
        assert self.server.mqtt_bound is not None, "engine not started"
        return "127.0.0.1", self.server.mqtt_bound

    async def samples_waiting(self) -> int:
        return int((await self.js.stream_info(streams.SAMPLES)).state.messages)

    async def wait_samples(self, n: int, timeout: float = 60.0) -> None:
        """Until the engine's MQTT message stream holds exactly n messages (a preload stored; a drain's acks applied)."""
        end = time.monotonic() + timeout
        while (got := await self.samples_waiting()) != n:
            if time.monotonic() > end:
                raise RuntimeError(f"{streams.SAMPLES} holds {got} messages, expected {n}")
            await asyncio.sleep(0.05)

    async def preload(self, prefix: str, n: int) -> None:
        """n samples of the stream `prefix` published over MQTT QoS 1 and stored in the engine's MQTT message stream."""
        await self.wait_samples(0)
        await asyncio.to_thread(publish_all, [self.mqtt], prefix, n)
        await self.wait_samples(n)

    async def pause(self) -> None:
        """Nothing is delivered to the durable consumer until resume() (JetStream consumer pause)."""
        until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self.js.pause_consumer(streams.SAMPLES, streams.DURABLE, until)

    async def resume(self) -> None:
        await self.js.resume_consumer(streams.SAMPLES, streams.DURABLE)


# ---- the three consumers, each draining its preloaded backlog ----

def _rate(n: int, first: float, last: float) -> float:
    return (n - 1) / (last - first)


async def raw_fetch_drain(engine: Engine, n: int, meter: ProcessCpu) -> tuple[float, dict[str, float]]:
    """The raw ceiling as issue 19 measured it: a bare nats-py JetStream consumer on the durable,
    `fetch` of FETCH_BATCH then an ack per message, counting only. (msg/s, CPU ms per message)."""
    await engine.preload(new_prefix("RAWF"), n)
    nc = await nats.connect(engine.nats_url)
    sub = await nc.jetstream().pull_subscribe_bind(streams.DURABLE, stream=streams.SAMPLES)
    meter.me = "raw consumer"
    before = meter.snapshot()
    got, first, end = 0, 0.0, time.monotonic() + DRAIN_TIMEOUT_S
    while got < n:
        try:
            msgs = await sub.fetch(min(PULL_BATCH, n - got), timeout=5)
        except NatsTimeoutError:
            if time.monotonic() > end:
                raise RuntimeError(f"raw fetch consumer got {got} of {n}") from None
            continue
        if not got:
            first = time.time()
        for m in msgs:
            await m.ack()
        got += len(msgs)
    last = time.time()
    await nc.flush()
    cpu = ProcessCpu.used(before, meter.snapshot())
    await sub.unsubscribe()
    await nc.close()
    await engine.wait_samples(0)
    return _rate(n, first, last), per_reading_ms(cpu, n)


async def raw_drain(engine: Engine, n: int, meter: ProcessCpu) -> tuple[float, dict[str, float]]:
    """A bare consumer on the gateway's durable consumer, pulling as the gateway does
    (gateway/nats/pull.py, requests of PULL_BATCH, at most RAW_CAPACITY asked for and not
    acknowledged), acknowledging each message at once by a publish to its reply subject, counting
    only. (msg/s, CPU ms per message by process group)."""
    await engine.preload(new_prefix("RAW"), n)
    nc = await nats.connect(engine.nats_url)
    replies: collections.deque[str] = collections.deque()
    arrived = asyncio.Event()
    got = acked = 0
    first = 0.0

    def deliver(msgs: list[Msg]) -> None:
        nonlocal got, first
        if not got:
            first = time.time()
        replies.extend(m.reply for m in msgs)
        got += len(msgs)
        arrived.set()

    pull = PullConsumer(nc, streams.SAMPLES, streams.DURABLE, deliver, lambda: RAW_CAPACITY - (got - acked),
                        PullSettings(batch=PULL_BATCH))
    meter.me = "raw consumer"
    before = meter.snapshot()
    await pull.start()
    end = time.monotonic() + DRAIN_TIMEOUT_S
    while acked < n:
        try:
            await asyncio.wait_for(arrived.wait(), max(0.1, end - time.monotonic()))
        except TimeoutError:
            raise RuntimeError(f"raw consumer got {got} of {n}") from None
        arrived.clear()
        while replies:
            await nc.publish(replies.popleft())
            acked += 1
        pull.wake()
    last = time.time()
    await nc.flush()
    cpu = ProcessCpu.used(before, meter.snapshot())
    await pull.stop()
    await nc.close()
    await engine.wait_samples(0)
    return _rate(n, first, last), per_reading_ms(cpu, n)


def _mqtt_session(host: str, port: int, client_id: str, subscribe: bool) -> None:
    """Create (subscribe=True: clean session off, subscribed to the samples at QoS 1) or drop
    (subscribe=False: a clean-session connect) an MQTT session on the engine."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not subscribe)
    connected, subscribed = threading.Event(), threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(host, port)
    c.loop_start()
    try:
        assert connected.wait(10), "no CONNACK from the engine's MQTT listener"
        if subscribe:
            c.subscribe(SAMPLE_FILTER, 1)
            assert subscribed.wait(10), "session subscription not acknowledged"
    finally:
        c.disconnect()
        c.loop_stop()


async def naive_drain(engine: Engine, pool: asyncpg.Pool, dsn: str, n: int,
                      meter: ProcessCpu) -> tuple[float, dict[str, float]]:
    """The honest straightforward design: an MQTT QoS 1 subscriber with a persistent session on the
    engine's MQTT listener; per message decode + grade, then the registry's store of that one
    reading (dedupe, lot link by the device's assignment, its span, row, raw payload and hour
    aggregate) in its own transaction, then the PUBACK (so it loses nothing either)."""
    cid, prefix = f"bench-naive-{uuid.uuid4().hex[:6]}", new_prefix("NAIVE")
    host, port = engine.mqtt
    lot = await lot_in_inspection(pool, prefix)
    await asyncio.to_thread(_mqtt_session, host, port, cid, True)
    await engine.preload(prefix, n)
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False, manual_ack=True)

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        loop.call_soon_threadsafe(q.put_nowait, m)

    sub.on_message = on_message
    conn = await asyncpg.connect(dsn)
    meter.me = "naive consumer"
    before = meter.snapshot()
    sub.connect(host, port)
    sub.loop_start()
    first = 0.0
    for k in range(n):
        m = await asyncio.wait_for(q.get(), 60)
        if k == 0:
            first = time.time()
        it = prepare(Envelope("mqtt", m.topic, bytes(m.payload), datetime.now(UTC)), ClockPolicy())
        r = it.row
        assert r is not None, it.reject
        await store_samples(conn, [r])  # its own transaction
        sub.ack(m.mid, m.qos)
    last = time.time()
    cpu = ProcessCpu.used(before, meter.snapshot())
    await conn.close()
    sub.disconnect()
    sub.loop_stop()
    # the engine keeps each message for every consumer interested in it: the gateway's durable one
    # still holds the naive run's; they go (nothing else is in the stream now)
    await engine.js.purge_stream(streams.SAMPLES, subject=streams.MQTT_PREFIX + subjects.QOS1[0])
    await asyncio.to_thread(_mqtt_session, host, port, cid, False)
    await check_linked(pool, prefix, lot, n)
    return _rate(n, first, last), per_reading_ms(cpu, n)


class Watch:
    """Commit listener: counts this run's stored samples, first receive time, last commit time and
    publish -> commit latencies."""

    def __init__(self, prefix: str, n: int) -> None:
        self.prefix, self.n = prefix, n
        self.stored, self.first, self.last = 0, float("inf"), 0.0
        self.lat: list[float] = []
        self.lat_in: list[float] = []  # publish -> received by the gateway (publisher, engine, pull)
        self.finished = asyncio.Event()

    def __call__(self, items: list[Any], outcomes: dict[int, Any]) -> None:
        now = time.time()
        for it in items:
            row = it.row
            if row is None or not row["device_id"].startswith(self.prefix) or outcomes[id(it)].status != "saved":
                continue
            self.stored += 1
            self.first = min(self.first, it.env.received_at.timestamp())
            published = row["measured_at"].timestamp()  # measured_at = publish time (synced ts)
            self.lat.append(now - published)
            self.lat_in.append(it.env.received_at.timestamp() - published)
        self.last = now
        if self.stored >= self.n:
            self.finished.set()


def service(engine: Engine, pool: asyncpg.Pool, workers: int | None) -> IngestService:
    """The gateway's ingest, on the bench's engine by URL (as with SQAL_NATS_URL)."""
    host, port = engine.mqtt
    return IngestService(pool, IngestSettings(nats_url=engine.nats_url, mqtt_url=f"mqtt://{host}:{port}",
                                              limits=engine.limits, workers=workers))


async def sqal_drain(engine: Engine, pool: asyncpg.Pool, n: int, workers: int | None, meter: ProcessCpu,
                     grade: WorkFn | None = None) -> tuple[float, dict[str, float]]:
    """(stored readings/s, CPU ms per stored reading by process group). The consumer is paused while
    the service starts (its grading workers' start-up is not per reading). `grade` replaces the
    grading workers' function (bench/ungraded.py for --ungraded)."""
    prefix = new_prefix("SQAL")
    lot = await lot_in_inspection(pool, prefix)
    await engine.preload(prefix, n)
    await engine.pause()
    svc = service(engine, pool, workers)
    if grade is not None:
        svc.pipeline.grader.fn = grade
    w = Watch(prefix, n)
    svc.pipeline.add_listener(w)
    await svc.start()
    meter.me = "gateway process"
    before = meter.snapshot()
    await engine.resume()
    await asyncio.wait_for(w.finished.wait(), DRAIN_TIMEOUT_S)
    cpu = ProcessCpu.used(before, meter.snapshot())
    await svc.stop()
    await engine.wait_samples(0)
    await check_linked(pool, prefix, lot, n)
    return _rate(n, w.first, w.last), per_reading_ms(cpu, n)


async def sqal_live(engine: Engine, pool: asyncpg.Pool, n: int, rate: float,
                    workers: int | None) -> tuple[float, list[float], list[float]]:
    prefix = new_prefix("LIVE")
    lot = await lot_in_inspection(pool, prefix)
    svc = service(engine, pool, workers)
    w = Watch(prefix, n)
    svc.pipeline.add_listener(w)
    await svc.start()
    ps, ready = publish([engine.mqtt], prefix, n, procs=2, rate=rate)
    await asyncio.sleep(2)  # publisher processes connected (spawn start-up is not part of the run)
    ready.set()
    await asyncio.wait_for(w.finished.wait(), DRAIN_TIMEOUT_S)
    for p in ps:
        await asyncio.to_thread(p.join)
        assert p.exitcode == 0, "publisher failed"
    await svc.stop()
    await engine.wait_samples(0)
    await check_linked(pool, prefix, lot, n)
    return _rate(n, w.first, w.last), w.lat, w.lat_in


RAW_BAR, CPU_BAR, P99_BAR_MS = 0.6, 1 / 8, 250.0  # the message engine issue's targets


def bars(ratios_raw: list[float], ratios_fetch: list[float], cpu_ratios: list[float], p99_ms: float) -> str:
    """One line: in how many rounds each per-round target was met (with the median), and the latency
    target. A ratio on the bar meets it; the latency bar is strict."""
    def met(xs: list[float], ok: list[bool]) -> str:
        return f"{sum(ok)} of {len(xs)} rounds (median {statistics.median(xs):.2f})"

    return (f"targets: SQAL >= {RAW_BAR} x raw in {met(ratios_raw, [x >= RAW_BAR for x in ratios_raw])}, "
            f"x nats-py fetch raw in {met(ratios_fetch, [x >= RAW_BAR for x in ratios_fetch])}; "
            f"CPU per stored reading SQAL / naive <= 1/8 in "
            f"{met(cpu_ratios, [x <= CPU_BAR for x in cpu_ratios])}; "
            f"p99 < {P99_BAR_MS:.0f} ms at half rate: {'met' if p99_ms < P99_BAR_MS else 'missed'} ({p99_ms:.0f} ms)")


def latency_line(lat: list[float], lat_in: list[float]) -> str:
    return (f"latency publish->commit p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} ms, max {pct(lat, 1):.0f} ms; "
            f"publish->received p50 {pct(lat_in, .5):.0f} ms, p99 {pct(lat_in, .99):.0f} ms")


async def run(args: argparse.Namespace, tmp: Path) -> None:
    engine = Engine(tmp / "engine")
    pg = EmbeddedPostgres(tmp / "pg", fsync=True)
    await engine.start()
    pool: asyncpg.Pool | None = None
    try:
        dsn = pg.start()
        await migrate_dsn(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
        assert pool is not None
        print(f"start: {load()}; engine nats-server {engine.server.url} (pid {engine.server.pid}), "
              f"MQTT on port {engine.mqtt[1]}")
        impl, why = model.describe()
        print(f"quality model: {impl} ({why}); SQAL_INGEST_MODEL=pure selects the pure one", flush=True)
        meter = ProcessCpu(tmp)
        n_live = max(2000, args.n // 2)
        if args.live_only is not None:
            stored, lat, lat_in = await sqal_live(engine, pool, n_live, args.live_only, args.workers)
            print(f"SQAL live ({args.live_only:,.0f}/s offered by 2 publishers, {n_live:,} readings): "
                  f"{stored:,.0f}/s stored, {latency_line(lat, lat_in)} ({load()})")
            return
        raws: list[float] = []
        fetch_raws: list[float] = []
        naives: list[float] = []
        sqals: list[float] = []
        ungraded: list[float] = []
        cpu_ratios: list[float] = []
        for r in range(args.repeat):
            raw, raw_cpu = await raw_drain(engine, args.n, meter)
            fetch_raw, fetch_cpu = await raw_fetch_drain(engine, args.n, meter)
            naive, naive_cpu = await naive_drain(engine, pool, dsn, args.naive_n, meter)
            rate, cpu = await sqal_drain(engine, pool, args.n, args.workers, meter)
            raws.append(raw)
            fetch_raws.append(fetch_raw)
            naives.append(naive)
            sqals.append(rate)
            cpu_ratios.append(sum(cpu.values()) / sum(naive_cpu.values()))
            print(f"round {r + 1}: raw {raw:,.0f} msg/s (nats-py fetch {fetch_raw:,.0f}), naive {naive:,.0f}/s, "
                  f"SQAL {rate:,.0f}/s = {rate / raw:.2f} raw ({rate / fetch_raw:.2f} fetch raw); "
                  f"CPU per stored reading SQAL {sum(cpu.values()):.3f} ms, naive {sum(naive_cpu.values()):.3f} ms: "
                  f"SQAL / naive {cpu_ratios[-1]:.3f} = 1/{1 / cpu_ratios[-1]:.1f}  ({load()})", flush=True)
            print(f"  SQAL CPU ms per stored reading: {cpu_line(cpu)}")
            print(f"  naive CPU ms per stored reading: {cpu_line(naive_cpu)}")
            print(f"  raw CPU ms per message: {cpu_line(raw_cpu)}; nats-py fetch: {cpu_line(fetch_cpu)}", flush=True)
            if args.ungraded:
                rate, cpu = await sqal_drain(engine, pool, args.n, args.workers, meter, grade=prepare_cached)
                ungraded.append(rate)
                print(f"  ungraded (grading nearly free): {rate:,.0f}/s = {rate / raw:.2f} raw; CPU ms per "
                      f"stored reading: {cpu_line(cpu)}", flush=True)
        full = statistics.median(sqals)
        half, lat, lat_in = await sqal_live(engine, pool, n_live, full / 2, args.workers)
        print(f"raw ceiling (bare consumer on the durable, the gateway's core-NATS pull of {PULL_BATCH} a request + "
              f"an ack each, counts only), drain: {spread(raws)} msg/s")
        print(f"raw ceiling as issue 19 measured it (bare nats-py consumer on the durable: fetch {PULL_BATCH} + "
              f"an ack each, counts only), drain: {spread(fetch_raws)} msg/s")
        print(f"naive (MQTT QoS 1 subscriber: decode + grade + store/commit + PUBACK per message), drain: "
              f"{spread(naives)} readings/s")
        print(f"SQAL pipeline, drain: {spread(sqals)} stored readings/s")
        if ungraded:
            print(f"SQAL ungraded (grading nearly free), drain: {spread(ungraded)} stored readings/s")
        ratios_raw = [s / r for s, r in zip(sqals, raws, strict=True)]
        ratios_fetch = [s / r for s, r in zip(sqals, fetch_raws, strict=True)]
        print(f"ratios per round: SQAL / raw {', '.join(f'{x:.2f}' for x in ratios_raw)}; SQAL / nats-py fetch raw "
              f"{', '.join(f'{x:.2f}' for x in ratios_fetch)}; CPU per stored reading "
              f"SQAL / naive {', '.join(f'{x:.3f}' for x in cpu_ratios)}; readings/s SQAL / naive "
              f"{', '.join(f'{s / v:.1f}x' for s, v in zip(sqals, naives, strict=True))}")
        print(f"SQAL live at half the median max rate ({full / 2:,.0f}/s offered by 2 publishers, {n_live:,} readings): "
              f"{half:,.0f}/s stored, {latency_line(lat, lat_in)}")
        print(bars(ratios_raw, ratios_fetch, cpu_ratios, pct(lat, .99)))
        print(f"end: {load()}")
    finally:
        if pool is not None:
            await pool.close()
        await engine.stop()
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=20000, help="samples per raw / SQAL drain")
    ap.add_argument("--naive-n", type=int, default=3000, help="samples per naive drain")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (raw, naive, SQAL), interleaved")
    ap.add_argument("--workers", type=int, default=None, help="grading processes (default: the gateway's)")
    ap.add_argument("--live-only", type=float, default=None, metavar="RATE",
                    help="skip the drains: only the live latency run, at RATE readings/s offered")
    ap.add_argument("--ungraded", action="store_true",
                    help="each round also drains with grading nearly free (bench/ungraded.py): the rest of "
                         "the pipeline's ceiling on this machine")
    args = ap.parse_args()
    check_stamp()
    tmp = Path(tempfile.mkdtemp(prefix="sqal-bench-"))
    tmp.chmod(0o711)  # the unprivileged postgres user must traverse it when we run as root
    try:
        asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
