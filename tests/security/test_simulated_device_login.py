"""Emulated devices started by the gateway's supervisor when the broker authenticates devices: each
gets its own login (never the gateway's), through its environment (never argv), and cannot take over
a provisioned board's id. End to end: embedded amqtt with auth on, the real firmware, a stored sample."""

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
        pool = app.state.pool
        deadline = time.monotonic() + 90
        stored = 0
        while time.monotonic() < deadline and stored < 2:
            stored = await pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", device)
            await asyncio.sleep(0.5)
        logs: Any = (await client.get(f"{BASE}/simulators/logs/{device}", params={"tail": 40})).json()
        assert stored >= 2, "no sample stored through the authenticating broker:\n" + "\n".join(logs["lines"])
        assert not any("gw" in line and "password" in line for line in logs["lines"])
        flash = tmp_path / "devices" / device
        assert flash.stat().st_mode & 0o077 == 0  # the flash holds the login: private
        r = await client.post(f"{BASE}/simulators/stop", json={"device_id": device})
        assert r.json()["status"] == "stopped"
