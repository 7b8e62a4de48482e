"""The engine's messages are acknowledged only after their batch committed (real nats-server with
JetStream, real PostgreSQL), read from the engine itself through nats-py's public JetStream API (the
shared durable consumer's ack-pending / pending / redelivered counts, the stream's message count):

- a burst the engine kept while no gateway ran is stored once and every message acknowledged:
  nothing left pending, nothing redelivered, the work-queue stream empty;
- while a batch's commit is held up, its messages are handed out and *not* acknowledged (and stay
  in the stream); they are acknowledged once it commits;
- a gateway SIGKILLed with messages fetched and not committed never acknowledges them: the engine
  hands them to another replica after the consumer's ack_wait, which stores them (once).

Acknowledging on receipt (the old non-manual-ack mistake) fails the second test (ack pending 0
before the commit) and loses the readings of the third (a killed gateway's messages are gone)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from sqalfw import codec

from gateway.ingest.service import IngestService, IngestSettings
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

N = 1500


def publish(broker: NatsBroker, dev: str, seqs: range) -> None:
    """Samples of `dev`, QoS 1, every PUBACK awaited: from then on the engine owns them."""
    pub = Publisher(broker.host, broker.port)
    for seq in seqs:
        pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, boot=1, seq=seq, seed=seq % 7))
    pub.wait_all(60)
    pub.close()


async def settled(nats_url: str) -> bool:
    """Everything handed out was acknowledged and nothing waits: the consumer and stream are empty."""
    c = await consumer_state(nats_url)
    return c.num_ack_pending == 0 and c.num_pending == 0 and await stream_messages(nats_url) == 0


async def test_a_burst_kept_by_the_engine_is_stored_and_every_message_acknowledged(
        nats_broker: NatsBroker, db_pool: asyncpg.Pool) -> None:
    await ensure_streams(nats_broker.nats_url)  # a gateway ran before: the streams exist
    dev = uid("ESP32_ACK")
    await asyncio.to_thread(publish, nats_broker, dev, range(N))  # no gateway running: the engine keeps them
    assert await stream_messages(nats_broker.nats_url) == N
    assert (await consumer_state(nats_broker.nats_url)).num_pending == N

    svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url))
    await svc.start()
    try:
        async def all_stored() -> bool:
            return await count(db_pool, dev) == N

        assert await wait_until(all_stored, timeout=60), await count(db_pool, dev)
        assert await svc.pipeline.drain(10)
        assert await wait_until(lambda: settled(nats_broker.nats_url), timeout=20), \
            await consumer_state(nats_broker.nats_url)
        c = await consumer_state(nats_broker.nats_url)
        assert c.delivered is not None and c.ack_floor is not None
        # each message handed out once and acknowledged: nothing redelivered, the ack floor at the last one
        assert c.num_redelivered == 0 and c.delivered.stream_seq == c.ack_floor.stream_seq == N
        assert c.delivered.consumer_seq == N
        st = svc.status()
        assert st["redelivered"] == 0 and st["in_hand"] == 0 and st["queue_depth"] == 0
        assert metric(svc.metrics, "sqal_ingest_redelivered_total") == 0
        assert metric(svc.metrics, "sqal_ingest_duplicates_total") == 0
    finally:
        await svc.stop()
    assert await count(db_pool, dev) == N  # and nothing was stored twice


async def test_nothing_is_acknowledged_before_its_batch_commits(nats_broker: NatsBroker, db_pool: asyncpg.Pool) -> None:
    limits = StreamLimits(ack_wait_s=300)  # no redelivery while the test holds the commit up
    await ensure_streams(nats_broker.nats_url, limits)
    dev = uid("ESP32_ACK")
    await asyncio.to_thread(publish, nats_broker, dev, range(10))  # fetched together: one batch
    async with key_held(db_pool, dev, 0) as blocker:
        svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url,
                                                    workers=0, limits=limits))
        await svc.start()
        try:
            async def fetched_and_commit_waiting() -> bool:
                c = await consumer_state(nats_broker.nats_url)
                return c.num_ack_pending == 10 and await lock_waiters(db_pool) == 1

            assert await wait_until(fetched_and_commit_waiting, timeout=30), await consumer_state(nats_broker.nats_url)
            # handed out, held by the gateway, in a commit that has not happened: not acknowledged,
            # still in the engine's stream
            assert await count(db_pool, dev) == 0
            c = await consumer_state(nats_broker.nats_url)
            assert c.ack_floor is not None
            assert (c.num_ack_pending, c.num_pending, c.ack_floor.stream_seq) == (10, 0, 0)
            assert await stream_messages(nats_broker.nats_url) == 10
            assert svc.status()["in_hand"] == 10
            await blocker.rollback()  # the key is free: the batch commits (all ten new)...

            async def all_stored() -> bool:
                return await count(db_pool, dev) == 10

            assert await wait_until(all_stored)
            # ...and only then are they acknowledged, each once: the engine deletes them
            assert await wait_until(lambda: settled(nats_broker.nats_url), timeout=20)
            assert svc.status()["in_hand"] == 0 and svc.status()["redelivered"] == 0
        finally:
            await svc.stop()


async def test_a_killed_gateways_uncommitted_messages_go_to_another_replica(
        nats_broker: NatsBroker, database_url: str, db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    dev = uid("ESP32_ACK")
    a = GatewayProcess(database_url, nats_broker, tmp_path, name="a", extra_env={"SQAL_INGEST_WORKERS": "0"})
    b: IngestService | None = None
    try:
        async with key_held(db_pool, dev, 0) as blocker:
            await asyncio.to_thread(a.start)
            await asyncio.to_thread(publish, nats_broker, dev, range(10))

            async def in_hand_of_a() -> bool:  # fetched by A, its commit waiting on the held key
                c = await consumer_state(nats_broker.nats_url)
                return c.num_ack_pending == 10 and await lock_waiters(db_pool) == 1

            assert await wait_until(in_hand_of_a, timeout=30), await consumer_state(nats_broker.nats_url)
            assert (await asyncio.to_thread(a.status))["in_hand"] == 10
            await asyncio.to_thread(a.kill)  # SIGKILL: no commit, no ack
            await blocker.rollback()
        assert await count(db_pool, dev) == 0
        assert await stream_messages(nats_broker.nats_url) == 10  # the engine still has them

        # Another replica on the same durable consumer; its streams' settings (a 2 s ack_wait) apply
        # to what A held: the engine hands A's messages to it 2 s after A's fetch.
        b = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url, workers=0,
                                                  limits=StreamLimits(ack_wait_s=2)))
        await b.start()

        async def all_stored() -> bool:
            return await count(db_pool, dev) == 10

        assert await wait_until(all_stored, timeout=30)
        assert await wait_until(lambda: settled(nats_broker.nats_url), timeout=20)
        assert b.status()["redelivered"] == 10
        assert metric(b.metrics, "sqal_ingest_redelivered_total") == 10
        assert metric(b.metrics, "sqal_ingest_stored_total") == 10  # A committed none of them
        assert metric(b.metrics, "sqal_ingest_duplicates_total") == 0
        rows = await db_pool.fetch("SELECT seq FROM sqal_samples WHERE device_id = $1 ORDER BY seq", dev)
        assert [r["seq"] for r in rows] == list(range(10))
    finally:
        if b is not None:
            await b.stop()
        await asyncio.to_thread(a.stop)
