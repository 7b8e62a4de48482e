"""/api/ota on a real gateway (`sqal serve`: real PostgreSQL, NATS engine with its MQTT listener) with
emulated boards on the ESP32 profile (PSRAM) that update over the air through it:

- a release is registered only with the API token and only if its signature verifies with the
  gateway's public key (one signed by another key is refused, with the reason);
- a rollout chosen by site reaches exactly that site's devices, wave by wave, each device's state
  and progress in the API, every step in the rollout's history and in each device's own;
- a gateway SIGKILLed in the middle of a device's download: the next gateway resumes the rollout
  from where the boards stand (the download goes on, nothing is started twice) and completes it;
- the rollback command returns the devices to their previous release;
- `sqal rollout register / show / rollback` do the same against the gateway (the CLI's errors name
  the gateway's reason);
- the state-changing routes refuse a request without the token.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from emulation.device import EmulatedDevice
from gateway.ota import release as rel
from tests.fixtures.gateway import SQAL_BIN, GatewayProcess
from tests.fixtures.mqtt import NatsBroker

TOKEN = "ota-test-token"
DEVICE_CONFIG = {"tof_frequency_hz": 30, "keepalive_s": 5, "watchdog_s": 20}


def _call(gw: GatewayProcess, method: str, path: str, body: dict[str, Any] | None = None,
          token: str | None = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{gw.port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _cli(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """`sqal rollout ARGS --url <the gateway>`, with the API token from the environment."""
    return subprocess.run([str(SQAL_BIN), "rollout", *args, "--url", f"http://127.0.0.1:{gw.port}"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, SQAL_API_TOKEN=TOKEN, COLUMNS="200"))


def _wait(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_release_rollout_by_site_events_and_rollback(database_url: str, nats_broker: NatsBroker,
                                                      tmp_path: Path, esp32_micropython: str) -> None:
    key_file = tmp_path / "keys" / "release.pem"
    pub = rel.keygen(key_file)
    releases = tmp_path / "releases"
    rel.build("0.2.0", rel.load_private(key_file), releases)
    rel.build("0.3.0", Ed25519PrivateKey.generate(), releases)  # not ours
    gw = GatewayProcess(database_url, tmp_path / "gw", env={
        "SQAL_NATS_URL": nats_broker.nats_url, "SQAL_MQTT_URL": nats_broker.url, "SQAL_API_TOKEN": TOKEN,
        "SQAL_OTA_PUBLIC_KEY": pub, "SQAL_OTA_RELEASES_DIR": str(releases), "SQAL_DISPATCH_ENABLED": "false"})
    ids = ["ESP32_LL_01", "ESP32_LL_02", "ESP32_LS_01"]
    devs = []
    for did in ids:
        d = EmulatedDevice(did, tmp_path / did, nats_broker.url, interval=0.5, telemetry_interval=1, resolution=4,
                           config=DEVICE_CONFIG, target="esp32-psram")
        d.prepare()
        d.put_flash("ota_key.pub", pub.encode())
        devs.append(d)
    gw.start()
    try:
        for d in devs:
            d.start()
        _wait(lambda: all((_call(gw, "GET", f"/api/devices/{did}")[1].get("firmware") == "0.1.0") for did in ids),
              90, "the devices at the gateway")

        # releases: the token, and the signature
        assert _call(gw, "POST", "/api/ota/releases", {"version": "0.2.0"}, token=None)[0] == 401
        code, body = _call(gw, "POST", "/api/ota/releases", {"version": "0.3.0"})
        assert code == 422 and "signature does not verify" in json.dumps(body["detail"]), body
        bad = _cli(gw, "register", "0.3.0")
        assert bad.returncode == 1 and "signature does not verify" in bad.stderr, bad
        reg = _cli(gw, "register", "0.2.0")
        assert reg.returncode == 0 and "release 0.2.0 registered" in reg.stdout, reg
        code, body = _call(gw, "POST", "/api/ota/releases", {"version": "0.2.0"})  # the same again: the same
        assert code == 201 and body["version"] == "0.2.0" and body["files"] == len(body["manifest"]["files"])
        assert [r["version"] for r in _call(gw, "GET", "/api/ota/releases")[1]["releases"]] == ["0.2.0"]

        # a rollout to site LL in two waves
        assert _call(gw, "POST", "/api/ota/rollouts", {"version": "0.2.0", "site": "LL"}, token=None)[0] == 401
        code, r = _call(gw, "POST", "/api/ota/rollouts", {"version": "0.2.0", "site": "LL", "waves": ["1", "100%"],
                                                          "max_failures": 0.5, "probation_s": 60})
        assert code == 201, r
        rid = r["id"]
        assert [d["device_id"] for d in r["devices"]] == ["ESP32_LL_01", "ESP32_LL_02"]
        assert r["waves"] == [1, 2]

        def first_downloading() -> bool:
            got = _call(gw, "GET", f"/api/ota/rollouts/{rid}")[1]
            return bool(got["devices"][0]["state"] == "downloading")

        # the gateway dies in the middle of the first device's download, and comes back
        _wait(first_downloading, 60, "the first device downloading")
        time.sleep(2)
        gw.kill()
        gw.start()

        def done() -> dict[str, Any] | None:
            got = _call(gw, "GET", f"/api/ota/rollouts/{rid}")[1]
            return got if got["state"] not in ("created", "running") else None

        r = _wait(done, 180, "the rollout to end")
        assert r["state"] == "completed", r
        assert r["counts"] == {"confirmed": 2}
        # the first device's update was taken up again (a second attempt), the second ran once
        assert [(d["wave"], d["state"], d["progress"], d["attempts"]) for d in r["devices"]] == \
            [(1, "confirmed", 100, 2), (2, "confirmed", 100, 1)]
        events = _call(gw, "GET", f"/api/ota/rollouts/{rid}/events")[1]["events"]
        kinds = [(e["device_id"], e["kind"]) for e in events]
        assert kinds[0] == (None, "rollout_started") and kinds[-1] == (None, "rollout_completed")
        assert kinds.count((None, "rollout_resumed")) == 1
        resumed = kinds.index((None, "rollout_resumed"))
        assert kinds.index(("ESP32_LL_01", "device_downloading")) < resumed
        last_wave = max(i for i, k in enumerate(kinds) if k == (None, "wave_started"))
        assert resumed < kinds.index(("ESP32_LL_01", "device_confirmed")) < last_wave
        for did in ("ESP32_LL_01", "ESP32_LL_02"):
            mine = [e["kind"] for e in _call(gw, "GET", f"/api/devices/{did}/ota/events")[1]["events"]]
            assert mine[0] == "device_downloading" and mine[-1] == "device_confirmed" and "device_pending" in mine
        assert _call(gw, "GET", "/api/devices/ESP32_LS_01/ota/events")[1]["events"] == []
        _wait(lambda: all(_call(gw, "GET", f"/api/devices/{did}")[1].get("firmware") == "0.2.0"
                          for did in ("ESP32_LL_01", "ESP32_LL_02")), 30, "the new version at the gateway")
        assert _call(gw, "GET", "/api/devices/ESP32_LS_01")[1]["firmware"] == "0.1.0"
        shown = _cli(gw, "show", str(rid))
        assert shown.returncode == 0 and f"rollout {rid}: release 0.2.0, completed" in shown.stdout, shown
        rows = [[c.strip() for c in ln.strip("│ ").split("│")] for ln in shown.stdout.splitlines() if "ESP32_LL_0" in ln]
        assert [r[:5] for r in rows] == [["ESP32_LL_01", "1", "confirmed", "100 %", "2"],
                                         ["ESP32_LL_02", "2", "confirmed", "100 %", "1"]], shown.stdout
        tel = _call(gw, "GET", "/api/devices/ESP32_LL_01")[1]["telemetry"]
        assert tel["ota"]["state"] == "confirmed" and tel["reset"] == "update"

        # a second rollout of the same release finds nobody left to update at that site
        code, body = _call(gw, "POST", "/api/ota/rollouts", {"version": "0.2.0", "site": "LL"})
        assert code == 422 and "no device matches" in json.dumps(body["detail"]), body

        # rollback
        assert _call(gw, "POST", f"/api/ota/rollouts/{rid}/rollback", token=None)[0] == 401
        back = _cli(gw, "rollback", str(rid))  # follows the rollout until it ends
        assert back.returncode == 0 and f"rollout {rid}: release 0.2.0, rolled_back" in back.stdout, back
        r = _call(gw, "GET", f"/api/ota/rollouts/{rid}")[1]
        assert r["state"] == "rolled_back" and r["counts"] == {"rolled_back": 2}, r
        _wait(lambda: all(_call(gw, "GET", f"/api/devices/{did}")[1].get("firmware") == "0.1.0"
                          for did in ("ESP32_LL_01", "ESP32_LL_02")), 60, "the previous version back")
    finally:
        for d in devs:
            d.stop()
        gw.stop()
