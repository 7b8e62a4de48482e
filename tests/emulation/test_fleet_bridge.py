"""A site that already runs Mosquitto for its boards bridges their topics into the engine
(docs/scale-out.md, "Boards on a site's own broker"): the boards' readings, status, telemetry and
command results go out to the engine's MQTT listener, the commands come back in, all at QoS 1 with
a persistent bridge session. Checked with a real Mosquitto bridge, the real firmware on a fleet
connected to Mosquitto, and the gateway with its embedded engine: every reading stored once, none
missing, through a restart of the bridge's broker; a command published on the engine's side
reaches a board on Mosquitto.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from sqalfw import codec

from emulation.fleet import Fleet
from tests.fixtures.gateway import GatewayProcess, stored_keys
from tests.fixtures.mqtt import MosquittoBroker, MqttCollector

N = 4


def bridge_config(engine_host: str, engine_port: int) -> list[str]:
    """The lines docs/scale-out.md gives, for a bridge to the engine at host:port."""
    return [
        "connection sqal-engine",
        f"address {engine_host}:{engine_port}",
        "remote_clientid sqal-bridge-site1",
        "cleansession false",
        "bridge_protocol_version mqttv311",
        "try_private false",
        "restart_timeout 1 5",
        "topic sqal/v1/+/sample out 1",
        "topic sqal/v1/+/status out 1",
        "topic sqal/v1/+/telemetry out 0",
        "topic sqal/v1/+/cmd/result out 1",
        "topic sqal/v1/+/cmd in 1",
    ]


async def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await pred():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def test_boards_on_a_site_mosquitto_reach_the_gateway_through_a_bridge(
        database_url: str, tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    gw = GatewayProcess(database_url, tmp_path / "gw")
    gw.start()
    fleet: Fleet | None = None
    try:
        host, port = gw.status()["broker_url"].removeprefix("mqtt://").rsplit(":", 1)
        site = mosquitto_factory(extra_config=bridge_config(host, int(port)))
        fleet = Fleet(N, site.url, interval=0.5, seed=41, base_dir=tmp_path / "fleet", id_prefix="ESP32_BR",
                      telemetry_interval=1, resolution=4, config={"keepalive_s": 5})
        fleet.start()

        async def stored() -> dict[str, list[tuple[int, int]]]:
            assert fleet is not None
            return {did: await stored_keys(database_url, did) for did in fleet.ids}

        async def each_has(n: int) -> bool:
            return all(len(k) >= n for k in (await stored()).values())

        await _wait(lambda: each_has(5), 90, "5 readings from every board, through the bridge")

        # a command published on the engine's side reaches the board on the site's broker
        target = fleet.ids[0]
        col = MqttCollector(site, [codec.topic(target, "cmd/result")])
        try:
            cmd = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="engine-side-cmd")
            cmd.connect(host, int(port))
            cmd.loop_start()
            cmd.publish(codec.topic(target, "cmd"), codec.encode_command("br1", "status"), qos=1).wait_for_publish(10)
            assert col.wait_for(lambda m: any(b'"br1"' in p for _t, p, _r in m), 30), "no command result on the site"
            cmd.loop_stop()
            cmd.disconnect()
        finally:
            col.close()

        site.restart()  # the site's broker restarts: boards and bridge reconnect, nothing is lost
        before = max(len(k) for k in (await stored()).values())
        await _wait(lambda: each_has(before + 5), 90, "5 more readings from every board after the restart")
        fleet.stop()

        async def caught_up() -> bool:
            assert fleet is not None
            got = await stored()
            for did, boots in fleet.reported().items():
                for boot, v in boots.items():
                    if v.sampled - v.spool > len([s for b, s in got[did] if b == boot]):
                        return False
            return True

        await _wait(caught_up, 60, "every acknowledged reading to be stored")
        final = await stored()
    finally:
        if fleet is not None:
            fleet.stop()
        gw.stop()
    for did, boots in fleet.reported().items():
        keys = final[did]
        assert len(keys) == len(set(keys))
        for boot, v in boots.items():
            seqs = sorted(s for b, s in keys if b == boot)
            assert seqs == list(range(len(seqs))) and len(seqs) >= v.sampled - v.spool, (did, boot, v, seqs[-5:])
