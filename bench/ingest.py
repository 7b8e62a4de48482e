"""Ingest benchmark: stored readings per second end to end (publish -> commit) and latency, through
Mosquitto into PostgreSQL, next to (a) the raw ceiling: a bare paho subscriber that only counts, and
(b) the naive design: decode + grade + one INSERT (one transaction) per message.

    .venv/bin/python bench/ingest.py [--n 20000] [--naive-n 3000]

The publisher runs in its own process (QoS 1, up to 1000 in flight) and writes the publish time
into each sample's `ts`; the SQAL pipeline's commit listener compares it with the commit time, so
latency is publish -> committed, wall clock, same machine. PostgreSQL is the embedded server with
its default durability (fsync on). Mosquitto: persistence on, max_inflight_messages 1000.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.ingest.prepare import ClockPolicy, prepare  # noqa: E402
from gateway.ingest.envelope import Envelope  # noqa: E402
from gateway.ingest.service import IngestService, IngestSettings  # noqa: E402
from registry.embedded import EmbeddedPostgres  # noqa: E402
from registry.migrate import migrate_dsn  # noqa: E402
from sqalfw import codec  # noqa: E402
from tests.fixtures.mqtt import MosquittoBroker  # noqa: E402
from tests.gateway.ingest_support import sample  # noqa: E402


def _publisher(host: str, port: int, prefix: str, n: int, rate: float, ready: "mp.synchronize.Event") -> None:
    base = [sample(f"{prefix}_{d:02d}", boot=1, seq=0) for d in range(10)]
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    ready.wait(30)
    t0 = time.time()
    infos = []
    for i in range(n):
        s = dict(base[i % 10])
        s["seq"] = i // 10
        s["ts"] = int(time.time() * 1000)
        infos.append(c.publish(codec.topic(s["device_id"], "sample"), codec.encode_sample(s), qos=1))
        if rate:
            ahead = (i + 1) / rate - (time.time() - t0)
            if ahead > 0:
                time.sleep(ahead)
    for info in infos:
        info.wait_for_publish(120)
    c.loop_stop()
    c.disconnect()


def publish(broker: MosquittoBroker, prefix: str, n: int, rate: float = 0) -> tuple[mp.Process, "mp.synchronize.Event"]:
    ready = mp.get_context("spawn").Event()
    p = mp.get_context("spawn").Process(target=_publisher, args=(broker.host, broker.port, prefix, n, rate, ready))
    p.start()
    return p, ready


def raw_ceiling(broker: MosquittoBroker, n: int) -> float:
    prefix = f"RAW{uuid.uuid4().hex[:5].upper()}"
    got = {"n": 0, "first": 0.0, "last": 0.0}
    done = threading.Event()

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        if got["n"] == 0:
            got["first"] = time.time()
        got["n"] += 1
        if got["n"] >= n:
            got["last"] = time.time()
            done.set()

    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-raw", clean_session=True)
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"sqal/v1/+/sample", 1)
    sub.loop_start()
    time.sleep(0.5)
    p, ready = publish(broker, prefix, n)
    t0 = time.time()
    ready.set()
    done.wait(300)
    p.join()
    sub.loop_stop()
    sub.disconnect()
    return n / (got["last"] - t0)


NAIVE_SQL = """INSERT INTO sqal_samples (device_id, boot, seq, link_kind, measured_at, received_at, clock_synced,
  score, grade, device_score, device_grade, weight_g, volume_cm3, alerts, features, raw)
  VALUES ($1, $2, $3, 'none', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15::jsonb)
  ON CONFLICT (device_id, boot, seq) DO NOTHING"""


async def naive(broker: MosquittoBroker, dsn: str, n: int) -> float:
    import json

    prefix = f"NAIVE{uuid.uuid4().hex[:5].upper()}"
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-naive", clean_session=True)
    sub.on_message = lambda c, u, m: loop.call_soon_threadsafe(q.put_nowait, (m.topic, bytes(m.payload)))
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"sqal/v1/+/sample", 1)
    sub.loop_start()
    conn = await asyncpg.connect(dsn)
    await asyncio.sleep(0.5)
    p, ready = publish(broker, prefix, n)
    t0 = time.time()
    ready.set()
    done = 0
    while done < n:
        topic, payload = await q.get()
        it = prepare(Envelope("mqtt", topic, payload, datetime.now(timezone.utc)), ClockPolicy())
        r = it.row
        assert r is not None
        await conn.execute(NAIVE_SQL, r["device_id"], r["boot"], r["seq"], r["measured_at"], r["received_at"],
                           r["clock_synced"], r["score"], r["grade"], r["device_score"], r["device_grade"],
                           r["weight_g"], r["volume_cm3"], r["alerts"], json.dumps(r["features"]), json.dumps(r["raw"]))
        done += 1
    rate = n / (time.time() - t0)
    await conn.close()
    await asyncio.to_thread(p.join)
    sub.loop_stop()
    sub.disconnect()
    return rate


async def sqal(broker: MosquittoBroker, pool: asyncpg.Pool, n: int, rate: float = 0) -> tuple[float, list[float]]:
    prefix = f"SQAL{uuid.uuid4().hex[:5].upper()}"
    svc = IngestService(pool, IngestSettings(mqtt_url=broker.url, mqtt_client_id=f"bench-{prefix}"))
    await svc.start(wait_subscribed_s=10)
    lat: list[float] = []
    state = {"stored": 0, "last": 0.0}
    finished = asyncio.Event()

    def listener(items: list, outcomes: dict) -> None:
        now = time.time()
        for it in items:
            if it.row is not None and it.row["device_id"].startswith(prefix) and outcomes[id(it)].status == "saved":
                state["stored"] += 1
                lat.append(now - it.row["raw"]["ts"] / 1000)
        state["last"] = now
        if state["stored"] >= n:
            finished.set()

    svc.pipeline.add_listener(listener)
    p, ready = publish(broker, prefix, n, rate)
    t0 = time.time()
    ready.set()
    await asyncio.wait_for(finished.wait(), 600)
    await asyncio.to_thread(p.join)
    await svc.stop()
    return n / (state["last"] - t0), lat


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--naive-n", type=int, default=3000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sqal-bench-"))
    tmp.chmod(0o711)
    broker = MosquittoBroker(tmp / "mosquitto", extra_config=["max_inflight_messages 1000"])
    broker.start()
    pg = EmbeddedPostgres(tmp / "pg", fsync=True)
    try:
        dsn = pg.start()
        await migrate_dsn(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
        raw = raw_ceiling(broker, args.n)
        print(f"raw ceiling (bare paho subscriber, counts only): {raw:,.0f} msg/s")
        nv = await naive(broker, dsn, args.naive_n)
        print(f"naive (decode + grade + one INSERT per message): {nv:,.0f} readings/s")
        full, lat_max = await sqal(broker, pool, args.n)
        print(f"SQAL pipeline at max rate: {full:,.0f} stored readings/s "
              f"(p50 {pct(lat_max, .5):.0f} ms, p99 {pct(lat_max, .99):.0f} ms under saturation)")
        half, lat = await sqal(broker, pool, args.n // 2, rate=full / 2)
        print(f"SQAL pipeline at half the max rate ({full / 2:,.0f}/s offered): {half:,.0f}/s, "
              f"latency publish->commit p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms, "
              f"mean {statistics.fmean(lat) * 1000:.1f} ms")
        print(f"ratios: SQAL / raw ceiling = {full / raw:.2f}; SQAL / naive = {full / nv:.1f}x")
        await pool.close()
    finally:
        broker.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
