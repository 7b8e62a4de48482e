"""The ingest over TLS (mqtts://) against a real Mosquitto with TLS listeners and a private CA:
readings stored through an encrypted connection (the buffered reads and the QoS 1 fast path read
TLS records), a broker certificate the gateway does not trust refused and named, a client
certificate, and TLS settings that cannot work refused at start."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as paho
import pytest
from sqalfw import codec

from gateway.dispatch import Dispatcher
from gateway.ingest.mqtt_source import MqttTlsError, apply_tls, tls_context
from gateway.ingest.service import IngestService, IngestSettings
from tests.fixtures.mqtt import MosquittoBroker, free_port
from tests.fixtures.tls import PrivateCa, make_private_ca
from tests.gateway.ingest_support import Publisher, count, sample_bytes, uid, wait_until


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCa:
    return make_private_ca(tmp_path / "pki")


def tls_broker(factory: Callable[..., MosquittoBroker], ca: PrivateCa) -> tuple[MosquittoBroker, int, int]:
    """Mosquitto with its plain listener (for the test's publisher), a TLS listener, and a TLS
    listener that requires a client certificate signed by the CA. -> (broker, tls port, mTLS port)."""
    tls_port, mtls_port = free_port(), free_port()
    files = [f"cafile {ca.ca}", f"certfile {ca.server_cert}", f"keyfile {ca.server_key}"]
    broker = factory(extra_config=[f"listener {tls_port} 127.0.0.1", *files, "require_certificate false",
                                   f"listener {mtls_port} 127.0.0.1", *files, "require_certificate true"])
    return broker, tls_port, mtls_port


async def test_readings_arrive_over_tls_with_a_private_ca(db_pool: asyncpg.Pool, private_ca: PrivateCa,
                                                          mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker, tls_port, _ = tls_broker(mosquitto_factory, private_ca)
    svc = IngestService(db_pool, IngestSettings(mqtt_url=f"mqtts://127.0.0.1:{tls_port}", mqtt_client_id=uid("tls"),
                                                workers=0, mqtt_ca_file=str(private_ca.ca)))
    await svc.start(wait_subscribed_s=10)
    try:
        assert svc.mqtt is not None and svc.mqtt.subscribed.is_set()
        dev = uid()
        pub = Publisher(broker.host, broker.port)
        for seq in range(300):  # about 180 KB: many TLS records of up to 16 KB each
            pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=seq))
        await asyncio.to_thread(pub.wait_all)
        pub.close()

        async def all_stored() -> bool:
            return await count(db_pool, dev) == 300

        assert await wait_until(all_stored)
        assert svc.mqtt.client.fast_publishes > 0  # the QoS 1 fast path read them from TLS records
        assert isinstance(svc.mqtt.client.socket(), ssl.SSLSocket)
        assert svc.status()["mqtt_last_error"] is None
        # the broker goes away: the status says why; it comes back: reconnected over TLS, cleared
        broker.stop()

        async def dropped() -> bool:  # "disconnected: ...", then the refused reconnects
            st = svc.status()
            return not st["mqtt_connected"] and st["mqtt_last_error"] is not None

        assert await wait_until(dropped, timeout=10)
        broker.start()

        async def back() -> bool:
            return bool(svc.status()["mqtt_subscribed"]) and svc.status()["mqtt_last_error"] is None \
                and svc.status()["mqtt_connected"]

        assert await wait_until(back, timeout=20)
    finally:
        await svc.stop()


async def test_an_untrusted_broker_certificate_is_refused_and_named(
        db_pool: asyncpg.Pool, private_ca: PrivateCa, mosquitto_factory: Callable[..., MosquittoBroker],
        caplog: pytest.LogCaptureFixture) -> None:
    _, tls_port, _ = tls_broker(mosquitto_factory, private_ca)
    # no SQAL_MQTT_CA_FILE: the system's CAs do not know the private CA
    svc = IngestService(db_pool, IngestSettings(mqtt_url=f"mqtts://127.0.0.1:{tls_port}", mqtt_client_id=uid("tls"),
                                                workers=0))
    with caplog.at_level(logging.WARNING, logger="gateway.ingest.mqtt_source"):
        await svc.start(wait_subscribed_s=0)
        try:
            async def named() -> bool:
                return "CERTIFICATE_VERIFY_FAILED" in (svc.status()["mqtt_last_error"] or "")

            assert await wait_until(named, timeout=15)
            assert "SQAL_MQTT_CA_FILE" in svc.status()["mqtt_last_error"]
            assert not svc.status()["mqtt_connected"]
            await asyncio.sleep(2.5)  # paho retries (1 s, then 2 s): the cause is logged once, not per retry
            lines = [r.getMessage() for r in caplog.records if "CERTIFICATE_VERIFY_FAILED" in r.getMessage()]
            assert len(lines) == 1, lines
        finally:
            await svc.stop()


async def test_a_client_certificate_is_presented_when_the_broker_requires_one(
        db_pool: asyncpg.Pool, private_ca: PrivateCa, mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    broker, _, mtls_port = tls_broker(mosquitto_factory, private_ca)
    svc = IngestService(db_pool, IngestSettings(
        mqtt_url=f"mqtts://127.0.0.1:{mtls_port}", mqtt_client_id=uid("mtls"), workers=0,
        mqtt_ca_file=str(private_ca.ca), mqtt_cert_file=str(private_ca.client_cert),
        mqtt_key_file=str(private_ca.client_key)))
    await svc.start(wait_subscribed_s=10)
    try:
        assert svc.mqtt is not None and svc.mqtt.subscribed.is_set()
        dev = uid()
        pub = Publisher(broker.host, broker.port)
        pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=1))
        await asyncio.to_thread(pub.wait_all)
        pub.close()

        async def one() -> bool:
            return await count(db_pool, dev) == 1

        assert await wait_until(one)
    finally:
        await svc.stop()


def test_tls_settings_that_cannot_work_are_refused_with_their_name(tmp_path: Path, private_ca: PrivateCa) -> None:
    with pytest.raises(MqttTlsError, match=r"SQAL_MQTT_CA_FILE.*nope\.pem|nope\.pem.*SQAL_MQTT_CA_FILE"):
        tls_context(str(tmp_path / "nope.pem"))
    with pytest.raises(MqttTlsError, match="SQAL_MQTT_CERT_FILE"):
        tls_context(str(private_ca.ca), str(private_ca.client_cert), str(private_ca.server_key))  # key of another cert
    with pytest.raises(MqttTlsError, match="without SQAL_MQTT_CERT_FILE"):
        tls_context(None, None, str(private_ca.client_key))
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    # TLS files with a plain URL: the connection would go unencrypted -- refused, the password not shown
    with pytest.raises(MqttTlsError, match=r"mqtt://gw:\*\*\*@broker:1883.*not mqtts") as err:
        apply_tls(client, "mqtt://gw:s3cret@broker:1883", False, str(private_ca.ca), None, None)
    assert "s3cret" not in str(err.value)


def test_the_dispatcher_uses_the_same_tls_settings(private_ca: PrivateCa) -> None:
    d: Any = Dispatcher(None, "mqtts://127.0.0.1:8883", ca_file=str(private_ca.ca))  # type: ignore[arg-type]
    ctx = d.client._ssl_context
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    names = [c.get("subject") for c in ctx.get_ca_certs()]
    assert ((("commonName", "SQAL test CA"),),) in names
