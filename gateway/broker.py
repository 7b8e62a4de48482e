"""Embedded MQTT broker (amqtt, in-process) for when SQAL_MQTT_URL is unset, so `./sqal demo` needs
nothing installed. It listens on loopback only; the gateway's ingest then connects to it like to
any other broker (same code path as Mosquitto or EMQX).

Why a custom auth plugin: amqtt queues QoS 1 messages for an offline persistent session only when
the session is NOT anonymous (amqtt marks every session anonymous under AnonymousAuthPlugin). With
that plugin, readings published while the gateway restarts would be dropped by the broker. The
loopback listener accepts every client, as a named (non-anonymous) session.

Limits (amqtt 0.12): sessions and queued messages live in memory only (a gateway process that
dies loses the broker's queue with it: use Mosquitto with persistence for that guarantee), and
`$share/` shared subscriptions are not supported (one replica only: use an external broker to scale).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)


class LoopbackAuthPlugin(BaseAuthPlugin):
    """Accept every client of the loopback listener as a named session (see module docstring)."""

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool | None:
        session.is_anonymous = False
        return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, port: int = 1883, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or _free_port(host)
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 10000}},
            "plugins": {f"{__name__}.LoopbackAuthPlugin": {}},
        }
        self._broker = Broker(config)
        await self._broker.start()
        log.info("embedded MQTT broker (amqtt) on %s", self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()
