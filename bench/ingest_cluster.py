"""Cluster benchmark: stored readings per second with 1, then 2 gateway replicas reading one NATS
cluster (docs/scale-out.md), on this machine.

Three nats-server nodes on loopback (gateway.nats.cluster.LocalCluster: the configuration of `sqal
engine config`), the engine's MQTT message stream and SQAL_TELEMETRY with 3 replicas and the durable consumer shared by
the replicas, one embedded PostgreSQL (fsync on). Each gateway replica is its own process: an
`IngestService` pointed at the three nodes (as `sqal serve` with SQAL_NATS_URL and
SQAL_NATS_REPLICAS=3), with its own grading workers and its own database pool.

Method, per replica count, in each round: the consumer is paused (JetStream consumer pause), N
samples are preloaded over MQTT QoS 1 by three publisher processes, one on each node's MQTT
listener, and counted in the stream; the replicas start (workers warm, connected, fetching
nothing); the consumer is resumed and the clock runs from the first reading any replica received
to the commit that completes N. Each replica reports its commits to the bench over a pipe. Every
reading is checked stored once and linked to its lot (the stream's devices are assigned to a lot in
inspection first). CPU per stored reading is that of every process taking part (psutil, user +
system, from the resume to the last commit): the replicas' gateway processes, their grading
workers, the three nats-server nodes, PostgreSQL; the bench's own process (which only reads the
pipes) and the publishers (finished before) are left out.

    .venv/bin/python bench/ingest_cluster.py [--n 30000] [--rounds 3] [--replicas 1,2] [--workers N]

The default run takes one to three minutes on this 2-core machine. Everything (three nodes, the
replicas, their workers, PostgreSQL) shares its cores: more replicas than cores' worth of work
measures the cost of the replication and of the sharing, not a gain (see docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing.connection as mpc
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.brokers import connack_code
from bench.support import (
    SPAWN,
    ProcessCpu,
    check_linked,
    check_stamp,
    cpu_line,
    load,
    lot_in_inspection,
    new_prefix,
    per_reading_ms,
    publish_all,
    spread,
)
from gateway.ingest.service import IngestService, IngestSettings
from gateway.nats import streams
from gateway.nats.cluster import LocalCluster
from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate_dsn

NODES = 3
LIMITS = streams.StreamLimits(replicas=3)
DRAIN_TIMEOUT_S = 600.0


# ---- a gateway replica (its own process) ----

def replica_main(dsn: str, servers: list[str], mqtt_url: str, prefix: str, workers: int | None,
                 conn: mpc.Connection) -> None:
    """Runs in a spawned process: the ingest as `sqal serve` runs it against the cluster. Sends
    ("ready", pid) once started, ("batch", first received, commit time, readings of the stream
    stored) after each commit holding some, and stops on "stop"."""
    asyncio.run(_replica(dsn, servers, mqtt_url, prefix, workers, conn))


async def _replica(dsn: str, servers: list[str], mqtt_url: str, prefix: str, workers: int | None,
                   conn: mpc.Connection) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    svc = IngestService(pool, IngestSettings(nats_url=",".join(servers), mqtt_url=mqtt_url, limits=LIMITS,
                                             workers=workers))

    def on_commit(items: list[Any], outcomes: dict[int, Any]) -> None:
        now = time.time()
        stored, first = 0, float("inf")
        for it in items:
            row = it.row
            if row is not None and row["device_id"].startswith(prefix) and outcomes[id(it)].status == "saved":
                stored += 1
                first = min(first, it.env.received_at.timestamp())
        if stored:
            conn.send(("batch", first, now, stored))

    svc.pipeline.add_listener(on_commit)
    await svc.start()
    conn.send(("ready", os.getpid()))
    await asyncio.to_thread(conn.recv)  # "stop"
    await svc.stop()
    await pool.close()
    conn.send(("stopped", os.getpid()))


class Replicas:
    """k replica processes and the commits they report."""

    def __init__(self, k: int, dsn: str, cluster: LocalCluster, prefix: str, workers: int | None) -> None:
        self.conns: list[mpc.Connection] = []
        self.procs: list[Any] = []
        for _ in range(k):
            mine, theirs = SPAWN.Pipe()
            p = SPAWN.Process(target=replica_main, name="bench-gateway-replica",
                              args=(dsn, cluster.nats_urls(), cluster.mqtt_urls()[0], prefix, workers, theirs))
            p.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(p)
        self.stored = [0] * k
        self.first = float("inf")
        self.last = 0.0
        self.n = 0
        self.done = threading.Event()

    def wait_ready(self, timeout: float = 120.0) -> list[int]:
        pids = []
        for c, p in zip(self.conns, self.procs, strict=True):
            if not c.poll(timeout):
                raise RuntimeError(f"gateway replica (pid {p.pid}) not started in {timeout:.0f} s")
            tag, pid = c.recv()
            assert tag == "ready", tag
            pids.append(pid)
        return pids

    def count(self, n: int) -> None:
        """In a thread: read the replicas' commits until n readings of the stream are stored."""
        self.n = n
        while sum(self.stored) < n:
            for c in mpc.wait(self.conns, timeout=DRAIN_TIMEOUT_S):
                assert isinstance(c, mpc.Connection)
                tag, first, at, stored = c.recv()
                assert tag == "batch", tag
                i = self.conns.index(c)
                self.stored[i] += stored
                self.first = min(self.first, first)
                self.last = max(self.last, at)
        self.done.set()

    def stop(self) -> None:
        for c in self.conns:
            c.send("stop")
        for c, p in zip(self.conns, self.procs, strict=True):
            while True:  # anything still reported, then "stopped"
                msg = c.recv()
                if msg[0] == "stopped":
                    break
            p.join(60)
            assert p.exitcode == 0, f"gateway replica exited {p.exitcode}"


# ---- one drain ----

async def drain(k: int, n: int, js: Any, dsn: str, pool: asyncpg.Pool, cluster: LocalCluster,
                workers: int | None, meter: ProcessCpu) -> tuple[float, list[int], dict[str, float]]:
    """(stored readings/s, readings per replica, CPU ms per stored reading by group) with k replicas."""
    prefix = new_prefix(f"CL{k}R")
    lot = await lot_in_inspection(pool, prefix)
    until = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await js.pause_consumer(streams.SAMPLES, streams.DURABLE, until)
    await wait_samples(js, 0)
    addresses = [("127.0.0.1", node.mqtt_port) for node in cluster.nodes]
    await asyncio.to_thread(publish_all, addresses, prefix, n, NODES)
    await wait_samples(js, n)
    reps = Replicas(k, dsn, cluster, prefix, workers)
    try:
        pids = await asyncio.to_thread(reps.wait_ready)
        meter.labels = dict.fromkeys(pids, "gateway replicas")
        counter = threading.Thread(target=reps.count, args=(n,), daemon=True)
        counter.start()
        before = meter.snapshot()
        await js.resume_consumer(streams.SAMPLES, streams.DURABLE)
        if not await asyncio.to_thread(reps.done.wait, DRAIN_TIMEOUT_S):
            raise RuntimeError(f"{sum(reps.stored)} of {n} stored after {DRAIN_TIMEOUT_S:.0f} s")
        cpu = ProcessCpu.used(before, meter.snapshot())
    finally:
        await asyncio.to_thread(reps.stop)
    await wait_samples(js, 0)
    await check_linked(pool, prefix, lot, n)
    return (n - 1) / (reps.last - reps.first), reps.stored, per_reading_ms(cpu, n, ("publishers", "bench driver"))


def wait_mqtt_ready(cluster: LocalCluster, timeout: float = 120.0) -> None:
    """Until every node's MQTT listener accepts a login. A node listens on its MQTT port before its
    MQTT side works (it needs JetStream for its session streams): until then it closes a new
    connection before its CONNACK, and a publisher that came too soon failed (a run on 2026-12-06)."""
    end = time.monotonic() + timeout
    for node in cluster.nodes:
        while True:
            try:
                if connack_code("127.0.0.1", node.mqtt_port, timeout=2.0) == 0:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise RuntimeError(f"node {node.name}: MQTT not accepting logins after {timeout:.0f} s")
            time.sleep(0.2)


async def wait_samples(js: Any, n: int, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while (got := (await js.stream_info(streams.SAMPLES)).state.messages) != n:
        if time.monotonic() > end:
            raise RuntimeError(f"{streams.SAMPLES} holds {got} messages, expected {n}")
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace, tmp: Path) -> None:
    counts = [int(x) for x in args.replicas.split(",")]
    cluster = LocalCluster(tmp / "cluster", NODES)
    pg = EmbeddedPostgres(tmp / "pg", fsync=True)
    cluster.start()
    pool: asyncpg.Pool | None = None
    nc = None
    try:
        dsn = pg.start()
        await migrate_dsn(dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert pool is not None
        nc = await nats.connect(cluster.nats_urls())
        js = nc.jetstream()
        await streams.ensure(js, LIMITS, timeout=120)
        await asyncio.to_thread(wait_mqtt_ready, cluster)
        info = await js.stream_info(streams.SAMPLES)
        print(f"start: {load()}; {NODES} nats-server nodes, {streams.SAMPLES} with {info.config.num_replicas} "
              f"replicas (leader {info.cluster.leader if info.cluster else '?'}); {args.n:,} readings a drain",
              flush=True)
        meter = ProcessCpu(tmp, me="bench driver")
        rates: dict[int, list[float]] = {k: [] for k in counts}
        totals: dict[int, list[float]] = {k: [] for k in counts}
        for r in range(args.rounds):
            for k in counts:
                rate, split, cpu = await drain(k, args.n, js, dsn, pool, cluster, args.workers, meter)
                rates[k].append(rate)
                totals[k].append(sum(cpu.values()))
                print(f"round {r + 1}, {k} replica{'s' if k > 1 else ''}: {rate:,.0f} stored readings/s "
                      f"(per replica {' / '.join(f'{s:,}' for s in split)}); CPU ms per stored reading: "
                      f"{cpu_line(cpu)}  ({load()})", flush=True)
        for k in counts:
            print(f"{k} gateway replica{'s' if k > 1 else ''}: {spread(rates[k])} stored readings/s; CPU per stored "
                  f"reading {spread(totals[k], '.3f')} ms")
        if len(counts) > 1:
            base = statistics.median(rates[counts[0]])
            print("relative to " + f"{counts[0]} replica: " + ", ".join(
                f"{k} replicas {statistics.median(rates[k]) / base:.2f}x" for k in counts[1:]))
        print(f"end: {load()}")
    finally:
        if nc is not None:
            await nc.close()
        if pool is not None:
            await pool.close()
        cluster.stop()
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=30000, help="readings per drain")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (each replica count), interleaved")
    ap.add_argument("--replicas", default="1,2", help="gateway replica counts, in the order run each round")
    ap.add_argument("--workers", type=int, default=None, help="grading processes per replica (default: the gateway's)")
    args = ap.parse_args()
    check_stamp()
    tmp = Path(tempfile.mkdtemp(prefix="sqal-bench-cluster-"))
    tmp.chmod(0o711)  # the unprivileged postgres user must traverse it when we run as root
    try:
        asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
