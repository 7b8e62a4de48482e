"""Emulated devices with `transport: "websocket"`: the real firmware on the real MicroPython, talking
to the real gateway (`sqal serve`, uvicorn + ingest pipeline) and its PostgreSQL. What counts is
what the database holds: every sample exactly once, none lost across a gateway crash."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulation.device import EmulatedDevice
from tests.fixtures.gateway import GatewayProcess, stored_keys

DeviceFactory = Callable[..., EmulatedDevice]


# The WebSocket handshake's Sec-WebSocket-Accept is a SHA-1, which an ESP32 image has (mbedtls) and
# the ESP32 profile has not (its MicroPython source has no mbedtls, hashlib has sha256 only): these
# tests run on the 64-bit wheel.
pytestmark = pytest.mark.parametrize("device_target", ["unix64"], indirect=True)


@pytest.fixture
def make_ws_device(tmp_path: Path, gateway: GatewayProcess,
                   device_target: str) -> Iterator[DeviceFactory]:
    made: list[EmulatedDevice] = []

    def make(interval: float = 0.2, ws_url: str | None = None) -> EmulatedDevice:
        did = f"ESP32_W_{uuid.uuid4().hex[:8].upper()}"
        cfg = {"watchdog_s": 20, "telemetry_interval_s": 1, "keepalive_s": 5, "transport": "websocket",
               "ws_url": ws_url or gateway.ws_base}
        # broker_url is written by EmulatedDevice and ignored by a WebSocket device: nothing listens there
        d = EmulatedDevice(did, tmp_path / did, "mqtt://127.0.0.1:9", profile="default", seed=5,
                           interval=interval, config=cfg, target=device_target)
        made.append(d)
        d.start()
        return d

    yield make
    for d in made:
        d.kill()


async def wait_keys(database_url: str, dev: EmulatedDevice, pred: Callable[[list[tuple[int, int]]], bool],
                    timeout: float) -> list[tuple[int, int]]:
    end = time.monotonic() + timeout
    keys = await stored_keys(database_url, dev.device_id)
    while not pred(keys) and time.monotonic() < end:
        await asyncio.sleep(0.2)
        keys = await stored_keys(database_url, dev.device_id)
    return keys


def _contiguous(keys: list[tuple[int, int]]) -> bool:
    return keys == [(1, i) for i in range(len(keys))]


async def test_samples_stored_exactly_once(make_ws_device: DeviceFactory, database_url: str) -> None:
    dev = make_ws_device()
    keys = await wait_keys(database_url, dev, lambda k: len(k) >= 8, 40)
    assert len(keys) >= 8, dev.log()
    assert _contiguous(keys), keys  # boot 1, seq 0..n-1: none missing, none twice
    assert dev.wait_for_log("sqal: online (broker 127.0.0.1:", 5), dev.log()
    assert "rejected" not in dev.log() and dev.exits == []


async def test_gateway_crash_mid_stream_loses_nothing(make_ws_device: DeviceFactory, gateway: GatewayProcess,
                                                      database_url: str) -> None:
    dev = make_ws_device()
    keys = await wait_keys(database_url, dev, lambda k: len(k) >= 3, 40)
    assert len(keys) >= 3, dev.log()
    gateway.kill()  # SIGKILL: a sample in flight may be committed without its ack reaching the device
    stored_at_crash = len(await stored_keys(database_url, dev.device_id))
    await asyncio.sleep(3)  # the device keeps sampling into its spool (~15 samples)
    assert len(await stored_keys(database_url, dev.device_id)) == stored_at_crash
    gateway.start()
    keys = await wait_keys(database_url, dev, lambda k: len(k) >= stored_at_crash + 15, 40)
    assert len(keys) >= stored_at_crash + 15, dev.log() + gateway.log()
    assert _contiguous(keys), keys  # replayed oldest first, nothing lost, no row twice
    assert dev.exits == [] and dev.starts == 1  # a gateway outage is not a reason to reset


async def test_hello_for_another_device_keeps_the_spool(make_ws_device: DeviceFactory, gateway: GatewayProcess,
                                                        database_url: str) -> None:
    """A ws_url naming another device id: the gateway refuses the hello, so nothing is sent and
    nothing is dropped; fixed config (the path corrected) and a reboot deliver the backlog."""
    dev = make_ws_device(ws_url=gateway.ws_base + "ESP32_SOMEONE_ELSE")
    assert dev.wait_for_log("boot 1", 15), dev.log()
    await asyncio.sleep(2)
    assert await stored_keys(database_url, dev.device_id) == []
    assert await stored_keys(database_url, "ESP32_SOMEONE_ELSE") == []
    dev.update_config(ws_url=gateway.ws_base)
    dev.reset()
    keys = await wait_keys(database_url, dev, lambda k: len([s for b, s in k if b == 1]) >= 5
                           and any(b == 2 for b, _s in k), 40)
    boot1 = [s for b, s in keys if b == 1]
    assert boot1 == list(range(len(boot1))) and len(boot1) >= 5, dev.log()  # sampled while refused
