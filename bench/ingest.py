"""Ingest benchmark: stored readings per second end to end through Mosquitto into PostgreSQL, next to
(a) the raw ceiling: a bare paho subscriber that only counts, and (b) the naive design: decode + grade
+ one INSERT (one commit) + one PUBACK per message. All three are measured THE SAME WAY, in the same run:

1. Throughput = drain rate. The consumer's persistent session (clean session off, fixed client id) is
   created, the consumer goes away, N samples are preloaded into Mosquitto for it by several
   publisher processes (each PUBACKed, so the broker owns them), then the consumer starts and we time
   first delivery -> last reading counted (raw) / committed (naive, SQAL). The publisher's own speed
   is out of the figure: this measures the consumer, the broker and the database.
2. Latency at half the max rate: publisher processes send live at half the SQAL drain rate (split
   between them); each sample's `ts` is its publish time, the pipeline's commit listener compares it
   with the commit time (publish -> committed, wall clock, same machine).

    .venv/bin/python bench/ingest.py [--n 20000] [--naive-n 3000] [--repeat 3] [--workers N]
    .venv/bin/python bench/ingest.py --live-only RATE   # only the latency run, at RATE readings/s offered
    .venv/bin/python bench/ingest.py --ungraded ...     # each round also drains with grading nearly free
    .venv/bin/python bench/ingest.py --live-only RATE --embedded-broker   # through the embedded amqtt broker

--ungraded adds a fourth drain to each round: the SQAL pipeline with grading replaced by a cached result
per device (bench/ungraded.py). Intake, workers' round trip, COPY, dedupe, linking and acks all run:
the rate is a ceiling no faster decoding or grading could pass on this machine.

Each SQAL round also prints the CPU per stored reading of each process group (psutil): grading
workers, the gateway process, PostgreSQL, Mosquitto. SQAL_INGEST_MODEL=pure runs the pure-Python
quality model instead of the compiled one (docs/ingest.md).

Every stream's ten devices are first assigned to a lot in inspection, and each drain checks that all
its readings are stored once and linked to it: the production path (lot lookup, foreign key, lot
index, lot_events), for naive and SQAL alike. The publishers stand in for devices, which do not run
on the gateway's cores in production: they use bench/lean_publisher.py (paho took 0.7 of the two
cores at the latency run's rate).

PostgreSQL is the embedded server with its default durability (fsync on). Mosquitto: persistence on
(autosave every second), max_inflight_messages 1000. Everything (broker, database, bench, gateway
workers) shares this machine's cores: see docs/ingest.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as paho
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqalfw import codec  # noqa: E402

from bench.lean_publisher import LeanPublisher  # noqa: E402
from bench.ungraded import prepare_cached  # noqa: E402
from gateway.broker import EmbeddedBroker  # noqa: E402
from gateway.ingest import model  # noqa: E402
from gateway.ingest.envelope import Envelope  # noqa: E402
from gateway.ingest.grading import WorkFn  # noqa: E402
from gateway.ingest.prepare import ClockPolicy, prepare  # noqa: E402
from gateway.ingest.service import IngestService, IngestSettings  # noqa: E402
from registry import assignments  # noqa: E402
from registry.embedded import EmbeddedPostgres  # noqa: E402
from registry.migrate import migrate_dsn  # noqa: E402
from tests.fixtures.mqtt import MosquittoBroker  # noqa: E402
from tests.gateway.ingest_support import sample  # noqa: E402
from tests.registry.helpers import lot_in_state  # noqa: E402

SAMPLE_FILTER = "sqal/v1/+/sample"
AnyBroker = MosquittoBroker | EmbeddedBroker  # what the live run and the publishers need: host, port, url
SPAWN = mp.get_context("spawn")


# ---- publishers (own processes) ----

def _publisher(host: str, port: int, prefix: str, first: int, n: int, step: int, rate: float,
               ready: Any) -> None:
    """Publish samples first, first+step, ... (n of them) of the stream `prefix` (10 devices), QoS 1,
    up to 1000 in flight; `rate` > 0 paces them. Returns once every one is PUBACKed.

    The publishers stand in for devices, which in production do not share the gateway's cores, so
    they take as little of them as they can: each device's sample is encoded once and each message
    only gets its seq and ts written into that text (the codec's encode_sample costs 67 us a
    message), and the MQTT client is bench/lean_publisher.py (paho took about 300 us of CPU a
    message: 0.7 of the 2 cores at the latency run's rate, against 0.9 for the whole pipeline)."""
    templates = [codec.encode_sample(dict(sample(f"{prefix}_{d:02d}", boot=1, seq=0, seed=d),
                                          seq=_SEQ_MARK, ts=_TS_MARK)) for d in range(10)]
    assert all(t.count(b"%d" % _SEQ_MARK) == 1 and t.count(b"%d" % _TS_MARK) == 1 for t in templates)
    topics = [codec.topic(f"{prefix}_{d:02d}", "sample").encode() for d in range(10)]
    with LeanPublisher(host, port, f"bench-pub-{uuid.uuid4().hex[:6]}", inflight=1000) as c:
        ready.wait(60)
        t0 = time.time()
        for k in range(n):
            i = first + k * step
            c.publish(topics[i % 10], _stamp(templates[i % 10], i // 10, int(time.time() * 1000)))
            if rate:
                ahead = (k + 1) / rate - (time.time() - t0)
                if ahead > PACE_S:  # each wake-up costs CPU (~70 us a message when waking per message)
                    time.sleep(ahead)
        c.wait_acked(300)


PACE_S = 0.01  # a paced publisher sleeps only when this far ahead: messages go out ~16 at a time


_SEQ_MARK, _TS_MARK = 987654321, 1111111111111  # digits found nowhere else in a sample's JSON


def _stamp(template: bytes, seq: int, ts: int) -> bytes:
    """The device's encoded sample with this seq and ts: what encode_sample gives (tested below)."""
    return template.replace(b"%d" % _SEQ_MARK, b"%d" % seq, 1).replace(b"%d" % _TS_MARK, b"%d" % ts, 1)


def _check_stamp() -> None:
    s = sample("STAMP_00", boot=1, seq=0, seed=3)
    t = codec.encode_sample(dict(s, seq=_SEQ_MARK, ts=_TS_MARK))
    assert _stamp(t, 42, 1764230000123) == codec.encode_sample(dict(s, seq=42, ts=1764230000123))


def publish(broker: AnyBroker, prefix: str, n: int, procs: int = 2, rate: float = 0) -> tuple[list[Any], Any]:
    """Start `procs` publisher processes sharing the stream; they publish when the event is set."""
    ready = SPAWN.Event()
    ps = [SPAWN.Process(target=_publisher, args=(broker.host, broker.port, prefix, j, len(range(j, n, procs)),
                                                  procs, rate / procs, ready)) for j in range(procs)]
    for p in ps:
        p.start()
    return ps, ready


def preload(broker: MosquittoBroker, client_id: str, prefix: str, n: int, procs: int = 2) -> None:
    """Create `client_id`'s persistent session subscribed to the samples, then queue n samples for it
    while it is offline."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe(SAMPLE_FILTER, 1)
    assert subscribed.wait(10), "session subscription not acknowledged"
    c.disconnect()
    c.loop_stop()
    ps, ready = publish(broker, prefix, n, procs)
    ready.set()
    for p in ps:
        p.join()
        assert p.exitcode == 0, "publisher failed"


def forget_session(broker: AnyBroker, client_id: str) -> None:
    """Drop a consumer's persistent session, so later preloads are not queued for it too."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    c.connect(broker.host, broker.port)
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def new_prefix(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:5].upper()}"


# ---- the three consumers, each draining its preloaded session ----

def raw_drain(broker: MosquittoBroker, n: int) -> float:
    cid, prefix = f"bench-raw-{uuid.uuid4().hex[:6]}", new_prefix("RAW")
    preload(broker, cid, prefix, n)
    got = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        if got["n"] == 0:
            got["first"] = time.time()
        got["n"] += 1
        if got["n"] >= n:
            got["last"] = time.time()
            done.set()

    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    sub.max_inflight_messages_set(1000)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    assert done.wait(600), f"raw subscriber got {got['n']} of {n}"
    sub.loop_stop()
    sub.disconnect()
    forget_session(broker, cid)
    return (n - 1) / (got["last"] - got["first"])


NAIVE_SQL = """INSERT INTO sqal_samples (device_id, boot, seq, lot_id, link_kind, link_issue, measured_at,
  received_at, clock_synced, score, grade, device_score, device_grade, weight_g, volume_cm3, alerts, features, raw)
  SELECT $1::text, $2::bigint, $3::bigint, a.lot_id, CASE WHEN a.lot_id IS NULL THEN 'none' ELSE 'assignment' END,
         CASE WHEN a.lot_id IS NULL THEN 'no_assignment' END,
         $4::timestamptz, $5::timestamptz, $6::boolean, $7::real, $8::text, $9::real, $10::text, $11::real,
         $12::real, $13::text[], $14::json, $15::json
  FROM (SELECT 1) one LEFT JOIN LATERAL (
    SELECT d.lot_id FROM device_assignments d
    WHERE d.device_id = $1::text AND d.valid_from <= COALESCE($4::timestamptz, $5::timestamptz)
      AND (d.valid_to IS NULL OR COALESCE($4::timestamptz, $5::timestamptz) < d.valid_to)
    ORDER BY d.valid_from DESC LIMIT 1) a ON true
  ON CONFLICT (device_id, boot, seq) DO NOTHING"""


async def link_stream(pool: asyncpg.Pool, prefix: str) -> str:
    """A lot in inspection with the stream's 10 devices assigned to it, through the registry's own
    operations: the readings then link to it by assignment, as on a processing line (unlinked
    readings skip the lot's foreign key check, its index and its lot_events row)."""
    lot = await lot_in_state(pool, "inspecting", device_id=f"{prefix}_00")
    for d in range(1, 10):
        await assignments.assign_device(pool, lot, f"{prefix}_{d:02d}")
    return lot


async def check_linked(pool: asyncpg.Pool, prefix: str, lot: str, n: int) -> None:
    """Every reading of the stream stored once and linked to its lot (else the figures are not the
    production path's)."""
    got = await pool.fetchrow("SELECT count(*) AS n, count(*) FILTER (WHERE lot_id = $2) AS linked "
                              "FROM sqal_samples WHERE device_id LIKE $1 || '\\_%'", prefix, lot)
    assert (got["n"], got["linked"]) == (n, n), f"stream {prefix}: {dict(got)} of {n} stored / linked to {lot}"


async def naive_drain(broker: MosquittoBroker, pool: asyncpg.Pool, dsn: str, n: int) -> float:
    """The honest straightforward design: per message, decode + grade, one INSERT (linked to the
    lot by the device's assignment) in its own transaction, then the PUBACK (so it loses nothing
    either)."""
    cid, prefix = f"bench-naive-{uuid.uuid4().hex[:6]}", new_prefix("NAIVE")
    lot = await link_stream(pool, prefix)
    preload(broker, cid, prefix, n)
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[paho.MQTTMessage] = asyncio.Queue()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False, manual_ack=True)

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        loop.call_soon_threadsafe(q.put_nowait, m)

    sub.on_message = on_message
    conn = await asyncpg.connect(dsn)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    first = 0.0
    for k in range(n):
        m = await q.get()
        if k == 0:
            first = time.time()
        it = prepare(Envelope("mqtt", m.topic, bytes(m.payload), datetime.now(timezone.utc)), ClockPolicy())
        r = it.row
        assert r is not None, it.reject
        await conn.execute(NAIVE_SQL, r["device_id"], r["boot"], r["seq"], r["measured_at"], r["received_at"],
                           r["clock_synced"], r["score"], r["grade"], r["device_score"], r["device_grade"],
                           r["weight_g"], r["volume_cm3"], r["alerts"], json.dumps(r["features"]), json.dumps(r["raw"]))
        sub.ack(m.mid, m.qos)
    rate = (n - 1) / (time.time() - first)
    await conn.close()
    sub.loop_stop()
    sub.disconnect()
    forget_session(broker, cid)
    await check_linked(pool, prefix, lot, n)
    return rate


class Watch:
    """Commit listener: counts this run's stored samples, first receive time, last commit time and
    publish -> commit latencies."""

    def __init__(self, prefix: str, n: int) -> None:
        self.prefix, self.n = prefix, n
        self.stored, self.first, self.last = 0, float("inf"), 0.0
        self.lat: list[float] = []
        self.lat_in: list[float] = []  # publish -> received by the gateway (publisher, broker, socket)
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


class CpuMeter:
    """CPU seconds (user + system) per process group on this machine's run: the gateway process (event
    loop, paho thread, pool threads), its grading workers (and their fork server), PostgreSQL (every
    process of the bench's own cluster) and Mosquitto. Other processes of the machine are not counted."""

    GROUPS = ("grading workers", "gateway", "postgresql", "mosquitto")

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = str(data_dir)

    def _group(self, p: psutil.Process) -> str | None:
        if p.pid == os.getpid():
            return "gateway"
        name, cmd = p.name(), " ".join(p.cmdline())
        if "postgres" in name or (self.data_dir in cmd and "postgres" in cmd):
            return "postgresql"
        if "mosquitto" in name:
            return "mosquitto"
        if "python" in name and p.ppid() != 1:
            return "grading workers"
        return None

    def snapshot(self) -> dict[int, tuple[str, float]]:
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
        for p in psutil.process_iter():
            try:
                if p.name().startswith("postgres") and self.data_dir in " ".join(p.cmdline()):
                    procs.append(p)  # the postmaster, then its children below
                    procs += p.children(recursive=True)
            except psutil.Error:
                pass
        out: dict[int, tuple[str, float]] = {}
        for p in procs:
            try:
                g = self._group(p)
                if g is not None:
                    t = p.cpu_times()
                    out[p.pid] = (g, t.user + t.system)
            except psutil.Error:
                pass
        return out

    @staticmethod
    def per_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
        tot = dict.fromkeys(CpuMeter.GROUPS, 0.0)
        for pid, (g, c) in after.items():
            tot[g] += c - before.get(pid, (g, 0.0))[1]  # a process started during the run counts from 0
        return tot


async def sqal_drain(broker: MosquittoBroker, pool: asyncpg.Pool, n: int, workers: int | None,
                     meter: CpuMeter | None = None, grade: WorkFn | None = None) -> tuple[float, dict[str, float]]:
    """(stored readings/s, CPU ms per stored reading by process group). `grade` replaces the grading
    workers' function (bench/ungraded.py for --ungraded)."""
    cid, prefix = f"bench-sqal-{uuid.uuid4().hex[:6]}", new_prefix("SQAL")
    lot = await link_stream(pool, prefix)
    preload(broker, cid, prefix, n)
    svc = IngestService(pool, IngestSettings(mqtt_url=broker.url, mqtt_client_id=cid, workers=workers))
    if grade is not None:
        svc.pipeline.grader.fn = grade
    w = Watch(prefix, n)
    svc.pipeline.add_listener(w)
    await svc.start(wait_subscribed_s=10)
    before = meter.snapshot() if meter else {}  # after start: the workers' start-up is not per reading
    await asyncio.wait_for(w.finished.wait(), 600)
    cpu = CpuMeter.per_group(before, meter.snapshot()) if meter else {}
    await svc.stop()
    forget_session(broker, cid)
    await check_linked(pool, prefix, lot, n)
    return (n - 1) / (w.last - w.first), {g: c * 1000 / n for g, c in cpu.items()}


async def sqal_live(broker: AnyBroker, pool: asyncpg.Pool, n: int, rate: float,
                    workers: int | None) -> tuple[float, list[float], list[float]]:
    cid, prefix = f"bench-live-{uuid.uuid4().hex[:6]}", new_prefix("LIVE")
    lot = await link_stream(pool, prefix)
    svc = IngestService(pool, IngestSettings(mqtt_url=broker.url, mqtt_client_id=cid, workers=workers))
    w = Watch(prefix, n)
    svc.pipeline.add_listener(w)
    await svc.start(wait_subscribed_s=10)
    ps, ready = publish(broker, prefix, n, procs=2, rate=rate)
    await asyncio.sleep(2)  # publisher processes connected (spawn start-up is not part of the run)
    ready.set()
    await asyncio.wait_for(w.finished.wait(), 600)
    for p in ps:
        await asyncio.to_thread(p.join)
    await svc.stop()
    forget_session(broker, cid)
    await check_linked(pool, prefix, lot, n)
    return (n - 1) / (w.last - w.first), w.lat, w.lat_in


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def spread(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:,.0f}"
    return f"median {statistics.median(xs):,.0f} (min {min(xs):,.0f}, max {max(xs):,.0f}; {', '.join(f'{x:,.0f}' for x in xs)})"


def cpu_line(cpu: dict[str, float]) -> str:
    """CPU ms per stored reading of each process group (CpuMeter.per_group, per reading)."""
    return ", ".join(f"{g} {ms:.3f}" for g, ms in cpu.items())


def load() -> str:
    return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count() or 0)


RAW_BAR, NAIVE_BAR, P99_BAR_MS = 0.6, 10.0, 250.0  # issue 5's targets


def bars(ratios_raw: list[float], ratios_naive: list[float], p99_ms: float) -> str:
    """One line: in how many rounds each throughput target was met, and the latency target."""
    def met(xs: list[float], bar: float) -> str:
        return f"{sum(x >= bar for x in xs)} of {len(xs)} rounds (median {statistics.median(xs):.2f})"
    return (f"targets: SQAL >= {RAW_BAR} x raw in {met(ratios_raw, RAW_BAR)}; >= {NAIVE_BAR:.0f} x naive in "
            f"{met(ratios_naive, NAIVE_BAR)}; p99 < {P99_BAR_MS:.0f} ms at half rate: "
            f"{'met' if p99_ms < P99_BAR_MS else 'missed'} ({p99_ms:.0f} ms)")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000, help="samples per raw / SQAL drain")
    ap.add_argument("--naive-n", type=int, default=3000, help="samples per naive drain")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (raw, naive, SQAL), interleaved")
    ap.add_argument("--workers", type=int, default=None, help="grading processes (default: the gateway's)")
    ap.add_argument("--live-only", type=float, default=None, metavar="RATE",
                    help="skip the drains: only the live latency run, at RATE readings/s offered")
    ap.add_argument("--ungraded", action="store_true",
                    help="each round also drains with grading nearly free (bench/ungraded.py): the rest of "
                         "the pipeline's ceiling on this machine")
    ap.add_argument("--embedded-broker", action="store_true",
                    help="with --live-only: through the gateway's embedded amqtt broker (in this process, as "
                         "the gateway runs it when SQAL_MQTT_URL is unset) instead of Mosquitto")
    ap.add_argument("--inflight", type=int, default=1000,
                    help="Mosquitto max_inflight_messages (QoS 1 messages sent to a client and not yet acked)")
    args = ap.parse_args()
    if args.embedded_broker and args.live_only is None:
        ap.error("--embedded-broker needs --live-only (the drains preload Mosquitto)")
    _check_stamp()
    tmp = Path(tempfile.mkdtemp(prefix="sqal-bench-"))
    tmp.chmod(0o711)
    broker = MosquittoBroker(tmp / "mosquitto", extra_config=[f"max_inflight_messages {args.inflight}"])
    broker.start()
    pg = EmbeddedPostgres(tmp / "pg", fsync=True)
    try:
        dsn = pg.start()
        await migrate_dsn(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
        print(f"start: {load()}; Mosquitto max_inflight_messages {args.inflight}")
        impl, why = model.describe()
        print(f"quality model: {impl} ({why}); SQAL_INGEST_MODEL=pure selects the pure one")
        meter = CpuMeter(tmp)
        raws, naives, sqals, ungraded = [], [], [], []
        if args.live_only is not None:
            live: AnyBroker = broker
            if args.embedded_broker:
                live = EmbeddedBroker(0)
                await live.start()
            try:
                stored, lat, lat_in = await sqal_live(live, pool, max(2000, args.n // 2), args.live_only, args.workers)
            finally:
                if isinstance(live, EmbeddedBroker):
                    await live.stop()
            print(f"SQAL live ({args.live_only:,.0f}/s offered by 2 publishers"
                  f"{', embedded amqtt broker' if args.embedded_broker else ''}): {stored:,.0f}/s stored, latency "
                  f"publish->commit p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} ms, max {pct(lat, 1):.0f} ms; "
                  f"publish->received p50 {pct(lat_in, .5):.0f} ms, p99 {pct(lat_in, .99):.0f} ms ({load()})")
            await pool.close()
            return
        for r in range(args.repeat):
            raws.append(raw_drain(broker, args.n))
            naives.append(await naive_drain(broker, pool, dsn, args.naive_n))
            rate, cpu = await sqal_drain(broker, pool, args.n, args.workers, meter)
            sqals.append(rate)
            print(f"round {r + 1}: raw {raws[-1]:,.0f} msg/s, naive {naives[-1]:,.0f}/s, SQAL {sqals[-1]:,.0f}/s "
                  f"= {sqals[-1] / raws[-1]:.2f} raw, {sqals[-1] / naives[-1]:.1f}x naive  ({load()})", flush=True)
            print(f"  SQAL CPU per stored reading: {cpu_line(cpu)}, total {sum(cpu.values()):.3f} ms", flush=True)
            if args.ungraded:
                rate, cpu = await sqal_drain(broker, pool, args.n, args.workers, meter, grade=prepare_cached)
                ungraded.append(rate)
                print(f"  ungraded (grading nearly free): {rate:,.0f}/s = {rate / naives[-1]:.1f}x naive; CPU per "
                      f"stored reading: {cpu_line(cpu)}", flush=True)
        full = statistics.median(sqals)
        half, lat, lat_in = await sqal_live(broker, pool, max(2000, args.n // 2), full / 2, args.workers)
        print(f"raw ceiling (bare paho subscriber, counts only), drain: {spread(raws)} msg/s")
        print(f"naive (decode + grade + INSERT/commit + PUBACK per message), drain: {spread(naives)} readings/s")
        print(f"SQAL pipeline, drain: {spread(sqals)} stored readings/s")
        if ungraded:
            print(f"SQAL ungraded (grading nearly free), drain: {spread(ungraded)} stored readings/s; per round "
                  f"{', '.join(f'{c / v:.1f}x' for c, v in zip(ungraded, naives))} naive")
        ratios_raw = [s / r for s, r in zip(sqals, raws)]
        ratios_naive = [s / v for s, v in zip(sqals, naives)]
        print(f"ratios per round: SQAL / raw {', '.join(f'{x:.2f}' for x in ratios_raw)}; "
              f"SQAL / naive {', '.join(f'{x:.1f}x' for x in ratios_naive)}")
        print(f"SQAL live at half the median max rate ({full / 2:,.0f}/s offered by 2 publishers): {half:,.0f}/s "
              f"stored, latency publish->commit p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} ms, "
              f"max {pct(lat, 1):.0f} ms")
        print(f"  of which publish->received by the gateway p50 {pct(lat_in, .5):.0f} ms, p99 {pct(lat_in, .99):.0f} ms")
        print(bars(ratios_raw, ratios_naive, pct(lat, .99)))
        print(f"end: {load()}")
        await pool.close()
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
