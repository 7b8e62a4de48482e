"""No loss, no duplicates when things die: the real gateway as a child process, Mosquitto with
persistence, real PostgreSQL. SIGKILL of the gateway, broker restart, PostgreSQL restart, and two
replicas on a shared subscription."""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import asyncpg
import httpx
import pytest

from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate_dsn
from sqalfw import codec
from tests.fixtures.mqtt import MosquittoBroker
from tests.fixtures.postgres import make_data_dir
from tests.gateway.ingest_support import GatewayProcess, Publisher, sample_bytes, wait_until

# Manual acks keep messages in flight until their batch commits: let the broker have more than
# Mosquitto's default 20 in flight per client (docs/ingest.md, "Broker settings").
BROKER_CONFIG = ["max_inflight_messages 1000"]


@pytest.fixture
def broker(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return mosquitto_factory(extra_config=BROKER_CONFIG)


class Stream:
    """Publishes `n` samples over `devices` devices from a thread, at about `rate` per second, each
    acknowledged by the broker (so the broker owns it) before the stream counts it as sent."""

    def __init__(self, broker: MosquittoBroker, n: int, devices: int = 5, rate: float = 800) -> None:
        self.prefix = f"ESP32_R{uuid.uuid4().hex[:6].upper()}"
        self.devs = [f"{self.prefix}_{i:02d}" for i in range(devices)]
        self.n, self.rate, self.broker = n, rate, broker
        self.payloads = [(codec.topic(self.devs[i % devices], "sample"),
                          sample_bytes(self.devs[i % devices], boot=1, seq=i // devices)) for i in range(n)]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            pub = Publisher(self.broker.host, self.broker.port)
            t0 = time.monotonic()
            for i, (topic, payload) in enumerate(self.payloads):
                pub.publish(topic, payload)
                ahead = i / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            pub.wait_all(timeout=120)
            pub.close()
        except BaseException as exc:  # reported by join()
            self.error = exc

    def start(self) -> "Stream":
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(180)
        assert not self.thread.is_alive(), "publisher stuck"
        assert self.error is None, self.error

    async def check_exactly_once(self, url: str, timeout: float = 60) -> None:
        async def all_in() -> bool:
            conn = await asyncpg.connect(url)
            try:
                return bool(await conn.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id LIKE $1 || '%'",
                                                self.prefix) >= self.n)
            finally:
                await conn.close()

        await wait_until(all_in, timeout=timeout, step=0.2)
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT device_id, seq FROM sqal_samples WHERE device_id LIKE $1 || '%'",
                                    self.prefix)
        finally:
            await conn.close()
        got = sorted((r["device_id"], r["seq"]) for r in rows)
        want = sorted((self.devs[i % len(self.devs)], i // len(self.devs)) for i in range(self.n))
        assert len(got) == len(set(got)), "duplicated readings"
        missing = set(want) - set(got)
        assert not missing, f"{len(missing)} readings lost, e.g. {sorted(missing)[:5]}"
        assert got == want


async def stored_count(url: str, prefix: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id LIKE $1 || '%'", prefix))
    finally:
        await conn.close()


def metric(gw: GatewayProcess, name: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for g in started:
        g.stop()


async def test_sigkill_gateway_mid_stream(broker: MosquittoBroker, database_url: str, tmp_path: Path,
                                          gateways: list[GatewayProcess]) -> None:
    gw = GatewayProcess(database_url, broker.url, tmp_path)
    gateways.append(gw)
    gw.start()
    stream = Stream(broker, 1500).start()
    assert await wait_until(lambda: _atleast(database_url, stream.prefix, 300), timeout=60)
    gw.kill()  # SIGKILL: batches in flight, acks not sent, nothing flushed
    at_kill = await stored_count(database_url, stream.prefix)
    assert at_kill < 1500, f"the kill must land mid-stream (all {at_kill} were stored before it)"
    await asyncio.sleep(0.5)  # the stream goes on; the broker queues for the persistent session
    gw.start()
    await asyncio.to_thread(stream.join)
    await stream.check_exactly_once(database_url)
    assert gw.alive()


async def test_broker_restart_mid_stream(broker: MosquittoBroker, database_url: str, tmp_path: Path,
                                         gateways: list[GatewayProcess]) -> None:
    gw = GatewayProcess(database_url, broker.url, tmp_path)
    gateways.append(gw)
    gw.start()
    first = Stream(broker, 1500, rate=500).start()
    assert await wait_until(lambda: _atleast(database_url, first.prefix, 200), timeout=60)
    # SIGTERM: Mosquitto saves its persistence file (the gateway's queued and in-flight messages)
    # and starts again on the same port; the publisher and the gateway reconnect on their own.
    await asyncio.to_thread(broker.restart)
    assert await stored_count(database_url, first.prefix) < 1500, "the restart must land mid-stream"
    await asyncio.to_thread(first.join)
    second = Stream(broker, 500).start()
    await asyncio.to_thread(second.join)
    await first.check_exactly_once(database_url)
    await second.check_exactly_once(database_url)
    assert gw.alive()


async def test_postgres_restart_mid_stream(broker: MosquittoBroker, tmp_path: Path,
                                           gateways: list[GatewayProcess]) -> None:
    data = make_data_dir("sqal-pg-restart-")
    pg = EmbeddedPostgres(data / "data", fsync=False)
    try:
        url = pg.start()
        await migrate_dsn(url)
        gw = GatewayProcess(url, broker.url, tmp_path)
        gateways.append(gw)
        gw.start()
        stream = Stream(broker, 1500, rate=600).start()
        assert await wait_until(lambda: _atleast(url, stream.prefix, 200), timeout=60)
        await asyncio.to_thread(pg.stop)  # the database goes away mid-stream...
        await asyncio.sleep(1.0)  # ...long enough for commits to fail and be retried
        await asyncio.to_thread(pg.start)
        await asyncio.to_thread(stream.join)
        await stream.check_exactly_once(url)
        assert gw.alive() and metric(gw, "sqal_ingest_db_retries_total") > 0
        gw.stop()
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)


async def test_two_replicas_shared_subscription(broker: MosquittoBroker, database_url: str, tmp_path: Path,
                                                gateways: list[GatewayProcess]) -> None:
    a = GatewayProcess(database_url, broker.url, tmp_path, client_id="gw-a", shared_group="sqal")
    b = GatewayProcess(database_url, broker.url, tmp_path, client_id="gw-b", shared_group="sqal")
    gateways += [a, b]
    a.start()
    b.start()
    stream = Stream(broker, 2000, devices=8, rate=3000).start()
    await asyncio.to_thread(stream.join)
    await stream.check_exactly_once(database_url)

    async def settled() -> bool:
        return metric(a, "sqal_ingest_stored_total") + metric(b, "sqal_ingest_stored_total") >= 2000

    assert await wait_until(settled)
    sa, sb = metric(a, "sqal_ingest_stored_total"), metric(b, "sqal_ingest_stored_total")
    assert sa > 0 and sb > 0, (sa, sb)  # the load was shared...
    assert sa + sb == 2000  # ...and every reading was read by exactly one replica
    assert metric(a, "sqal_ingest_duplicates_total") + metric(b, "sqal_ingest_duplicates_total") == 0


async def _atleast(url: str, prefix: str, n: int) -> bool:
    return await stored_count(url, prefix) >= n
