"""Embedded MQTT broker (amqtt, in-process) for when SQAL_MQTT_URL is unset, so `./sqal demo` needs
nothing installed. It listens on loopback only; the gateway's ingest then connects to it like to
any other broker (same code path as Mosquitto or EMQX).

Why a custom auth plugin: amqtt queues QoS 1 messages for an offline persistent session only when
the session is NOT anonymous (amqtt marks every session anonymous under AnonymousAuthPlugin). With
that plugin, readings published while the gateway restarts would be dropped by the broker. The
loopback listener accepts every client, as a named (non-anonymous) session.

Device authentication (SQAL_MQTT_AUTH, see gateway.auth.mqtt_auth_enabled): with a credentials
directory the broker loads `DeviceAuthPlugin` + `DeviceTopicPlugin` instead. They read the
CredentialStore's users.json (hashes written by `sqal board provision`) on every CONNECT, so a new,
rotated or revoked device applies to its next connection without a restart, and enforce the same
rules as the generated Mosquitto ACL: a device (user name = device id, and client id = device id,
so it cannot take over another device's persistent session) may publish and subscribe only under
sqal/v1/<its id>/, its last will included (amqtt publishes wills without a topic check); the
gateway's user `_sqal_gateway` may read sample/status/telemetry/cmd/result of every device and
publish only commands. Anything else is refused: no anonymous session, no unknown user.

Acknowledged means delivered (`DeliveringBroker`): amqtt 0.12 acknowledges a QoS 1 PUBLISH as soon as
it reads it and routes it later, one message at a time; when the publisher disconnected or its link
dropped, what was still waiting to be routed was dropped. A board flushing its spool lost the
readings it had already deleted. Measured: 2,000 messages published in a burst, each PUBACKed,
then a DISCONNECT, or a dropped link: 441 and 649 of them delivered (tests/gateway/test_broker.py).

Limits (amqtt 0.12): sessions and queued messages live in memory only (a gateway process that
dies loses the broker's queue with it: use Mosquitto with persistence for that guarantee), and
`$share/` shared subscriptions are not supported (one replica only: use an external broker to scale).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from sqalfw.codec import valid_device_id

from gateway.auth import DeviceCredentials
from gateway.boards.provision import GATEWAY_READS, GATEWAY_USER, CredentialStore

log = logging.getLogger(__name__)


class LoopbackAuthPlugin(BaseAuthPlugin):
    """Accept every client of the loopback listener as a named session (see module docstring)."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool | None:
        session.is_anonymous = False
        return True


class DeliveringBroker(Broker):
    """amqtt's broker, routing on a client's disconnect the messages it has acknowledged and not yet
    routed (see the module docstring).

    They wait in the session's `delivered_message_queue`, which the client's message loop reads one
    at a time and stops reading at the disconnect. They are taken here, all at once and before the
    first await (so the loop's own reader cannot take one meanwhile), and each goes through the loop's
    own delivery step (topic checks, ACL, broadcast, retain), before the disconnect itself is handled
    (and a will is sent). A message the loop had already taken in the same turn is routed by the loop
    just after: the only case where one message comes out of order."""

    async def _handle_disconnect(self, client_session: Session, handler: Any, disconnect_waiter: Any) -> None:
        queue = client_session.delivered_message_queue
        waiting = []
        while not queue.empty():
            waiting.append(queue.get_nowait())
        if waiting:
            log.debug("routing %d acknowledged message(s) of %s before its disconnect", len(waiting),
                      client_session.client_id)
        loop = asyncio.get_running_loop()
        for message in waiting:
            taken: asyncio.Future[Any] = loop.create_future()
            taken.set_result(message)
            if not await self._handle_message_delivery(client_session, handler, taken):
                break  # a message the loop would have closed the connection for (an invalid topic)
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)


def _own_subtree(device_id: str, levels: list[str]) -> bool:
    return len(levels) >= 4 and levels[:3] == ["sqal", "v1", device_id]


def topic_allowed(user: str | None, topic: str, action: Action) -> bool:
    """The ACL, as a pure function: `topic` is a topic name (publish, receive) or a filter (subscribe)."""
    if not user or not topic or len(topic) > 256:
        return False
    levels = topic.split("/")
    if user == GATEWAY_USER:
        if len(levels) < 4 or levels[:2] != ["sqal", "v1"]:
            return False
        device, kind = levels[2], "/".join(levels[3:])
        if action == Action.PUBLISH:  # commands to one named device
            return kind == "cmd" and valid_device_id(device)
        if kind not in GATEWAY_READS:
            return False
        return valid_device_id(device) or (action == Action.SUBSCRIBE and device == "+")
    if not valid_device_id(user):
        return False
    return _own_subtree(user, levels)


class DeviceAuthPlugin(BaseAuthPlugin):
    """Per-device credentials from the CredentialStore (see module docstring)."""

    @dataclass
    class Config:
        store_dir: str = ""

    async def authenticate(self, *, session: Session) -> bool | None:
        user, password = session.username, session.password or ""
        creds = DeviceCredentials(Path(self.config.store_dir))
        if not user:
            ok, why = False, "no user name (anonymous sessions are refused)"
        elif user == GATEWAY_USER:
            ok, why = creds.check_gateway(user, password), "wrong gateway password"
        elif not valid_device_id(user):
            ok, why = False, "user name is not a device id"
        elif not creds.check_device(user, password):
            ok, why = False, "unknown device or wrong password"
        elif session.client_id != user:
            ok, why = False, "client id must equal the device id"
        elif session.will_flag and not topic_allowed(user, session.will_topic or "", Action.PUBLISH):
            ok, why = False, "last-will topic outside the device's own topics"
        else:
            ok, why = True, ""
        if not ok:
            log.warning("MQTT login refused for user %r (client %r): %s", (user or "")[:64],
                        (session.client_id or "")[:64], why)
            return False
        session.is_anonymous = False  # named session: QoS 1 queued while offline (module docstring)
        return True


class DeviceTopicPlugin(BaseTopicPlugin):
    """Topic ACL (see `topic_allowed`)."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        user = session.username if session is not None else None
        ok = action is not None and topic_allowed(user, topic or "", action)
        if not ok and action != Action.RECEIVE:
            log.info("MQTT %s refused for user %r on %r", getattr(action, "value", action), (user or "")[:64],
                     (topic or "")[:256])
        return ok


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """`credentials_dir`: the CredentialStore directory (<data dir>/mqtt) -> device authentication on;
    None -> every client accepted (loopback use). `gateway_credentials` is then the gateway's login."""

    def __init__(self, port: int = 1883, host: str = "127.0.0.1", *, credentials_dir: Path | None = None) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.credentials_dir = credentials_dir
        self.gateway_credentials: tuple[str, str] | None = None
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        """Host and port only: never the gateway's password (this is shown in status and logs)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host == "::" else self.host
        return f"mqtt://{host}:{self.port}"

    def _plugins(self) -> dict[str, dict[str, str]]:
        if self.credentials_dir is None:
            return {f"{__name__}.LoopbackAuthPlugin": {}}
        self.gateway_credentials = CredentialStore(self.credentials_dir).gateway_credentials()
        return {f"{__name__}.DeviceAuthPlugin": {"store_dir": str(self.credentials_dir)},
                f"{__name__}.DeviceTopicPlugin": {}}

    async def start(self) -> None:
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        config = {
            "listeners": {"default": {"type": "tcp", "bind": bind, "max_connections": 10000}},
            "plugins": self._plugins(),
        }
        self._broker = DeliveringBroker(config)
        await self._broker.start()
        log.info("embedded MQTT broker (amqtt) on %s:%d, device authentication %s", self.host, self.port,
                 "on" if self.credentials_dir is not None else "off (loopback clients trusted)")

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
