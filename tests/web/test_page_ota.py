"""The Updates tab of the browser control panel (gateway/web/view_ota.js) on a real gateway with a
real board (ESP32 profile with PSRAM) on its embedded engine: a release registered from the page,
a rollout started from the page's form, the device's state and progress shown until it is
confirmed, the history listed, and the rollback button returning it to its previous release.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from emulation.device import EmulatedDevice
from gateway.ota import release as rel
from tests.web.conftest import ARTIFACTS, ConsoleLog, WebGateway


@pytest.fixture
def ota_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A release key and release 0.2.0 in a releases directory, in the gateway's environment (set
    before web_gateway starts it)."""
    pub = rel.keygen(tmp_path / "keys" / "release.pem")
    releases = tmp_path / "releases"
    rel.build("0.2.0", rel.load_private(tmp_path / "keys" / "release.pem"), releases)
    monkeypatch.setenv("SQAL_OTA_PUBLIC_KEY", pub)
    monkeypatch.setenv("SQAL_OTA_RELEASES_DIR", str(releases))
    return {"pub": pub}


def _get(gw: WebGateway, path: str) -> Any:
    with urllib.request.urlopen(gw.base + path, timeout=10) as r:
        return json.loads(r.read())


def test_updates_tab_rolls_out_and_back(ota_env: dict[str, Any], web_gateway: WebGateway, chromium: Any,
                                        tmp_path: Path, esp32_micropython: str) -> None:
    gw = web_gateway
    broker = _get(gw, "/api/ingest/status")["broker_url"]
    dev = EmulatedDevice("ESP32_LL_07", tmp_path / "dev", broker, interval=0.5, telemetry_interval=1, resolution=4,
                         config={"tof_frequency_hz": 30, "keepalive_s": 5, "watchdog_s": 20}, target="esp32-psram")
    dev.prepare()
    dev.put_flash("ota_key.pub", ota_env["pub"].encode())
    dev.start()
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    console = ConsoleLog()
    console.attach(page)
    page.set_default_timeout(20000)
    expect.set_options(timeout=15000)
    try:
        deadline = time.monotonic() + 90
        while _get(gw, "/api/devices?limit=10")["count"] == 0 or \
                _get(gw, "/api/devices/ESP32_LL_07").get("firmware") != "0.1.0":
            assert time.monotonic() < deadline, dev.log()[-2000:]
            time.sleep(0.5)
        page.goto(gw.base + "/ui/#/updates")
        expect(page.locator("a[data-tab=updates]")).to_have_attribute("aria-current", "page")
        page.fill("#token-input", gw.token)
        page.click("#token-form button[type=submit]")

        page.fill("#form-release [name=version]", "0.2.0")
        page.click("#ota-register")
        expect(page.locator("#ota-releases tbody tr[data-version='0.2.0']")).to_be_visible()
        expect(page.locator("#form-rollout [name=version]")).to_have_value("0.2.0")
        page.fill("#form-rollout [name=site]", "LL")
        page.fill("#form-rollout [name=probation_s]", "60")
        page.click("#ota-start")
        row = page.locator("#ota-devices tbody tr[data-device=ESP32_LL_07]")
        expect(row).to_be_visible()
        expect(row).to_have_attribute("data-state", "confirmed", timeout=120000)
        expect(row.locator("progress")).to_have_attribute("value", "100")
        expect(page.locator("#ota-detail-state [data-state]")).to_have_attribute("data-state", "completed")
        expect(page.locator("#ota-events")).to_contain_text("device confirmed")
        page.screenshot(path=str(ARTIFACTS / "updates-desktop.png"), full_page=True)

        page.click("#ota-rollback")
        expect(row).to_have_attribute("data-state", "rolled_back", timeout=60000)
        expect(row).to_contain_text("rollback requested by the operator")
        deadline = time.monotonic() + 60
        while _get(gw, "/api/devices/ESP32_LL_07").get("firmware") != "0.1.0":
            assert time.monotonic() < deadline, dev.log()[-2000:]
            time.sleep(0.5)
        assert console.errors() == [], console.errors()
    finally:
        context.close()
        dev.stop()
