"""No loss, no duplicates when things die: the real gateway as a child process, the message engine
(a real nats-server, JetStream on disk, its MQTT listener for the publishing boards), real
PostgreSQL. SIGKILL of the gateway, engine restart, PostgreSQL restart, and two replicas on the
shared durable consumer."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from pathlib import Path

import asyncpg
import pytest
from sqalfw import codec

from gateway.nats import streams
from gateway.nats.streams import StreamLimits
from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate_dsn
from tests.fixtures.mqtt import NatsBroker
from tests.fixtures.postgres import make_data_dir
from tests.gateway.ingest_support import GatewayProcess, Publisher, consumer_state, sample_bytes, wait_until


@pytest.fixture
def broker(nats_broker: NatsBroker) -> NatsBroker:
    return nats_broker


class Stream:
    """Publishes `n` samples over `devices` devices from a thread, at about `rate` per second, each
    acknowledged by the broker (so the broker owns it) before the stream counts it as sent."""

    def __init__(self, broker: NatsBroker, n: int, devices: int = 5, rate: float = 800) -> None:
        self.prefix = f"ESP32_R{uuid.uuid4().hex[:6].upper()}"
        self.devs = [f"{self.prefix}_{i:02d}" for i in range(devices)]
        self.n, self.rate, self.broker = n, rate, broker
        self.payloads = [(codec.topic(self.devs[i % devices], "sample"),
                          sample_bytes(self.devs[i % devices], boot=1, seq=i // devices)) for i in range(n)]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self.pub: Publisher | None = None

    def _run(self) -> None:
        try:
            pub = self.pub = Publisher(self.broker.host, self.broker.port)
            t0 = time.monotonic()
            for i, (topic, payload) in enumerate(self.payloads):
                pub.publish(topic, payload)
                ahead = i / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            pub.wait_all(timeout=120)
            pub.close()
        except BaseException as exc:  # noqa: BLE001 - the thread's failure, whatever it is, is reported by join()
            self.error = exc

    def start(self) -> Stream:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(180)
        assert not self.thread.is_alive(), "publisher stuck"
        assert self.error is None, self.error

    def key(self, i: int) -> tuple[str, int]:
        return self.devs[i % len(self.devs)], i // len(self.devs)

    def acked_between(self, start: float, end: float) -> set[tuple[str, int]]:
        """Readings whose PUBACK came in [start, end] (time.monotonic())."""
        assert self.pub is not None
        return {self.key(i) for i, t in enumerate(self.pub.acked_at) if t is not None and start <= t <= end}

    async def check_exactly_once(self, url: str, timeout: float = 60,
                                 may_be_lost: AbstractSet[tuple[str, int]] = frozenset()) -> set[tuple[str, int]]:
        """Every reading stored once, except that those of `may_be_lost` may be missing; -> those missing."""
        async def all_in() -> bool:
            conn = await asyncpg.connect(url)
            try:
                return bool(await conn.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id LIKE $1 || '%'",
                                                self.prefix) >= self.n - len(may_be_lost))
            finally:
                await conn.close()

        await wait_until(all_in, timeout=timeout, step=0.2)
        if may_be_lost:
            await asyncio.sleep(3)  # the ones that may be lost may also come later (redelivered)
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch("SELECT device_id, seq FROM sqal_samples WHERE device_id LIKE $1 || '%'",
                                    self.prefix)
        finally:
            await conn.close()
        got = sorted((r["device_id"], r["seq"]) for r in rows)
        want = {self.key(i) for i in range(self.n)}
        assert len(got) == len(set(got)), "duplicated readings"
        assert set(got) <= want
        missing = want - set(got) - set(may_be_lost)
        assert not missing, f"{len(missing)} readings lost, e.g. {sorted(missing)[:5]}"
        return want - set(got)


async def stored_count(url: str, prefix: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id LIKE $1 || '%'", prefix))
    finally:
        await conn.close()


def metric(gw: GatewayProcess, name: str) -> float:
    return gw.metric(name)


async def all_acknowledged(broker: NatsBroker) -> bool:
    """The engine has nothing left for the gateway: every message handed out was acknowledged."""
    c = await consumer_state(broker.nats_url)
    return c.num_ack_pending == 0 and c.num_pending == 0


async def shorten_ack_wait(nats_url: str, seconds: float) -> None:
    """The shared consumer's ack_wait, through nats-py's public JetStream API: what a gateway killed
    with messages in hand held is handed out again `seconds` after its fetch instead of the default
    60 s (a gateway's start sets the default again, so this comes after the start)."""
    import nats

    nc = await nats.connect(nats_url, allow_reconnect=False)
    try:
        limits = StreamLimits(ack_wait_s=seconds)
        for name, filters in streams.consumer_filters().items():
            await nc.jetstream().add_consumer(name, streams.consumer_config(limits, filters))
    finally:
        await nc.close()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for g in started:
        g.stop()


async def test_sigkill_gateway_mid_stream(broker: NatsBroker, database_url: str, tmp_path: Path,
                                          gateways: list[GatewayProcess]) -> None:
    gw = GatewayProcess(database_url, broker, tmp_path)
    gateways.append(gw)
    gw.start()
    stream = Stream(broker, 1500).start()
    assert await wait_until(lambda: _atleast(database_url, stream.prefix, 300), timeout=60)
    gw.kill()  # SIGKILL: batches in flight, acks not sent, nothing flushed
    at_kill = await stored_count(database_url, stream.prefix)
    assert at_kill < 1500, f"the kill must land mid-stream (all {at_kill} were stored before it)"
    await asyncio.sleep(0.5)  # the stream goes on; the engine keeps the boards' messages in its stream
    gw.start()
    await shorten_ack_wait(broker.nats_url, 2)  # what the killed gateway held comes back in 2 s, not 60
    await asyncio.to_thread(stream.join)
    await stream.check_exactly_once(database_url)
    assert gw.alive()
    assert await wait_until(lambda: all_acknowledged(broker), timeout=30)


async def test_engine_restart_mid_stream(broker: NatsBroker, database_url: str, tmp_path: Path,
                                         gateways: list[GatewayProcess]) -> None:
    gw = GatewayProcess(database_url, broker, tmp_path)
    gateways.append(gw)
    gw.start()
    # a message the engine sent just before it stopped and the gateway never got is handed out again
    # after ack_wait: 2 s here (the consumer's settings are on disk, they survive the restart)
    await shorten_ack_wait(broker.nats_url, 2)
    first = Stream(broker, 1500, rate=500).start()
    assert await wait_until(lambda: _atleast(database_url, first.prefix, 200), timeout=60)
    # SIGTERM: nats-server closes its JetStream files (the streams, what the gateway holds unacked)
    # and starts again on the same ports; the publisher and the gateway reconnect on their own.
    await asyncio.to_thread(broker.restart)
    assert await stored_count(database_url, first.prefix) < 1500, "the restart must land mid-stream"
    await asyncio.to_thread(first.join)
    second = Stream(broker, 500).start()
    await asyncio.to_thread(second.join)
    # Every reading acknowledged before the stop or by the engine started again is stored exactly
    # once (what the gateway held, its acks, its fetches across the restart). The stop lets the
    # clients out first (a reload), then SIGTERM: no PUBACK after JetStream stopped.
    await first.check_exactly_once(database_url)
    await second.check_exactly_once(database_url)
    assert gw.alive()
    assert await wait_until(lambda: all_acknowledged(broker), timeout=30)


async def test_postgres_restart_mid_stream(broker: NatsBroker, tmp_path: Path,
                                           gateways: list[GatewayProcess]) -> None:
    data = make_data_dir("sqal-pg-restart-")
    pg = EmbeddedPostgres(data / "data", fsync=False)
    try:
        url = pg.start()
        await migrate_dsn(url)
        gw = GatewayProcess(url, broker, tmp_path)
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
        assert await wait_until(lambda: all_acknowledged(broker), timeout=30)
        gw.stop()
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)


async def test_two_replicas_on_the_shared_consumer(broker: NatsBroker, database_url: str, tmp_path: Path,
                                                  gateways: list[GatewayProcess]) -> None:
    a = GatewayProcess(database_url, broker, tmp_path, name="a")
    b = GatewayProcess(database_url, broker, tmp_path, name="b")
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
    assert metric(a, "sqal_ingest_redelivered_total") + metric(b, "sqal_ingest_redelivered_total") == 0
    assert await wait_until(lambda: all_acknowledged(broker), timeout=30)


async def _atleast(url: str, prefix: str, n: int) -> bool:
    return await stored_count(url, prefix) >= n
