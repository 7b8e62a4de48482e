"""gateway/broker.py: the embedded broker delivers every QoS 1 message it has acknowledged, even when
the publisher leaves before the broker has routed them (amqtt 0.12 acknowledges a PUBLISH when it
reads it and routes it later, one at a time; it dropped what was still waiting when the client
disconnected or its link dropped)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bench.lean_publisher import LeanPublisher
from gateway.broker import EmbeddedBroker
from tests.security.test_broker import Client, wait_until

BURST = 2000
TOPIC = "sqal/v1/ESP32_BURST_LL_01/sample"


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
    try:
        sub = await asyncio.to_thread(Client, broker.host, broker.port, None, None)
        assert await asyncio.to_thread(sub.subscribe, TOPIC) == [1]
        await asyncio.to_thread(burst_then_leave, broker.host, broker.port, leave)
        # every message was PUBACKed: the broker owns them all

        def got() -> set[int]:
            return {int(payload) for _, payload in list(sub.messages)}

        await asyncio.to_thread(wait_until, lambda: len(got()) >= BURST, 60)
        missing = sorted(set(range(BURST)) - got())
        assert not missing, f"{len(missing)} acknowledged messages never delivered, from {missing[0]}"
        await asyncio.to_thread(sub.close)
    finally:
        await broker.stop()
