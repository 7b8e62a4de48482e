"""gateway/ingest/nats_source.py and gateway/nats/subjects.py against a real nats-server (JetStream,
its MQTT listener for the publishing boards) and real PostgreSQL:

- two sources ("replicas") on the one durable consumer share the messages: each stored once, both
  did work, nothing handed out twice;
- a gateway killed with messages in hand -- some committed and not acknowledged, some not yet
  committed -- gets them all redelivered to another source: each stored once, the committed ones
  counted as duplicates, all of them in `sqal_ingest_redelivered_total`;
- backpressure: a source never holds more than its capacity; the rest waits in the stream;
- a stop is prompt and acknowledges everything it committed;
- MQTT topics <-> NATS subjects exactly as the engine maps them, odd ones included (and the
  source's own reading of a message's subject the same).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import paho.mqtt.client as paho
import pytest
from sqalfw import codec

from gateway.ingest.envelope import Envelope
from gateway.ingest.nats_source import message_topic
from gateway.ingest.service import IngestService, IngestSettings
from gateway.nats import streams, subjects
from gateway.nats.streams import StreamLimits
from tests.fixtures.mqtt import NatsBroker
from tests.gateway.ingest_support import (
    GatewayProcess,
    Publisher,
    consumer_state,
    count,
    ensure_streams,
    key_held,
    lock_waiters,
    metric,
    sample_bytes,
    stream_messages,
    uid,
    wait_until,
)


def publish(broker: NatsBroker, devs: list[str], n: int, first_seq: int = 0, rate: float = 0) -> None:
    """`n` samples round-robin over `devs`, QoS 1, every PUBACK awaited (`rate`: per second, 0 = at once)."""
    pub = Publisher(broker.host, broker.port)
    t0 = time.monotonic()
    for i in range(n):
        d = devs[i % len(devs)]
        pub.publish(codec.topic(d, "sample"), sample_bytes(d, boot=1, seq=first_seq + i // len(devs)))
        if rate and (ahead := i / rate - (time.monotonic() - t0)) > 0:
            time.sleep(ahead)
    pub.wait_all(60)
    pub.close()


async def settled(nats_url: str) -> bool:
    c = await consumer_state(nats_url)
    return c.num_ack_pending == 0 and c.num_pending == 0 and await stream_messages(nats_url) == 0


def service(pool: asyncpg.Pool, broker: NatsBroker, nats_url: str | None = None, **settings: Any) -> IngestService:
    return IngestService(pool, IngestSettings(nats_url=nats_url or broker.nats_url, mqtt_url=broker.url, workers=0,
                                              **settings))


async def test_two_sources_on_the_durable_consumer_share_the_messages(nats_broker: NatsBroker,
                                                                      db_pool: asyncpg.Pool) -> None:
    # small capacities: neither source can take the whole stream while the other waits
    a = service(db_pool, nats_broker, queue_max=50, batch_max=50)
    b = service(db_pool, nats_broker, queue_max=50, batch_max=50)
    await a.start()
    await b.start()
    try:
        devs = [uid("ESP32_SHARE") for _ in range(4)]
        await asyncio.to_thread(publish, nats_broker, devs, 2000, 0, 2000)

        async def all_stored() -> bool:
            n = await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = ANY($1)", devs)
            return n == 2000

        assert await wait_until(all_stored, timeout=60)
        assert await wait_until(lambda: settled(nats_broker.nats_url), timeout=20)
        sa, sb = (metric(s.metrics, "sqal_ingest_stored_total") for s in (a, b))
        assert sa > 0 and sb > 0, (sa, sb)  # both did work...
        assert sa + sb == 2000  # ...and each message went to one of them
        for s in (a, b):
            assert metric(s.metrics, "sqal_ingest_duplicates_total") == 0
            assert metric(s.metrics, "sqal_ingest_redelivered_total") == 0 and s.status()["redelivered"] == 0
        n, distinct = await db_pool.fetchrow("SELECT count(*), count(DISTINCT (device_id, boot, seq)) FROM sqal_samples "
                                             "WHERE device_id = ANY($1)", devs)
        assert n == distinct == 2000
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture
def engine_with_users(tmp_path: Path) -> Iterator[NatsBroker]:
    """A test engine with users: `gw` may do anything, `noack` may not acknowledge (its acks to
    $JS.ACK.> are refused: it commits and the engine never hears of it); MQTT clients without
    credentials (the boards) are `dev`."""
    users = ("authorization { users: [ {user: gw, password: gw}, "
             "{user: noack, password: noack, permissions: {publish: {deny: [\"$JS.ACK.>\"]}}}, "
             "{user: dev, password: dev} ] }")
    b = NatsBroker(tmp_path / "nats-users", extra_config=[users, "no_auth_user: dev"])
    b.start()
    yield b
    b.stop()


def as_user(broker: NatsBroker, user: str) -> str:
    return broker.nats_url.replace("nats://", f"nats://{user}:{user}@")


async def test_a_gateway_killed_with_messages_in_hand_they_are_redelivered_and_stored_once(
        engine_with_users: NatsBroker, database_url: str, db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    broker = engine_with_users
    gw_url = as_user(broker, "gw")
    await ensure_streams(gw_url)
    dev = uid("ESP32_KILL")
    # A: a real gateway whose acks never reach the engine (what a gateway killed between its
    # commit and its acks leaves behind)
    a = GatewayProcess(database_url, broker, tmp_path, name="a",
                       extra_env={"SQAL_NATS_URL": as_user(broker, "noack"), "SQAL_INGEST_WORKERS": "0"})
    b: IngestService | None = None
    try:
        await asyncio.to_thread(a.start)
        await asyncio.to_thread(publish, broker, [dev], 10)  # seq 0-9: committed by A, not acknowledged

        async def committed_by_a() -> bool:
            return await count(db_pool, dev) == 10 and (await consumer_state(gw_url)).num_ack_pending == 10

        assert await wait_until(committed_by_a, timeout=30)
        async with key_held(db_pool, dev, 10) as blocker:
            await asyncio.to_thread(publish, broker, [dev], 10, 10)  # seq 10-19: fetched, commit held up

            async def all_in_hand() -> bool:
                return (await consumer_state(gw_url)).num_ack_pending == 20 and await lock_waiters(db_pool) == 1

            assert await wait_until(all_in_hand, timeout=30)
            assert (await asyncio.to_thread(a.status))["in_hand"] == 10
            await asyncio.to_thread(a.kill)
            await blocker.rollback()
        assert await count(db_pool, dev) == 10
        assert await stream_messages(gw_url) == 20  # none acknowledged: the engine has all twenty

        b = service(db_pool, broker, gw_url, limits=StreamLimits(ack_wait_s=2))  # A's 20 come back 2 s after A got them
        await b.start()

        async def all_stored() -> bool:
            return await count(db_pool, dev) == 20

        assert await wait_until(all_stored, timeout=30)
        assert await wait_until(lambda: settled(gw_url), timeout=20)
        assert b.status()["redelivered"] == 20 and metric(b.metrics, "sqal_ingest_redelivered_total") == 20
        assert metric(b.metrics, "sqal_ingest_duplicates_total") == 10  # A had committed 0-9
        assert metric(b.metrics, "sqal_ingest_stored_total") == 10  # A had not committed 10-19
        rows = await db_pool.fetch("SELECT seq FROM sqal_samples WHERE device_id = $1 ORDER BY seq", dev)
        assert [r["seq"] for r in rows] == list(range(20))  # each once
        assert await db_pool.fetchval("SELECT duplicates FROM devices WHERE id = $1", dev) == 10
    finally:
        if b is not None:
            await b.stop()
        await asyncio.to_thread(a.stop)


async def test_backpressure_a_source_holds_at_most_its_capacity(nats_broker: NatsBroker, db_pool: asyncpg.Pool) -> None:
    capacity = 20
    limits = StreamLimits(ack_wait_s=300)
    await ensure_streams(nats_broker.nats_url, limits)
    dev = uid("ESP32_BP")
    await asyncio.to_thread(publish, nats_broker, [dev], 100)
    svc = service(db_pool, nats_broker, queue_max=capacity, batch_max=capacity, limits=limits)
    peak = 0
    real_put = svc.pipeline.put

    def put(envs: list[Envelope]) -> None:  # what the source holds right after each hand-over
        nonlocal peak
        assert svc.source is not None
        peak = max(peak, svc.source.in_flight)
        real_put(envs)

    svc.pipeline.put = put  # type: ignore[method-assign]
    async with key_held(db_pool, dev, 0) as blocker:
        await svc.start()
        try:
            async def full() -> bool:
                c = await consumer_state(nats_broker.nats_url)
                return svc.status()["in_hand"] == capacity and c.num_ack_pending == capacity \
                    and await lock_waiters(db_pool) == 1

            assert await wait_until(full, timeout=30)
            # it stays full: the source asks for nothing more while it has no room (two fetch waits)
            seen = []
            for _ in range(6):
                c = await consumer_state(nats_broker.nats_url)
                seen.append((c.num_ack_pending, c.num_pending, svc.status()["in_hand"]))
                await asyncio.sleep(0.5)
            assert seen == [(capacity, 100 - capacity, capacity)] * 6
            assert await stream_messages(nats_broker.nats_url) == 100  # the rest waits in the engine
            await blocker.rollback()

            async def all_stored() -> bool:
                return await count(db_pool, dev) == 100

            assert await wait_until(all_stored, timeout=60)
            assert await wait_until(lambda: settled(nats_broker.nats_url), timeout=20)
            assert 0 < peak <= capacity, peak
            assert svc.status()["in_hand"] == 0
        finally:
            await svc.stop()


async def test_a_stop_is_prompt_and_acknowledges_what_it_committed(nats_broker: NatsBroker, db_pool: asyncpg.Pool,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Stopped in several phases of its fetches: never the 30 s of nats-py's drain timeout (the stop
    used drain(), which waits for each pull subscription's queue to be marked done, and hung after an
    idle fetch had expired: 30.03 s), and every committed message acknowledged."""
    dev = uid("ESP32_STOP")
    took: list[float] = []
    with caplog.at_level(logging.WARNING, logger="gateway.ingest.nats_source"):
        for rnd in range(4):
            svc = service(db_pool, nats_broker)
            await svc.start()
            await asyncio.to_thread(publish, nats_broker, [dev], 300, rnd * 300, 1000)

            async def stored(n: int = (rnd + 1) * 300) -> bool:
                return await count(db_pool, dev) == n

            assert await wait_until(stored, timeout=30)
            # a different moment each time: at once, in the middle of a fetch's 2 s wait, after an
            # idle fetch expired (where drain() hung), after two
            await asyncio.sleep((0, 0.7, 2.5, 4.5)[rnd])
            started = time.monotonic()
            await svc.stop()
            # a loose bound: a stop takes well under a second; the drain hung for its full 30 s
            # (asyncio.wait_for cannot bound it: nats-py's drain swallows the cancellation)
            took.append(time.monotonic() - started)
            assert await settled(nats_broker.nats_url), await consumer_state(nats_broker.nats_url)
    assert max(took) < 15, took
    assert not [r for r in caplog.records if "Drain" in r.getMessage()]


# ---- topics <-> subjects ----

ODD_TOPICS = [
    "sqal/v1/ESP32_A_01/sample", "sqal/v1/ESP32_A_01/cmd/result", "sqal/v1/a.b/sample", "sqal/v1/..../sample",
    "sqal/v1/./sample", "sqal/v1/a./sample", "sqal/v1/.a/sample", "sqal/v1/a..b/sample", "sqal/v1//sample",
    "sqal/v1/a//b/sample", "/sqal/v1/A/sample", "sqal/v1/A/sample/", "sqal/v1/A/", "//", "/", "a", ".", "..",
    "sqal/v1/*/sample", "sqal/v1/>/sample", "sqal/v1/é/sample", "a/./b", "a/../b", "a///b", "sqal/v1/a/./",
]


@pytest.mark.parametrize("topic", ODD_TOPICS)
def test_a_topic_survives_the_round_trip(topic: str) -> None:
    assert subjects.subject_to_topic(subjects.topic_to_subject(topic)) == topic


@pytest.mark.parametrize("topic", ODD_TOPICS)
def test_the_source_reads_the_topic_of_a_message_of_either_stream(topic: str) -> None:
    """The source's fast path (no '/' in the subject) gives what subject_to_topic gives."""
    subject = subjects.topic_to_subject(topic)
    assert message_topic(streams.MQTT_PREFIX + subject) == topic  # the boards' QoS 1 messages
    assert message_topic(subject) == topic  # telemetry


def test_the_source_reads_any_subject_as_the_engine_does() -> None:
    for subject in ["sqal.v1.a//b.sample", "sqal.v1./.sample", "/.sqal.v1", "a./", "a.////.b", "a.///.b",
                    "a././.b", "sqal.v1.X\x00.sample", "a..b", ".a", "a.", "..", "sqal.v1.é.sample"]:
        assert message_topic(subject) == subjects.subject_to_topic(subject), subject
        assert message_topic(streams.MQTT_PREFIX + subject) == subjects.subject_to_topic(subject), subject


async def test_topics_and_subjects_map_as_the_engine_maps_them(nats_broker: NatsBroker) -> None:
    """Each odd topic published over MQTT arrives on the subject topic_to_subject() names, and a
    subject published over NATS reaches MQTT subscribers as the topic subject_to_topic() names (so a
    reject records the topic the board used)."""
    nc = await nats.connect(nats_broker.nats_url)
    seen: list[str] = []

    async def on_msg(m: Any) -> None:
        seen.append(m.subject)

    await nc.subscribe(">", cb=on_msg)
    await nc.flush()
    topics: list[str] = []
    cond = threading.Condition()
    subscribed = threading.Event()
    sub = paho.Client(paho.CallbackAPIVersion.VERSION2)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        with cond:
            topics.append(msg.topic)
            cond.notify_all()

    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect(nats_broker.host, nats_broker.port)
    sub.loop_start()
    sub.subscribe("#", 0)
    assert subscribed.wait(10)
    pub = Publisher(nats_broker.host, nats_broker.port)
    try:
        for topic in ODD_TOPICS:
            seen.clear()
            pub.publish(topic, b"x")
            await asyncio.to_thread(pub.wait_all)

            async def arrived() -> list[str]:
                return [s for s in seen if not s.startswith("$")]

            assert await wait_until(arrived, timeout=5) == [subjects.topic_to_subject(topic)], topic
        # a fence: the MQTT subscriber's copies of those topics may still be on their way (only the
        # NATS side was waited for); one more message from the same publisher comes after them all
        with cond:
            topics.clear()
        pub.publish("fence/odd-topics-done", b"f")
        await asyncio.to_thread(pub.wait_all)
        with cond:
            assert cond.wait_for(lambda: "fence/odd-topics-done" in topics, 5), topics
        # subjects no topic maps to (only a NATS client can publish them): the server's reading of them
        for subject in ["sqal.v1.a//b.sample", "sqal.v1./.sample", "/.sqal.v1", "a./", "a.////.b", "a.///.b",
                        "a././.b", "sqal.v1.X\x00.sample"]:
            with cond:
                topics.clear()
            await nc.publish(subject, b"y")
            await nc.flush()
            with cond:
                assert cond.wait_for(lambda: bool(topics), 5), subject
                assert topics == [subjects.subject_to_topic(subject)], subject
    finally:
        pub.close()
        sub.loop_stop()
        await nc.close()
