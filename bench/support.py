"""What the ingest benchmarks share: the stand-in devices (their samples and publisher processes),
the lot their readings link to, CPU per process tree, and the figures' formatting.

Nothing here imports tests/ or pytest: the benchmarks run in the environment `./sqal` sets up,
which has neither (tests/bench/test_imports.py holds every bench module to that).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import random
import statistics
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqalfw import codec

from bench.lean_publisher import LeanPublisher
from registry import assignments, gavage, lots

SPAWN = mp.get_context("spawn")

# ---- the stand-in devices' samples ----

SPEC: dict[str, Any] = {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150, "F8": 750,
                        "CLEAR": 6500, "NIR": 600, "gain": 4.0, "atime": 29, "astep": 599, "sat": False}


def dome(res: int = 8, top: float = 60.0, seed: int = 0) -> list[int]:
    """Distances of a half-ellipsoid liver on the tray (sensor 100 mm above the belt)."""
    rnd = random.Random(seed)
    out = []
    for r in range(res):
        for c in range(res):
            x = (c - (res - 1) / 2) / (res * 0.4)
            y = (r - (res - 1) / 2) / (res * 0.33)
            h = max(0.0, 1 - x * x - y * y)
            out.append(int(95 - top * math.sqrt(h) + rnd.choice((-1, 0, 0, 1))) if h > 0 else 95)
    return out


def sample(device_id: str, boot: int = 1, seq: int = 0, *, ts: int | None = None, res: int = 8,
           seed: int = 0) -> dict[str, Any]:
    """A valid contract sample (docs/contract.md) of an 8x8 (or 4x4) ToF frame and a spectrum."""
    return {"v": 1, "device_id": device_id, "boot": boot, "seq": seq,
            "ts": ts if ts is not None else int(time.time() * 1000), "synced": True, "fw": "0.1.0",
            "tof": {"res": res, "dist": dome(res, seed=seed), "st": [5] * (res * res)}, "spec": dict(SPEC)}


DEVICES = 10  # devices per stream: <prefix>_00 .. <prefix>_09
_SEQ_MARK, _TS_MARK = 987654321, 1111111111111  # digits found nowhere else in a sample's JSON


def device_ids(prefix: str) -> list[str]:
    return [f"{prefix}_{d:02d}" for d in range(DEVICES)]


def templates(prefix: str) -> list[bytes]:
    """Each device's encoded sample with marks where its seq and ts go (`stamp` fills them)."""
    out = [codec.encode_sample(dict(sample(dev, seed=d), seq=_SEQ_MARK, ts=_TS_MARK))
           for d, dev in enumerate(device_ids(prefix))]
    assert all(t.count(b"%d" % _SEQ_MARK) == 1 and t.count(b"%d" % _TS_MARK) == 1 for t in out)
    return out


def stamp(template: bytes, seq: int, ts: int) -> bytes:
    """The device's encoded sample with this seq and ts: what encode_sample gives (check_stamp)."""
    return template.replace(b"%d" % _SEQ_MARK, b"%d" % seq, 1).replace(b"%d" % _TS_MARK, b"%d" % ts, 1)


def check_stamp() -> None:
    s = sample("STAMP_00", seed=3)
    t = codec.encode_sample(dict(s, seq=_SEQ_MARK, ts=_TS_MARK))
    assert stamp(t, 42, 1764230000123) == codec.encode_sample(dict(s, seq=42, ts=1764230000123))


def new_prefix(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:5].upper()}"


# ---- publisher processes (the devices' side) ----

PACE_S = 0.01  # a paced publisher sleeps only when this far ahead: messages go out ~16 at a time


def _publisher(host: str, port: int, prefix: str, first: int, n: int, step: int, rate: float, ready: Any) -> None:
    """Publish samples first, first+step, ... (n of them) of the stream `prefix`, MQTT QoS 1, up to
    1000 in flight; `rate` > 0 paces them; `ts` is the publish time. Returns once every one is
    PUBACKed.

    The publishers stand in for devices, which in production do not share the gateway's cores, so
    they take as little of them as they can: each device's sample is encoded once and each message
    only gets its seq and ts written into that text, and the MQTT client is bench/lean_publisher.py."""
    tpl = templates(prefix)
    topics = [codec.topic(dev, "sample").encode() for dev in device_ids(prefix)]
    with LeanPublisher(host, port, f"bench-pub-{uuid.uuid4().hex[:6]}", inflight=1000) as c:
        ready.wait(120)
        t0 = time.time()
        for k in range(n):
            i = first + k * step
            c.publish(topics[i % DEVICES], stamp(tpl[i % DEVICES], i // DEVICES, int(time.time() * 1000)))
            if rate:
                ahead = (k + 1) / rate - (time.time() - t0)
                if ahead > PACE_S:  # each wake-up costs CPU (~70 us a message when waking per message)
                    time.sleep(ahead)
        c.wait_acked(300)


def publish(addresses: list[tuple[str, int]], prefix: str, n: int, procs: int = 2,
            rate: float = 0) -> tuple[list[Any], Any]:
    """Start `procs` publisher processes sharing the stream (publisher j on address j mod their
    number); they publish when the returned event is set."""
    ready = SPAWN.Event()
    ps = [SPAWN.Process(target=_publisher, name=f"bench-publisher-{j}",
                        args=(*addresses[j % len(addresses)], prefix, j, len(range(j, n, procs)), procs,
                              rate / procs, ready)) for j in range(procs)]
    for p in ps:
        p.start()
    return ps, ready


def publish_all(addresses: list[tuple[str, int]], prefix: str, n: int, procs: int = 2) -> None:
    """Publish n samples as fast as the engine takes them; return once every one is PUBACKed."""
    ps, ready = publish(addresses, prefix, n, procs)
    ready.set()
    for p in ps:
        p.join()
        assert p.exitcode == 0, "publisher failed"


# ---- the lot the readings link to ----

async def lot_in_inspection(pool: asyncpg.Pool, prefix: str) -> str:
    """A lot in inspection with the stream's devices assigned to it, through the registry's own
    operations: the readings then link to it by assignment, as on a processing line (unlinked
    readings would skip the lot's foreign key check, its index and its lot_events row)."""
    lot = await lots.create_lot(pool, farmer_id="B1", farmer_name="Bench", site_code="LL", genetics="Mulard",
                                nb_ducks=50, planned_duration_days=12)
    lot_id = str(lot["id"])
    await gavage.record_feeding(pool, lot_id, day=1, moment="morning", planned_dose_g=200, actual_dose_g=201)
    await lots.mark_ready(pool, lot_id)
    for dev in device_ids(prefix):
        await assignments.assign_device(pool, lot_id, dev)
    return lot_id


async def check_linked(pool: asyncpg.Pool, prefix: str, lot: str, n: int) -> None:
    """Every reading of the stream stored once and linked to its lot (else the figures are not the
    production path's)."""
    got = await pool.fetchrow("SELECT count(*) AS n, count(*) FILTER (WHERE lot_id = $2) AS linked, "
                              "count(DISTINCT (device_id, boot, seq)) AS keys "
                              "FROM sqal_samples WHERE device_id LIKE $1 || '\\_%'", prefix, lot)
    assert (got["n"], got["linked"], got["keys"]) == (n, n, n), \
        f"stream {prefix}: {dict(got)} of {n} stored / linked to {lot} / distinct"


# ---- CPU of the process trees ----

Snapshot = dict[int, tuple[str, float]]


@dataclass
class ProcessCpu:
    """CPU seconds (user + system, psutil) of the bench's process trees, by group: this process and
    its descendants (grading workers, nats-server nodes, gateway replicas, publishers), and the
    bench's PostgreSQL (the postmaster and its backends, found by their data directory). Other
    processes of the machine are not counted. A process that starts during a measurement counts
    from 0; one that ends during it is lost (none does in a drain)."""

    pg_data_dir: Path
    labels: dict[int, str] | None = None  # pid -> group, for processes known by pid (gateway replicas)
    me: str = "this process"  # the group of this process (the gateway's, or the naive or raw consumer)

    def group(self, p: psutil.Process) -> str | None:
        if self.labels and p.pid in self.labels:
            return self.labels[p.pid]
        if p.pid == os.getpid():
            return self.me
        name = p.name()
        if name.startswith("nats-server"):
            return "nats-server"
        if name.startswith("postgres"):
            return "postgresql"
        cmd = " ".join(p.cmdline())
        if "multiprocessing.forkserver" in cmd:  # the grading workers are forked from the fork server
            return "grading workers"
        if "multiprocessing.spawn" in cmd:
            return "publishers"
        return None

    def _procs(self) -> list[psutil.Process]:
        me = psutil.Process()
        procs = {p.pid: p for p in (me, *me.children(recursive=True))}
        for p in psutil.process_iter():
            try:  # the postmaster names its data directory; its backends are its children
                if p.name().startswith("postgres") and str(self.pg_data_dir) in " ".join(p.cmdline()):
                    procs.update((c.pid, c) for c in (p, *p.children(recursive=True)))
            except psutil.Error:
                pass
        return list(procs.values())

    def snapshot(self) -> Snapshot:
        out: Snapshot = {}
        for p in self._procs():
            try:
                g = self.group(p)
                if g is not None:
                    t = p.cpu_times()
                    out[p.pid] = (g, t.user + t.system)
            except psutil.Error:
                pass
        return out

    @staticmethod
    def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
        """CPU seconds per group between the two snapshots."""
        tot: dict[str, float] = {}
        for pid, (g, c) in after.items():
            tot[g] = tot.get(g, 0.0) + c - before.get(pid, (g, 0.0))[1]
        return tot


def per_reading_ms(used: dict[str, float], n: int, exclude: Iterable[str] = ("publishers",)) -> dict[str, float]:
    """CPU ms per reading of each group (the publishers, the devices' side, left out; so are groups
    that did nothing, such as an idle fork server left by an earlier drain)."""
    skip = set(exclude)
    return {g: s * 1000 / n for g, s in sorted(used.items()) if g not in skip and s * 1000 / n >= 0.0005}


def cpu_line(cpu: dict[str, float]) -> str:
    return ", ".join(f"{g} {ms:.3f}" for g, ms in cpu.items()) + f"; total {sum(cpu.values()):.3f} ms"


# ---- figures ----

def pct(xs: list[float], q: float) -> float:
    """The q-quantile of xs (seconds) in ms."""
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(q * len(ys)))] * 1000


def spread(xs: list[float], fmt: str = ",.0f") -> str:
    if len(xs) == 1:
        return format(xs[0], fmt)
    return (f"median {statistics.median(xs):{fmt}} (min {min(xs):{fmt}}, max {max(xs):{fmt}}; "
            f"{', '.join(format(x, fmt) for x in xs)})")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count() or 0} cores"
