"""The embedded message engine with device authentication (nats-server + the auth callout child), and
paho MQTT clients playing the devices, for the security and provisioning tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import paho.mqtt.client as paho
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from gateway.boards.provision import CredentialStore
from gateway.nats import streams
from gateway.nats.auth_callout import STATE_WRITE_S
from gateway.nats.embedded import EmbeddedNats

# MQTT 3.1.1 CONNACK 5 "not authorized", as paho 2 reports it (its MQTT 5 reason code)
NOT_AUTHORIZED = 0x87


def wait_until(pred: Callable[[], bool], timeout: float = 10) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


class Device:
    """A paho MQTT 3.1.1 client that records its CONNACK code, SUBACK codes, messages and disconnects.
    A refused login is not retried (paho would otherwise reconnect forever)."""

    def __init__(self, port: int, user: str | None, password: str | None, client_id: str | None = None, *,
                 clean_session: bool = True, will: tuple[str, bytes] | None = None, host: str = "127.0.0.1") -> None:
        self.rc: int | None = None
        self.session_present: bool | None = None
        self.granted: list[int] = []
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        self._connack = threading.Event()
        self._suback = threading.Event()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                             clean_session=clean_session, protocol=paho.MQTTv311)
        if user is not None:
            self.c.username_pw_set(user, password)
        if will is not None:
            self.c.will_set(will[0], will[1], qos=1, retain=False)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.on_disconnect = self._on_disconnect
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        self._connack.wait(15)

    @property
    def accepted(self) -> bool:
        return self.rc == 0

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self.rc = rc.value
        self.session_present = bool(getattr(flags, "session_present", False))
        if self.rc != 0:
            c.disconnect()
        self._connack.set()

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: Any, props: Any = None) -> None:
        self.granted = [r.value for r in rcs]
        self._suback.set()

    def _on_message(self, c: Any, u: Any, m: Any) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload)))

    def _on_disconnect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if self.rc == 0:
            self.disconnects += 1

    def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        self._suback.clear()
        self.c.subscribe(topic, qos)
        assert self._suback.wait(10), f"no SUBACK for {topic}"
        return self.granted

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)
        assert info.is_published(), f"publish on {topic} not acknowledged"

    def got(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _p in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class AuthEngine:
    """EmbeddedNats with the auth callout in `data_dir`, its CredentialStore, the gateway's NATS
    connection (streams created as the gateway creates them) and the MQTT port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.store = CredentialStore(data_dir / "mqtt")
        self.engine = EmbeddedNats(data_dir, mqtt_port=0, auth_callout={"credentials_dir": str(self.store.dir)})
        self.nc: NatsClient | None = None
        self.devices: list[Device] = []

    async def start(self) -> None:
        await self.engine.start()
        user, password = self.engine.gateway_credentials()
        self.nc = await nats.connect(self.engine.url, user=user, password=password)
        await streams.ensure(self.nc.jetstream(), streams.StreamLimits())

    def close_devices(self) -> None:
        for d in self.devices:
            d.close()
        self.devices.clear()

    async def stop(self) -> None:
        self.close_devices()
        if self.nc is not None:
            await self.nc.close()
        await self.engine.stop()

    @property
    def port(self) -> int:
        assert self.engine.mqtt_bound is not None
        return self.engine.mqtt_bound

    @property
    def js(self) -> JetStreamContext:
        assert self.nc is not None
        return self.nc.jetstream()

    def device(self, user: str | None, password: str | None, client_id: str | None = None, **kw: Any) -> Device:
        d = Device(self.port, user, password, client_id, **kw)
        self.devices.append(d)
        return d

    def gateway_mqtt(self, client_id: str | None = None) -> Device:
        """The gateway's own MQTT login (the dispatcher's): any client id."""
        user, password = self.engine.gateway_credentials()
        return self.device(user, password, client_id or f"sqal-dispatch-{uuid.uuid4().hex[:8]}")

    async def stored(self, subject: str) -> bytes | None:
        """The last message the streams hold on `subject`, or None."""
        name, stored_as = ((streams.TELEMETRY, subject) if subject.endswith(".telemetry")
                           else (streams.SAMPLES, streams.MQTT_PREFIX + subject))
        try:
            msg = await self.js.get_last_msg(name, stored_as)
        except NotFoundError:
            return None
        return msg.data

    def callout_state(self, settled: bool = False) -> dict[str, Any]:
        """The callout's state file; `settled`: once everything it decided so far is in it (it is written
        at most every STATE_WRITE_S)."""
        if settled:
            time.sleep(STATE_WRITE_S * 2)
        return dict(json.loads(self.engine.callout_state_path.read_text()))

    def refused(self, reason: str) -> int:
        return int(self.callout_state().get("refused", {}).get(reason, 0))
