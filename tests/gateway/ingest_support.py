"""Helpers shared by the ingest tests: valid samples, publishers, a gateway child process, waits."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import asyncpg
import httpx
import paho.mqtt.client as paho
from sqalfw import codec

from tests.fixtures.mqtt import free_port

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


async def count(pool: asyncpg.Pool, dev: str) -> int:
    """Samples of `dev` stored."""
    return int(await pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", dev))


def uid(prefix: str = "ESP32_T") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


def _acked(info: paho.MQTTMessageInfo) -> bool:
    # is_published() raises when the message was queued while disconnected (rc NO_CONN), even though
    # paho sends it after reconnecting and marks it published on PUBACK: read that mark directly.
    with info._condition:
        return bool(info._published)


class Publisher:
    """A paho QoS 1 publisher that waits for every PUBACK."""

    def __init__(self, host: str, port: int, client_id: str | None = None) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]  # typed int; fractions work (paho sleeps them)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self.infos: list[paho.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        self.infos.append(info)
        return info

    def wait_all(self, timeout: float = 30) -> None:
        # Polled, not wait_for_publish(): that raises while paho is reconnecting (broker restart),
        # and paho re-sends the unacknowledged messages by itself once it is back.
        deadline = time.monotonic() + timeout
        for info in self.infos:
            while not _acked(info) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert _acked(info), "publish not acknowledged by the broker in time"

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


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
    """The real gateway (`python -m gateway.ingest`) as a child process we can SIGKILL and restart."""

    def __init__(self, database_url: str, mqtt_url: str, workdir: Path, *, client_id: str = "sqal-gw-test",
                 shared_group: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"gateway-{client_id}.log"
        self.env = {**os.environ, "SQAL_DATABASE_URL": database_url, "SQAL_MQTT_URL": mqtt_url,
                    "SQAL_MQTT_CLIENT_ID": client_id, "SQAL_HTTP_PORT": str(self.port),
                    "SQAL_DATA_DIR": str(workdir / "data"), "SQAL_LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(ROOT)}
        if shared_group:
            self.env["SQAL_MQTT_SHARED_GROUP"] = shared_group
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.ingest"], env=self.env, cwd=ROOT,
                                     stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}\n{self.log()}")
            try:
                r = httpx.get(self.url + "/api/ingest/status", timeout=1)
                if r.status_code == 200 and r.json()["mqtt_subscribed"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready after {timeout}s\n{self.log()}")

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
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

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
