"""The real firmware through an authenticating embedded engine (nats-server + the auth callout) into the
database: a board provisioned with `CredentialStore.provision` (as `sqal board provision` does), and
emulated devices started by the gateway's supervisor, which each get their own login (never the
gateway's) through their environment (never argv) and cannot take over a provisioned board's id."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI

from emulation.device import EmulatedDevice
from gateway.api.control_common import context_for, device_broker_url
from gateway.app import create_app
from gateway.boards.provision import CredentialStore
from gateway.config import Settings
from gateway.supervisor import catalogue
from gateway.supervisor.catalogue import DEVICE_PASSWORD_ENV, DeviceParams

BASE = "/api/control-panel"


def test_device_broker_url_drops_the_gateways_login() -> None:
    assert device_broker_url("mqtt://_sqal_gateway:pw@10.0.0.5:1883") == ("mqtt://10.0.0.5:1883", True)
    assert device_broker_url("mqtts://u@[::1]:8883") == ("mqtts://[::1]:8883", True)
    assert device_broker_url("mqtt://127.0.0.1:1883") == ("mqtt://127.0.0.1:1883", False)
    assert device_broker_url(None) == (None, False)


def test_external_broker_with_a_login_gives_devices_their_own(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, mqtt_url="mqtt://_sqal_gateway:gw-secret@127.0.0.1:1883",
                        ingest_enabled=False)
    ctx = context_for(SimpleNamespace(settings=settings, api_url="http://127.0.0.1:8000"))
    assert ctx.broker_url == "mqtt://127.0.0.1:1883" and ctx.device_credentials == tmp_path / "mqtt"
    spec = catalogue.sqal_device(DeviceParams("ESP32_SIM_01"), ctx)
    password = spec.env[DEVICE_PASSWORD_ENV]
    assert "gw-secret" not in " ".join(spec.argv) and password not in " ".join(spec.argv)
    users = json.loads((tmp_path / "mqtt" / "users.json").read_text())
    assert users["devices"]["ESP32_SIM_01"]["simulated"] is True
    # each start issues a new password; the old one stops working
    again = catalogue.sqal_device(DeviceParams("ESP32_SIM_01"), ctx).env[DEVICE_PASSWORD_ENV]
    assert again != password


def test_no_login_when_the_broker_does_not_authenticate(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, mqtt_url="mqtt://127.0.0.1:1883", ingest_enabled=False)
    ctx = context_for(SimpleNamespace(settings=settings, api_url="http://127.0.0.1:8000"))
    assert ctx.device_credentials is None
    assert DEVICE_PASSWORD_ENV not in catalogue.sqal_device(DeviceParams("ESP32_SIM_01"), ctx).env
    assert not (tmp_path / "mqtt" / "users.json").exists()


def test_a_simulator_cannot_use_a_provisioned_boards_id(tmp_path: Path) -> None:
    CredentialStore(tmp_path / "mqtt").provision("ESP32_LL_01")
    settings = Settings(data_dir=tmp_path, mqtt_url="mqtt://gw:pw@127.0.0.1:1883", ingest_enabled=False)
    ctx = context_for(SimpleNamespace(settings=settings, api_url="http://127.0.0.1:8000"))
    with pytest.raises(ValueError, match="ESP32_LL_01 is a provisioned board"):
        catalogue.sqal_device(DeviceParams("ESP32_LL_01"), ctx)
    users = json.loads((tmp_path / "mqtt" / "users.json").read_text())
    assert "simulated" not in users["devices"]["ESP32_LL_01"]  # the board's login is untouched


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0, mqtt_auth=True,
                        ingest_flush_ms=10)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        application.state.supervisor.stop_timeout = 10
        yield application


async def stored_samples(app: FastAPI, device: str, want: int, timeout: float = 90) -> int:
    pool = app.state.pool
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline and stored < want:
        stored = await pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", device)
        await asyncio.sleep(0.5)
    return int(stored)


def callout_state(tmp_path: Path) -> dict[str, Any]:
    return dict(json.loads((tmp_path / "nats" / "auth-callout.state.json").read_text()))


async def test_provisioned_firmware_stores_samples_through_the_authenticating_engine(app: FastAPI,
                                                                                     tmp_path: Path) -> None:
    """The unix64 firmware with the broker URL `sqal board provision` prints: its samples reach the
    database; the same firmware with a wrong password stores nothing and says why."""
    engine = app.state.ingest.engine
    assert engine is not None and engine.callout_pid is not None  # device authentication is on
    store = CredentialStore(tmp_path / "mqtt")
    good = store.provision("ESP32_PROV_01", "127.0.0.1", engine.mqtt_bound)
    store.provision("ESP32_PROV_02")
    host_port = good.broker_url.rsplit("@", 1)[1]
    devices = [EmulatedDevice("ESP32_PROV_01", tmp_path / "dev1", good.broker_url, interval=0.5, target="unix64"),
               EmulatedDevice("ESP32_PROV_02", tmp_path / "dev2", f"mqtt://ESP32_PROV_02:wrong@{host_port}",
                              interval=0.5, target="unix64")]
    try:
        for d in devices:
            d.start()
        stored = await stored_samples(app, "ESP32_PROV_01", 2)
        assert stored >= 2, "no sample stored through the authenticating engine:\n" + devices[0].log()[-3000:]
        # the firmware keeps a refused login in its last_error (no serial log line): the callout's log says it
        callout_log = tmp_path / "nats" / "auth-callout.log"
        deadline = time.monotonic() + 30
        while "wrong password for device ESP32_PROV_02" not in callout_log.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert "wrong password for device ESP32_PROV_02" in callout_log.read_text(), devices[1].log()[-3000:]
        assert await stored_samples(app, "ESP32_PROV_02", 1, timeout=1) == 0
        await asyncio.sleep(1)  # the state file is written at most every 0.5 s
        state = callout_state(tmp_path)
        assert state["accepted"] >= 1 and state["refused"].get("wrong_password", 0) >= 1, state
    finally:
        for d in devices:
            await asyncio.to_thread(d.stop)


async def test_simulated_device_reaches_an_authenticating_embedded_broker(app: FastAPI, tmp_path: Path) -> None:
    device = "ESP32_SIMAUTH_01"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as client:
        r = await client.post(f"{BASE}/simulators/start", json={"device_id": device, "interval": 0.5})
        assert r.status_code == 200, r.text
        info = r.json()
        cmdline = " ".join(psutil.Process(info["pid"]).cmdline())
        users = json.loads((tmp_path / "mqtt" / "users.json").read_text())
        assert users["devices"][device]["simulated"] is True
        assert "@" not in cmdline  # no login in argv
        stored = await stored_samples(app, device, 2)
        logs: Any = (await client.get(f"{BASE}/simulators/logs/{device}", params={"tail": 40})).json()
        assert stored >= 2, "no sample stored through the authenticating engine:\n" + "\n".join(logs["lines"])
        assert not any("gw" in line and "password" in line for line in logs["lines"])
        assert f"device {device} authorized" in (tmp_path / "nats" / "auth-callout.log").read_text()
        flash = tmp_path / "devices" / device
        assert flash.stat().st_mode & 0o077 == 0  # the flash holds the login: private
        r = await client.post(f"{BASE}/simulators/stop", json={"device_id": device})
        assert r.json()["status"] == "stopped"
