"""Helpers shared by the ingest tests: valid samples, publishers (boards on the engine's MQTT listener),
the engine's view of the streams, metrics, a gateway child process, waits."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import paho.mqtt.client as paho
from asyncpg.transaction import Transaction
from nats.js.api import ConsumerInfo
from sqalfw import codec

from gateway.ingest.envelope import Envelope, Outcome
from gateway.ingest.metrics import IngestMetrics
from gateway.ingest.pipeline import Pipeline
from gateway.nats import streams
from gateway.nats.streams import StreamLimits
from registry.samples import store_samples
from tests.fixtures.mqtt import NatsBroker, free_port

ROOT = Path(__file__).resolve().parents[2]
SPEC = {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150, "F8": 750,
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


def sample(device_id: str = "ESP32_DEMO_LL_01", boot: int = 1, seq: int = 0, *, ts: int | None = None,
           synced: bool = True, lot_id: str | None = None, q: dict[str, Any] | None = None,
           res: int = 8, seed: int | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"v": 1, "device_id": device_id, "boot": boot, "seq": seq,
                         "ts": ts if ts is not None else int(time.time() * 1000), "synced": synced,
                         "fw": "0.1.0", "tof": {"res": res, "dist": dome(res, seed=seq if seed is None else seed),
                                                "st": [5] * (res * res)},
                         "spec": dict(SPEC)}
    if lot_id is not None:
        s["lot_id"] = lot_id
    if q is not None:
        s["q"] = q
    return s


def sample_bytes(*a: Any, **kw: Any) -> bytes:
    return bytes(codec.encode_sample(sample(*a, **kw)))


@contextlib.asynccontextmanager
async def key_held(pool: asyncpg.Pool, dev: str, seq: int, boot: int = 1) -> AsyncIterator[Transaction]:
    """(dev, boot, seq) inserted by another transaction and not committed: a batch holding that key
    waits in its commit until the yielded transaction is rolled back (or the block ends)."""
    conn = await pool.acquire()
    tx = conn.transaction()
    await tx.start()
    try:
        await store_samples(conn, [{"device_id": dev, "boot": boot, "seq": seq}])
        yield tx
    finally:
        if conn.is_in_transaction():
            await tx.rollback()
        await pool.release(conn)


async def lock_waiters(pool: asyncpg.Pool) -> int:
    """Sessions of this database waiting on a lock (a commit held up by `key_held`)."""
    return int(await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND datname = current_database()"))


async def count(pool: asyncpg.Pool, dev: str) -> int:
    """Samples of `dev` stored."""
    return int(await pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", dev))


def uid(prefix: str = "ESP32_T") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


class Publisher:
    """A paho QoS 1 publisher (as a board publishes to the engine's MQTT listener) that can wait for
    every PUBACK. Counted with paho's on_publish callback, which paho calls once per message when its
    PUBACK arrives -- also for a message queued while disconnected and sent after the reconnect
    (`MQTTMessageInfo.wait_for_publish` raises for those)."""

    def __init__(self, host: str, port: int, client_id: str | None = None) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]  # typed int; fractions work (paho sleeps them)
        self._cond = threading.Condition()
        self.sent = 0
        self.acked = 0
        self.acked_at: list[float | None] = []  # per publish, in order: time.monotonic() of its PUBACK
        self._mids: dict[int, int] = {}  # message id -> index of the publish waiting for its PUBACK
        self._early: dict[int, float] = {}  # PUBACKs that came before publish() had returned the id
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        now = time.monotonic()
        with self._cond:
            self.acked += 1
            i = self._mids.pop(mid, None)
            if i is None:
                self._early[mid] = now
            else:
                self.acked_at[i] = now
            self._cond.notify_all()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        # sent now, or queued while paho reconnects (sent once it is back); anything else is a test bug
        assert info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN), paho.error_string(info.rc)
        with self._cond:
            self.sent += 1
            self.acked_at.append(self._early.pop(info.mid, None))
            if self.acked_at[-1] is None:
                self._mids[info.mid] = len(self.acked_at) - 1
        return info

    def wait_all(self, timeout: float = 30) -> None:
        """Until every message published so far got its PUBACK (the engine owns it)."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.acked >= self.sent, timeout)
            assert ok, f"{self.sent - self.acked} of {self.sent} publishes not acknowledged by the broker in time"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def metric(metrics: IngestMetrics, name: str, **labels: str) -> float:
    """A sample of the ingest's metrics, read through prometheus_client's public registry API
    (`name` as exported: counters end in _total)."""
    return float(metrics.registry.get_sample_value(name, labels) or 0.0)


async def consumer_state(nats_url: str, stream: str = streams.SAMPLES) -> ConsumerInfo:
    """The shared durable consumer of `stream`, as the engine reports it (nats-py's public JetStream
    API): num_ack_pending (handed out, not acknowledged), num_pending (not yet handed out),
    num_redelivered, delivered / ack_floor sequences."""
    nc = await nats.connect(nats_url, allow_reconnect=False)
    try:
        return await nc.jetstream().consumer_info(stream, streams.DURABLE)
    finally:
        await nc.close()


async def stream_messages(nats_url: str, stream: str = streams.SAMPLES) -> int:
    """Messages still in `stream` (work-queue retention: an acknowledged message is deleted)."""
    nc = await nats.connect(nats_url, allow_reconnect=False)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def ensure_streams(nats_url: str, limits: StreamLimits | None = None) -> None:
    """The streams and the shared consumer, as a gateway makes them at start: boards may publish before
    any gateway ran, their messages are kept from then on."""
    nc = await nats.connect(nats_url, allow_reconnect=False)
    try:
        await streams.ensure(nc.jetstream(), limits or StreamLimits())
    finally:
        await nc.close()


async def wait_until(pred: Callable[[], Any], timeout: float = 20, step: float = 0.05) -> Any:
    import asyncio

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await pred()
        if last:
            return last
        await asyncio.sleep(step)
    return last


async def count_samples(pool_or_url: Any, device_prefix: str = "") -> int:
    if isinstance(pool_or_url, str):
        conn = await asyncpg.connect(pool_or_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id LIKE $1 || '%'",
                                           device_prefix))
        finally:
            await conn.close()
    return int(await pool_or_url.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id LIKE $1 || '%'",
                                          device_prefix))


class GatewayProcess:
    """The real gateway (`python -m gateway.ingest`) as a child process we can SIGKILL and restart.

    With `broker` (a NatsBroker) it reads from that engine (SQAL_NATS_URL) and its dispatcher sends
    commands through its MQTT listener (SQAL_MQTT_URL); with None it runs the embedded engine in its
    data dir (MQTT on a free port). Several processes may share one engine: each is a replica."""

    def __init__(self, database_url: str, broker: NatsBroker | None, workdir: Path, *, name: str = "gw",
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = workdir / f"gateway-{name}.log"
        self.env = {**os.environ, "SQAL_DATABASE_URL": database_url, "SQAL_DATA_DIR": str(workdir / f"data-{name}"),
                    "SQAL_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        for k in ("SQAL_NATS_URL", "SQAL_MQTT_URL"):
            self.env.pop(k, None)
        if broker is not None:
            self.env.update(SQAL_NATS_URL=broker.nats_url, SQAL_MQTT_URL=broker.url)
        else:
            self.env["SQAL_MQTT_EMBEDDED_PORT"] = "0"
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> None:
        for _attempt in range(3):
            if self._start_once(timeout):
                return
            self.port = free_port()  # taken by another process between free_port() and the bind
        raise RuntimeError(f"gateway could not bind a free port\n{self.log()}")

    def _start_once(self, timeout: float) -> bool:
        self.env["SQAL_HTTP_PORT"] = str(self.port)
        log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.ingest"], env=self.env, cwd=ROOT,
                                         stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "address already in use" in self.log_path.read_text(errors="replace")[log_from:].lower():
                    return False
                raise RuntimeError(f"gateway exited with {self.proc.returncode}\n{self.log()}")
            try:
                r = httpx.get(self.url + "/api/ingest/status", timeout=1)
                if r.status_code == 200 and r.json()["subscribed"]:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready after {timeout}s\n{self.log()}")

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/api/ingest/status", timeout=5).json()  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        """An unlabelled sample of its /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # a killed gateway leaves its embedded engine running (on purpose, the next start adopts it)
        if "SQAL_NATS_URL" not in self.env:
            try:
                pid = int(json.loads((Path(self.env["SQAL_DATA_DIR"]) / "nats" / "server.json").read_text())["pid"])
            except (OSError, ValueError, KeyError):
                pid = None
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def rss_kb(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""


def envelopes(dev: str, n: int, answered: list[str]) -> list[Envelope]:
    def done(o: Outcome) -> None:
        answered.append(f"{o.device_id}/{o.seq}/{o.status}")

    return [Envelope("mqtt", codec.topic(dev, "sample"), sample_bytes(dev, boot=1, seq=i), datetime.now(UTC),
                     done=done) for i in range(n)]


def hand_in(pipe: Pipeline, dev: str, n: int, answered: list[str]) -> None:
    """As the engine's source does: a fetched batch handed in at once (the source bounds what it has
    in hand, gateway/ingest/nats_source.py)."""
    pipe.put(envelopes(dev, n, answered))
