"""TLS between the gateway and the message engine (tls://, a real nats-server whose client port
requires TLS, with a private CA made in the test): readings stored through an encrypted connection
(the engine's own connection list says so), the engine going away and coming back, a client
certificate for an engine that verifies clients, an engine certificate the gateway does not trust
refused at start with a clear error, and TLS settings that cannot work refused with their name.
The boards keep publishing over the engine's plain MQTT listener, as on loopback; the dispatcher's
MQTT client (mqtts://, SQAL_MQTT_CA_FILE...) is checked against a Mosquitto TLS listener."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as paho
import pytest
from sqalfw import codec

from gateway.config import Settings
from gateway.dispatch import Dispatcher
from gateway.ingest.nats_source import NatsConfig, NatsTlsError, tls_context
from gateway.ingest.service import IngestService, IngestSettings
from gateway.mqtt_url import MqttTlsError, apply_tls
from gateway.mqtt_url import tls_context as mqtt_tls_context
from tests.fixtures.mqtt import MosquittoBroker, NatsBroker, free_port
from tests.fixtures.tls import PrivateCa, make_private_ca
from tests.gateway.ingest_support import Publisher, count, sample_bytes, uid, wait_until


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCa:
    return make_private_ca(tmp_path / "pki")


class TlsEngine(NatsBroker):
    """A test engine whose NATS client port requires TLS (the CA's server certificate; with
    `verify`, a client certificate signed by the CA too), its connections listed on a monitoring port."""

    def __init__(self, workdir: Path, ca: PrivateCa, verify: bool) -> None:
        self.monitor_port = free_port()
        tls = (f'tls {{ cert_file: "{ca.server_cert}", key_file: "{ca.server_key}", ca_file: "{ca.ca}", '
               f"verify: {'true' if verify else 'false'}, timeout: 5 }}")
        super().__init__(workdir, extra_config=[tls, f'http: "127.0.0.1:{self.monitor_port}"'])

    @property
    def tls_url(self) -> str:
        return f"tls://127.0.0.1:{self.nats_port}"

    def connections(self) -> list[dict[str, Any]]:
        r = httpx.get(f"http://127.0.0.1:{self.monitor_port}/connz", timeout=5)
        return r.json().get("connections") or []  # type: ignore[no-any-return]


@pytest.fixture
def tls_engine(tmp_path: Path, private_ca: PrivateCa) -> Iterator[Callable[[bool], TlsEngine]]:
    started: list[TlsEngine] = []

    def make(verify: bool = False) -> TlsEngine:
        e = TlsEngine(tmp_path / f"nats-tls{len(started)}", private_ca, verify)
        started.append(e)
        e.start()
        return e

    yield make
    for e in started:
        e.stop()


def publish(engine: NatsBroker, dev: str, seqs: range) -> None:
    pub = Publisher(engine.host, engine.port)
    for seq in seqs:
        pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=seq))
    pub.wait_all()
    pub.close()


async def test_readings_arrive_over_tls_with_a_private_ca(db_pool: asyncpg.Pool, private_ca: PrivateCa,
                                                          tls_engine: Callable[[bool], TlsEngine]) -> None:
    engine = tls_engine(False)
    svc = IngestService(db_pool, IngestSettings(nats_url=engine.tls_url, mqtt_url=engine.url, workers=0,
                                                nats_ca_file=str(private_ca.ca)))
    await asyncio.wait_for(svc.start(), 60)
    try:
        assert svc.status()["subscribed"] and svc.status()["nats_servers"] == [engine.tls_url]
        dev = uid()
        await asyncio.to_thread(publish, engine, dev, range(300))

        async def all_stored() -> bool:
            return await count(db_pool, dev) == 300

        assert await wait_until(all_stored)
        # the engine's view of the gateway's connection: encrypted
        gw = [c for c in await asyncio.to_thread(engine.connections) if c.get("name") == "sqal-gateway"]
        assert len(gw) == 1 and gw[0].get("tls_version"), gw
        assert svc.status()["last_error"] is None
        # the engine goes away: the status says so and why; it comes back: TLS again, cleared
        await asyncio.to_thread(engine.stop)

        async def dropped() -> bool:
            st = svc.status()
            return not st["connected"] and st["last_error"] is not None

        assert await wait_until(dropped, timeout=20)
        await asyncio.to_thread(engine.start)

        async def back() -> bool:
            st = svc.status()
            return bool(st["connected"] and st["subscribed"] and st["last_error"] is None)

        assert await wait_until(back, timeout=30)
        await asyncio.to_thread(publish, engine, dev, range(300, 301))

        async def one_more() -> bool:
            return await count(db_pool, dev) == 301

        assert await wait_until(one_more, timeout=30)
        gw = [c for c in await asyncio.to_thread(engine.connections) if c.get("name") == "sqal-gateway"]
        assert len(gw) == 1 and gw[0].get("tls_version"), gw
    finally:
        await svc.stop()


@pytest.mark.parametrize("ca", ["system CAs", "another CA"])
async def test_an_engine_certificate_not_trusted_is_refused_at_start_with_a_clear_error(
        db_pool: asyncpg.Pool, tmp_path: Path, tls_engine: Callable[[bool], TlsEngine], ca: str) -> None:
    engine = tls_engine(False)
    ca_file = None if ca == "system CAs" else str(make_private_ca(tmp_path / "other").ca)
    svc = IngestService(db_pool, IngestSettings(nats_url=engine.tls_url, mqtt_url=engine.url, workers=0,
                                                nats_ca_file=ca_file))
    try:
        # refused, not retried forever: a start that never ends would leave the gateway silent
        with pytest.raises(NatsTlsError) as err:
            await asyncio.wait_for(svc.start(), 60)
        assert "CERTIFICATE_VERIFY_FAILED" in str(err.value) and "SQAL_NATS_CA_FILE" in str(err.value)
        assert engine.tls_url in str(err.value)
        assert not svc.status()["connected"]
    finally:
        await svc.stop()
    assert not [c for c in await asyncio.to_thread(engine.connections) if c.get("name") == "sqal-gateway"]


async def test_a_client_certificate_is_presented_when_the_engine_requires_one(
        db_pool: asyncpg.Pool, private_ca: PrivateCa, tls_engine: Callable[[bool], TlsEngine]) -> None:
    engine = tls_engine(True)
    # without one: refused at start, the error says which settings give one
    bare = IngestService(db_pool, IngestSettings(nats_url=engine.tls_url, mqtt_url=engine.url, workers=0,
                                                 nats_ca_file=str(private_ca.ca)))
    try:
        with pytest.raises(NatsTlsError, match="SQAL_NATS_CERT_FILE"):
            await asyncio.wait_for(bare.start(), 60)
    finally:
        await bare.stop()
    svc = IngestService(db_pool, IngestSettings(
        nats_url=engine.tls_url, mqtt_url=engine.url, workers=0, nats_ca_file=str(private_ca.ca),
        nats_cert_file=str(private_ca.client_cert), nats_key_file=str(private_ca.client_key)))
    await asyncio.wait_for(svc.start(), 60)
    try:
        dev = uid()
        await asyncio.to_thread(publish, engine, dev, range(1))

        async def one() -> bool:
            return await count(db_pool, dev) == 1

        assert await wait_until(one)
    finally:
        await svc.stop()


def test_engine_tls_settings_that_cannot_work_are_refused_with_their_name(tmp_path: Path,
                                                                         private_ca: PrivateCa) -> None:
    def cfg(ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None) -> NatsConfig:
        return NatsConfig(["tls://nats.example:4222"], ca_file=ca_file, cert_file=cert_file, key_file=key_file)

    with pytest.raises(NatsTlsError, match=r"SQAL_NATS_CA_FILE.*nope\.pem|nope\.pem.*SQAL_NATS_CA_FILE"):
        tls_context(cfg(ca_file=str(tmp_path / "nope.pem")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(NatsTlsError, match="SQAL_NATS_CA_FILE"):
        tls_context(cfg(ca_file=str(garbage)))
    with pytest.raises(NatsTlsError, match="SQAL_NATS_CERT_FILE"):  # the key of another certificate
        tls_context(cfg(ca_file=str(private_ca.ca), cert_file=str(private_ca.client_cert),
                        key_file=str(private_ca.server_key)))
    with pytest.raises(NatsTlsError, match="without SQAL_NATS_CERT_FILE"):
        tls_context(cfg(key_file=str(private_ca.client_key)))
    ok = tls_context(cfg(ca_file=str(private_ca.ca), cert_file=str(private_ca.client_cert),
                         key_file=str(private_ca.client_key)))
    assert ok is not None and [c["subject"] for c in ok.get_ca_certs()] == [((("commonName", "SQAL test CA"),),)]
    assert tls_context(NatsConfig(["nats://127.0.0.1:4222"])) is None  # plain: no TLS asked for


def test_mqtt_tls_settings_that_cannot_work_are_refused_with_their_name(tmp_path: Path,
                                                                       private_ca: PrivateCa) -> None:
    """The dispatcher's MQTT client (SQAL_MQTT_CA_FILE...)."""
    with pytest.raises(MqttTlsError, match=r"SQAL_MQTT_CA_FILE.*nope\.pem|nope\.pem.*SQAL_MQTT_CA_FILE"):
        mqtt_tls_context(str(tmp_path / "nope.pem"))
    with pytest.raises(MqttTlsError, match="SQAL_MQTT_CERT_FILE"):
        mqtt_tls_context(str(private_ca.ca), str(private_ca.client_cert), str(private_ca.server_key))
    with pytest.raises(MqttTlsError, match="without SQAL_MQTT_CERT_FILE"):
        mqtt_tls_context(None, None, str(private_ca.client_key))
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    # TLS files with a plain URL: the connection would go unencrypted -- refused, the password not shown
    with pytest.raises(MqttTlsError, match=r"mqtt://gw:\*\*\*@broker:1883.*not mqtts") as err:
        apply_tls(client, "mqtt://gw:s3cret@broker:1883", False, str(private_ca.ca), None, None)
    assert "s3cret" not in str(err.value)


async def test_the_dispatcher_connects_over_mqtts_with_its_ca(db_pool: asyncpg.Pool, private_ca: PrivateCa,
                                                              mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    tls_port = free_port()
    mosquitto_factory(extra_config=[f"listener {tls_port} 127.0.0.1", f"cafile {private_ca.ca}",
                                    f"certfile {private_ca.server_cert}", f"keyfile {private_ca.server_key}",
                                    "require_certificate false"])
    d = Dispatcher(db_pool, f"mqtts://127.0.0.1:{tls_port}", Settings(dispatch_poll_s=5),
                   ca_file=str(private_ca.ca))
    await d.start()
    try:
        async def connected() -> bool:
            return bool(d.client.is_connected())

        assert await wait_until(connected, timeout=20)  # only a TLS listener there, with the private CA's certificate
    finally:
        await d.stop()
