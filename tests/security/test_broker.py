"""Device authentication on MQTT: the embedded amqtt broker with the CredentialStore, and Mosquitto
with the files the store generates. A device may only publish/subscribe under its own id; the
gateway has its own login; and the gateway itself refuses a payload whose id differs from its topic."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from gateway.boards.provision import GATEWAY_USER, CredentialStore
from gateway.broker import EmbeddedBroker
from gateway.ingest.envelope import Envelope
from gateway.ingest.prepare import prepare
from tests.gateway.ingest_support import sample_bytes

DEV_A, DEV_B = "ESP32_SEC_A1", "ESP32_SEC_B1"


class Client:
    """A paho client that records the CONNACK code, SUBACK codes and received messages."""

    def __init__(self, host: str, port: int, user: str | None, password: str | None,
                 client_id: str | None = None, will: tuple[str, bytes] | None = None) -> None:
        self.rc: int | None = None
        self.granted: list[int] = []
        self.messages: list[tuple[str, bytes]] = []
        self._ev = threading.Event()
        self._sub = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}")
        if user is not None:
            self.c.username_pw_set(user, password)
        if will is not None:
            self.c.will_set(will[0], will[1], qos=1, retain=True)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        self._ev.wait(10)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.rc = rc.value if hasattr(rc, "value") else int(rc)
        if self.rc != 0:
            c.disconnect()  # paho would otherwise retry a refused login
        self._ev.set()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: Any, props: Any = None) -> None:
        self.granted = [r.value for r in rcs]
        self._sub.set()

    def subscribe(self, topic: str) -> list[int]:
        self._sub.clear()
        self.c.subscribe(topic, 1)
        assert self._sub.wait(10)
        return self.granted

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_until(pred: Callable[[], bool], timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture
def store(tmp_path: Path) -> tuple[CredentialStore, dict[str, str]]:
    s = CredentialStore(tmp_path / "mqtt")
    return s, {d: s.provision(d).password for d in (DEV_A, DEV_B)}


def _refusals(host: str, port: int, pw: dict[str, str], gw_pw: str) -> None:
    """The login rules, the same for both brokers."""
    assert Client(host, port, DEV_A, pw[DEV_A], client_id=DEV_A).rc == 0
    assert Client(host, port, DEV_A, "wrong", client_id=DEV_A).rc not in (None, 0)
    assert Client(host, port, DEV_A, pw[DEV_B], client_id=DEV_A).rc not in (None, 0)  # another device's password
    assert Client(host, port, None, None).rc not in (None, 0)  # anonymous
    assert Client(host, port, "ESP32_NOBODY", "x", client_id="ESP32_NOBODY").rc not in (None, 0)
    assert Client(host, port, GATEWAY_USER, "wrong").rc not in (None, 0)
    assert Client(host, port, GATEWAY_USER, gw_pw).rc == 0


def _spoofing_is_not_delivered(host: str, port: int, pw: dict[str, str], gw_pw: str) -> list[int]:
    """Returns the SUBACK codes device A got for B's topics (amqtt refuses them; Mosquitto grants them
    and then delivers nothing: both checked by delivery here)."""
    gw = Client(host, port, GATEWAY_USER, gw_pw, client_id="sqal-gateway-test")
    assert gw.subscribe("sqal/v1/+/sample") == [1]
    b = Client(host, port, DEV_B, pw[DEV_B], client_id=DEV_B)
    b_cmds = b.subscribe(f"sqal/v1/{DEV_B}/cmd")
    assert b_cmds == [1]
    a = Client(host, port, DEV_A, pw[DEV_A], client_id=DEV_A)
    grants = a.subscribe(f"sqal/v1/{DEV_B}/cmd") + a.subscribe("sqal/v1/#")  # B's commands, everything
    a.publish(f"sqal/v1/{DEV_B}/sample", sample_bytes(DEV_B, seq=1))  # spoof: B's id
    a.publish(f"sqal/v1/{DEV_B}/cmd", b'{"op":"reboot"}')  # a device may not command another
    a.publish(f"sqal/v1/{DEV_A}/sample", sample_bytes(DEV_A, seq=2))  # its own: delivered
    assert wait_until(lambda: any(t == f"sqal/v1/{DEV_A}/sample" for t, _ in gw.messages))
    time.sleep(0.3)  # a spoofed message would have arrived before the later legitimate one; margin anyway
    assert [t for t, _ in gw.messages] == [f"sqal/v1/{DEV_A}/sample"]
    assert b.messages == []
    gw.publish(f"sqal/v1/{DEV_B}/cmd", b'{"op":"ping"}')  # the gateway may command a device
    assert wait_until(lambda: b.messages == [(f"sqal/v1/{DEV_B}/cmd", b'{"op":"ping"}')])
    time.sleep(0.2)
    # neither B's command nor anything else outside its own subtree (its own echo is fine)
    assert all(t.startswith(f"sqal/v1/{DEV_A}/") for t, _ in a.messages), a.messages
    for c in (gw, a, b):
        c.close()
    return grants


async def test_embedded_broker_enforces_device_credentials_and_acl(store: Any) -> None:
    s, pw = store
    broker = EmbeddedBroker(0, credentials_dir=s.dir)
    await broker.start()
    try:
        assert broker.gateway_credentials is not None
        gw_user, gw_pw = broker.gateway_credentials
        assert gw_user == GATEWAY_USER and "@" not in broker.url and gw_pw not in broker.url
        import asyncio

        await asyncio.to_thread(_refusals, broker.host, broker.port, pw, gw_pw)
        grants = await asyncio.to_thread(_spoofing_is_not_delivered, broker.host, broker.port, pw, gw_pw)
        assert grants == [0x80, 0x80]  # amqtt refuses the subscriptions outright

        def amqtt_only() -> None:
            # client id must be the device id: no taking over another device's persistent session
            assert Client(broker.host, broker.port, DEV_A, pw[DEV_A], client_id=DEV_B).rc not in (None, 0)
            # a last will under another device's topics (amqtt sends wills without an ACL check)
            spoof = Client(broker.host, broker.port, DEV_A, pw[DEV_A], client_id=DEV_A,
                           will=(f"sqal/v1/{DEV_B}/status", b"offline"))
            assert spoof.rc not in (None, 0)
            # revocation applies to the next connection, no restart
            s.revoke(DEV_B)
            assert Client(broker.host, broker.port, DEV_B, pw[DEV_B], client_id=DEV_B).rc not in (None, 0)

        await asyncio.to_thread(amqtt_only)
    finally:
        await broker.stop()


def test_mosquitto_with_generated_files_refuses_spoofing(store: Any, mosquitto_factory: Any) -> None:
    s, pw = store
    paths = s.write_broker_files()
    _, gw_pw = s.gateway_credentials()
    broker = mosquitto_factory(allow_anonymous=False,
                               extra_config=[f"password_file {paths['passwd']}", f"acl_file {paths['acl']}"])
    _refusals(broker.host, broker.port, pw, gw_pw)
    _spoofing_is_not_delivered(broker.host, broker.port, pw, gw_pw)


def test_gateway_refuses_a_payload_under_another_devices_topic() -> None:
    env = Envelope("mqtt", f"sqal/v1/{DEV_A}/sample", sample_bytes(DEV_B, seq=3), datetime.now(timezone.utc))
    p = prepare(env)
    assert p.kind == "reject" and p.reject is not None
    assert p.reject.reason == f"device_id: payload says '{DEV_B}' but topic says '{DEV_A}'"
    assert p.reject.reason_key == "device_id"
