"""/api/ingest/status is a read-only route (open unless SQAL_READ_AUTH): what it says about the
message engine (external or embedded, its servers, connected, subscribed, the last error, what the
source holds, what the engine handed out again), and that no URL it shows carries a password."""

from __future__ import annotations

import asyncio
import logging
import socket

import asyncpg
import pytest
from sqalfw import codec
from sqalfw.urls import hide_password as redact

from gateway.ingest.service import IngestService, IngestSettings
from gateway.nats.streams import StreamLimits
from tests.fixtures.mqtt import NatsBroker
from tests.gateway.ingest_support import Publisher, count, sample_bytes, uid, wait_until

KEYS = {"broker_url", "engine", "nats_servers", "connected", "subscribed", "last_error", "in_hand", "redelivered",
        "queue_depth", "committed_batches", "realtime_subscribers"}


async def test_the_status_shows_the_engine_urls_without_their_passwords(db_pool: asyncpg.Pool) -> None:
    svc = IngestService(db_pool, IngestSettings(
        nats_url="tls://gw:n4ts%40pw@nats-1.example:4222, tls://gw:n4ts%40pw@nats-2.example:4222",
        mqtt_url="mqtts://gateway:s3cr%40t@broker.example:8883", workers=0))
    status = svc.status()  # before the start: nothing connected yet
    assert set(status) == KEYS
    assert status["broker_url"] == "mqtts://gateway:***@broker.example:8883"
    assert status["nats_servers"] == ["tls://gw:***@nats-1.example:4222", "tls://gw:***@nats-2.example:4222"]
    assert status["engine"] == "external"
    assert "s3cr" not in str(status) and "n4ts" not in str(status)
    assert (status["connected"], status["subscribed"], status["last_error"]) == (False, False, None)
    assert (status["in_hand"], status["redelivered"], status["queue_depth"]) == (0, 0, 0)


def test_redact_leaves_urls_without_a_password_alone() -> None:
    assert redact("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"
    assert redact("mqtt://user@host:1883") == "mqtt://user@host:1883"
    assert redact("mqtt://u:p@host") == "mqtt://u:***@host"
    assert redact("nats://u:p@host:4222") == "nats://u:***@host:4222"


async def test_the_status_follows_the_engine_going_away_and_coming_back(db_pool: asyncpg.Pool, nats_broker: NatsBroker,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url, workers=0,
                                                limits=StreamLimits(ack_wait_s=2)))
    await svc.start()
    try:
        st = svc.status()
        assert (st["engine"], st["nats_servers"], st["broker_url"]) == ("external", [nats_broker.nats_url],
                                                                        nats_broker.url)
        assert st["connected"] and st["subscribed"] and st["last_error"] is None
        dev = uid()
        pub = Publisher(nats_broker.host, nats_broker.port)
        for seq in range(20):
            pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=seq))
        await asyncio.to_thread(pub.wait_all)
        pub.close()

        async def stored() -> bool:
            return await count(db_pool, dev) == 20 and svc.status()["in_hand"] == 0

        assert await wait_until(stored)
        st = svc.status()
        assert st["committed_batches"] >= 1 and st["queue_depth"] == 0 and st["redelivered"] == 0

        # The engine goes away: the status says so and why; it comes back: connected again, cleared.
        await asyncio.to_thread(nats_broker.stop)

        async def dropped() -> bool:
            s = svc.status()
            return not s["connected"] and s["last_error"] is not None

        assert await wait_until(dropped, timeout=20)
        # something that accepts and hangs up takes the engine's port: every reconnect fails the
        # same way, and that cause is logged once, not once per attempt
        with caplog.at_level(logging.WARNING, logger="gateway.ingest.nats_source"), socket.socket() as fake:
            fake.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            fake.bind(("127.0.0.1", nats_broker.nats_port))
            fake.listen()
            fake.settimeout(20)
            for _ in range(4):
                conn, _addr = await asyncio.to_thread(fake.accept)
                conn.close()

            async def cause_known() -> str | None:
                return svc.status()["last_error"]

            cause = await wait_until(cause_known)
            assert cause and not svc.status()["connected"]
            assert sum(cause in r.getMessage() for r in caplog.records) == 1, [r.getMessage() for r in caplog.records]
        await asyncio.to_thread(nats_broker.start)

        async def back() -> bool:
            s = svc.status()
            return bool(s["connected"] and s["subscribed"] and s["last_error"] is None)

        assert await wait_until(back, timeout=30)
        # and it reads again after the reconnect
        pub = Publisher(nats_broker.host, nats_broker.port)
        pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=20))
        await asyncio.to_thread(pub.wait_all)
        pub.close()

        async def one_more() -> bool:
            return await count(db_pool, dev) == 21

        assert await wait_until(one_more, timeout=30)
    finally:
        await svc.stop()
