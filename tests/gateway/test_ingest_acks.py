"""The MQTT source's fast paths, end to end (real Mosquitto, real PostgreSQL): a burst is read in
chunks (not three recv() calls a packet) and its PUBLISH packets parsed by the source's fast path,
PUBACKs go out one buffer per batch, and every message
is still acknowledged -- the persistent session has nothing left to redeliver."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import paho.mqtt.client as paho
from sqalfw import codec

from gateway.ingest.service import IngestService, IngestSettings
from tests.fixtures.mqtt import MosquittoBroker
from tests.gateway.ingest_support import Publisher, count_samples, sample, uid, wait_until

N = 1500


def session(broker: MosquittoBroker, client_id: str, received: list[Any] | None = None) -> paho.Client:
    """A plain paho client on `client_id`'s persistent session (subscribed to the samples)."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    if received is not None:
        c.on_message = lambda cl, u, m: received.append(m.mid)
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.subscribe("sqal/v1/+/sample", 1)
    assert subscribed.wait(10), "subscription not acknowledged"
    return c


def close(c: paho.Client) -> None:
    c.disconnect()
    c.loop_stop()


async def test_burst_read_in_chunks_acked_per_batch_nothing_redelivered(
        mosquitto_factory: Callable[..., MosquittoBroker], db_pool: asyncpg.Pool) -> None:
    broker = mosquitto_factory(extra_config=["max_inflight_messages 1000"])
    cid, dev = f"gw-acks-{uuid.uuid4().hex[:6]}", uid("ESP32_ACK")
    close(session(broker, cid))  # the gateway's session exists; the burst is queued for it offline
    pub = Publisher(broker.host, broker.port)
    for seq in range(N):
        pub.publish(codec.topic(dev, "sample"), codec.encode_sample(sample(dev, boot=1, seq=seq, seed=seq % 7)))
    await asyncio.to_thread(pub.wait_all)

    svc = IngestService(db_pool, IngestSettings(mqtt_url=broker.url, mqtt_client_id=cid))
    await svc.start(wait_subscribed_s=10)
    try:
        async def all_stored() -> bool:
            return await count_samples(db_pool, dev) == N

        assert await wait_until(all_stored, timeout=60), await count_samples(db_pool, dev)
        assert await svc.pipeline.drain(10)
        mqtt = svc.mqtt
        assert mqtt is not None
        # Delivered back to back by the broker: many packets per read, many acks per write.
        assert 0 < mqtt.client.chunk_reads < N / 5, mqtt.client.chunk_reads
        # parsed by the source's fast path, all but about two a chunk (its first packet, and the one cut
        # at its end, are paho's)
        assert mqtt.client.fast_publishes >= N - 2 * mqtt.client.chunk_reads - 10, mqtt.client.fast_publishes
        assert 0 < mqtt.ack_writes < N / 5, mqtt.ack_writes
        assert mqtt.metrics.acks_skipped._value.get() == 0
        await asyncio.sleep(0.5)  # the last PUBACK buffer is written by paho's thread
    finally:
        await svc.stop()

    # Every message was acknowledged: the session hands nothing back to the next client on it...
    got: list[Any] = []
    probe = session(broker, cid, got)
    try:
        await asyncio.sleep(1.5)
        assert got == [], f"{len(got)} messages redelivered: their PUBACK never reached the broker"
        # ...and the probe does see what the session still owes (so an empty list means something).
        pub.publish(codec.topic(dev, "sample"), codec.encode_sample(sample(dev, boot=1, seq=N)))
        await asyncio.to_thread(pub.wait_all)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(got) == 1
    finally:
        close(probe)
        pub.close()
    assert await count_samples(db_pool, dev) == N  # and nothing was stored twice
