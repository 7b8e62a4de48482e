"""gateway/broker.py: the embedded broker delivers every QoS 1 message it has acknowledged, even when
the publisher leaves before the broker has routed them (amqtt 0.12 acknowledges a PUBLISH when it
reads it and routes it later, one at a time; it dropped what was still waiting when the client
disconnected or its link dropped)."""

from __future__ import annotations

import asyncio
import threading
import uuid

import paho.mqtt.client as paho
import pytest

from bench.lean_publisher import LeanPublisher
from gateway.broker import EmbeddedBroker

BURST = 2000
TOPIC = "sqal/v1/ESP32_BURST_LL_01/sample"


def subscriber(host: str, port: int, got: set[bytes], done: threading.Event) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()

    def on_message(cl: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        got.add(bytes(m.payload))
        if len(got) >= BURST:
            done.set()

    c.on_message = on_message
    c.connect(host, port)
    c.loop_start()
    c.subscribe(TOPIC, 1)
    assert subscribed.wait(10), "subscription not acknowledged"
    return c


def burst_then_leave(host: str, port: int, leave: str) -> None:
    """A device flushing its spool: BURST QoS 1 messages, every PUBACK awaited, then gone at once."""
    p = LeanPublisher(host, port, f"ESP32_BURST_LL_01-{uuid.uuid4().hex[:4]}", inflight=1000)
    for i in range(BURST):
        p.publish(TOPIC.encode(), b"%d" % i)
    p.wait_acked(60)
    p.close() if leave == "disconnect" else p.abort()


@pytest.mark.parametrize("leave", ["disconnect", "link drop"])
async def test_every_acknowledged_message_is_delivered_after_its_publisher_leaves(leave: str) -> None:
    broker = EmbeddedBroker(0)
    await broker.start()
    got: set[bytes] = set()
    done = threading.Event()
    try:
        sub = await asyncio.to_thread(subscriber, broker.host, broker.port, got, done)
        await asyncio.to_thread(burst_then_leave, broker.host, broker.port, leave)
        # every message was PUBACKed: the broker owns them all
        await asyncio.to_thread(done.wait, 60)
        missing = sorted(set(range(BURST)) - {int(x) for x in got})
        assert not missing, f"{len(missing)} acknowledged messages never delivered, from {missing[0]}"
        sub.disconnect()
        sub.loop_stop()
    finally:
        await broker.stop()
