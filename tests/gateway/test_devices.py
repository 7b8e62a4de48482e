"""Devices fed by status (birth / last will) and telemetry through the message engine (a real
nats-server: MQTT listener -> JetStream); /api/devices."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqalfw import codec

from gateway.app import create_app
from gateway.config import Settings
from registry.devices import site_of
from tests.fixtures.mqtt import NatsBroker
from tests.gateway.ingest_support import Publisher, metric, sample_bytes, uid, wait_until


@pytest.fixture
async def app(database_url: str, nats_broker: NatsBroker, tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, nats_url=nats_broker.nats_url,
                              mqtt_url=nats_broker.url, ingest_flush_ms=10))
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as c:
        yield c


@pytest.mark.parametrize("device_id, site", [("ESP32_LL_01", "LL"), ("ESP32_DEMO_LL_01", "LL"),
                                             ("ESP32_QF_BS_01", "BS"), ("ESP32_DOCKER_PX_02", "PX"),
                                             ("ESP32_STRESS_01", None), ("ESP32_MT_01", "MT"),
                                             ("ABC", None)])
def test_site_from_device_id(device_id: str, site: str | None) -> None:
    assert site_of(device_id) == site


def status(dev: str, state: str, boot: int, ts: int, **extra: object) -> bytes:
    return bytes(codec.encode_status({"v": 1, "device_id": dev, "state": state, "boot": boot, "fw": "0.1.0",
                                      "ts": ts, **extra}))


def telemetry(dev: str, boot: int, rssi: int | None = -60) -> bytes:
    return bytes(codec.encode_telemetry({
        "v": 1, "device_id": dev, "boot": boot, "ts": 1736850000000, "synced": True, "uptime_s": 12,
        "mem_free": 50000, "mem_min_free": 40000, "spool_depth": 3, "fw": "0.1.0", "rssi": rssi,
        "counters": {"sampled": 5, "sent": 5, "acked": 4, "retransmitted": 1, "reconnects": 0, "i2c_errors": 0,
                     "dropped": 0}}))


async def test_status_telemetry_and_api(app: FastAPI, client: httpx.AsyncClient,
                                        nats_broker: NatsBroker) -> None:
    dev = uid("ESP32_DEMO_MT")
    pub = Publisher(nats_broker.host, nats_broker.port)
    pub.publish(codec.topic(dev, "status"), status(dev, "online", 7, 1000, location="Ligne A"), retain=True)
    pub.publish(codec.topic(dev, "telemetry"), telemetry(dev, 7))
    pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, boot=7, seq=0))
    await asyncio.to_thread(pub.wait_all)

    async def seen() -> dict | None:
        r = await client.get(f"/api/devices/{dev}")
        d = r.json() if r.status_code == 200 else None
        return d if d and d["telemetry"] and d["samples_stored"] == 1 else None

    d = await wait_until(seen)
    assert d, (await client.get(f"/api/devices/{dev}")).text
    assert (d["state"], d["site_code"], d["location"], d["firmware"], d["boot"]) == ("online", "MT", "Ligne A",
                                                                                      "0.1.0", 7)
    assert d["telemetry"]["counters"]["retransmitted"] == 1 and d["telemetry"]["rssi"] == -60

    # A stale last will from boot 6 arrives late: ignored. The real one of boot 7 marks it offline.
    pub.publish(codec.topic(dev, "status"), status(dev, "offline", 6, 500))
    await asyncio.to_thread(pub.wait_all)
    svc = app.state.ingest
    await wait_until(lambda: _stale(svc))
    assert (await client.get(f"/api/devices/{dev}")).json()["state"] == "online"
    pub.publish(codec.topic(dev, "status"), status(dev, "offline", 7, 1000), retain=True)
    await asyncio.to_thread(pub.wait_all)

    async def offline() -> bool:
        return (await client.get(f"/api/devices/{dev}")).json()["state"] == "offline"

    assert await wait_until(offline)
    listed = (await client.get("/api/devices", params={"site": "MT"})).json()
    assert dev in [x["id"] for x in listed["devices"]]
    assert all(x["site_code"] == "MT" for x in listed["devices"])
    assert (await client.get("/api/devices", params={"state": "online"})).json()["count"] == 0
    samples = (await client.get(f"/api/devices/{dev}/samples")).json()
    assert [s["seq"] for s in samples["samples"]] == [0]
    pub.close()


async def _stale(svc: object) -> bool:
    return metric(svc.metrics, "sqal_ingest_device_updates_total", kind="status") >= 2  # type: ignore[attr-defined]


async def test_unknown_device_404_and_bad_id_422(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/devices/ESP32_NOPE_01")
    assert r.status_code == 404 and r.json()["detail"] == "device ESP32_NOPE_01 not found"
    assert (await client.get("/api/devices/bad%20id!")).status_code == 422


async def test_bad_status_is_rejected_with_reason(app: FastAPI, client: httpx.AsyncClient,
                                                 nats_broker: NatsBroker) -> None:
    dev = uid()
    pub = Publisher(nats_broker.host, nats_broker.port)
    pub.publish(codec.topic(dev, "status"), b'{"v":1,"device_id":"%s","state":"sleeping","boot":1,"fw":"x"}'
                % dev.encode())
    await asyncio.to_thread(pub.wait_all)

    async def rejected() -> dict | None:
        r = (await client.get("/api/ingest/rejects", params={"device_id": dev})).json()
        return r if r["rejects"] else None

    r = await wait_until(rejected)
    assert r and r["rejects"][0]["reason"].startswith("state: ") and "sleeping" in r["rejects"][0]["reason"]
    assert r["rejects"][0]["payload_text"].startswith('{"v":1')
    assert (await client.get(f"/api/devices/{dev}")).status_code == 404  # a reject creates no device
    pub.close()
