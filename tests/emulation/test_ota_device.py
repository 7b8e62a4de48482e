"""Over-the-air updates of an emulated board on the ESP32 profile (with PSRAM: an application slot's
bytecode lives in the heap, docs/ota.md "Memory"), through a real broker, sent by the gateway's
uploader over the command topic:

- a good release: downloaded, switched, booted on probation, confirmed; telemetry says the reset
  was an update and the update is confirmed; the status says the new version; the log tail comes
  over the link; no sample lost or repeated across the update (per boot, seqs contiguous);
- a release that never reads its sensors: the health check is not passed in time, the board rolls
  back by itself and says why; telemetry says the reset was a rollback;
- a release that crashes at import: the probation boot fails, the next boot rolls back and says so;
- the operator's rollback command returns to the previous release;
- the release on a board without PSRAM (110 KB): the slot's bytecode does not fit, and the board
  rolls back by itself.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqalfw import codec

from emulation.device import EmulatedDevice
from gateway.ota import release as rel
from gateway.ota.uploader import Uploader
from tests.emulation.ota_support import BLIND, patched_release
from tests.fixtures.mqtt import MqttCollector

REPO = Path(__file__).resolve().parents[2]
DEVICE_CONFIG = {"tof_frequency_hz": 30, "keepalive_s": 5, "watchdog_s": 20}
@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ota-releases")
    key_file = root / "keys" / "release.pem"
    pub = rel.keygen(key_file)
    return {"pub": pub, "key": rel.load_private(key_file), "out": root / "out", "root": root}


def _device(tmp_path: Path, broker: Any, keyed: dict[str, Any], did: str, target: str = "esp32-psram",
            **kw: Any) -> EmulatedDevice:
    dev = EmulatedDevice(did, tmp_path / did, broker.url, interval=0.25, telemetry_interval=1, resolution=4,
                         config=DEVICE_CONFIG, target=target, **kw)
    dev.prepare()
    dev.put_flash("ota_key.pub", keyed["pub"].encode())
    return dev


def _telemetry(col: MqttCollector, did: str) -> list[dict[str, Any]]:
    out = []
    for t, p, _r in list(col.messages):
        if t == f"sqal/v1/{did}/telemetry":
            out.append(codec.decode_telemetry(p, did))
    return out


def _wait(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_good_release_is_confirmed_and_nothing_is_lost(mqtt_broker: Any, tmp_path: Path,
                                                       keyed: dict[str, Any]) -> None:
    good = rel.build("0.2.0", keyed["key"], keyed["out"]) if not (keyed["out"] / "0.2.0").exists() \
        else rel.load(keyed["out"] / "0.2.0")
    did = "OTA_GOOD_01"
    col = MqttCollector(mqtt_broker, [f"sqal/v1/{did}/#"], client_id=f"ota-{uuid.uuid4().hex[:8]}",
                        clean_session=False)
    dev = _device(tmp_path, mqtt_broker, keyed, did)
    try:
        dev.start()
        assert dev.wait_for_log("online (broker", 60), dev.log()
        _wait(lambda: len([1 for t, _p, _r in col.messages if t.endswith("/sample")]) >= 8, 30, "samples")
        with Uploader(mqtt_broker.url) as up:
            seen: list[str] = []
            p = up.update(did, good, probation_s=60, on_progress=lambda p: seen.append(p.state))
            assert p.state == "confirmed", f"{p}\n{dev.log()[-3000:]}"
            assert "downloading" in seen and seen[-1] == "confirmed"
            assert p.chunks >= good.size // 600
            tail = up.command(did, "log_tail", {"lines": 30})
            assert tail["ok"] and any("ota: version 0.2.0 confirmed (slot a)" in line for line in tail["data"]["lines"])
            status = up.command(did, "ota_status")["data"]
            assert status["state"] == "confirmed" and status["version"] == "0.2.0" and status["slot"] == "a"
        tel = _wait(lambda: [t for t in _telemetry(col, did) if t["fw"] == "0.2.0"], 20, "telemetry of 0.2.0")
        assert tel[-1]["reset"] == "update"
        assert tel[-1]["ota"]["state"] == "confirmed" and tel[-1]["ota"]["slot"] == "a"
        first = [t for t in _telemetry(col, did) if t["fw"] == "0.1.0"]
        assert first and first[0]["reset"] == "power-on"
        # the new release samples on: let it send some
        _wait(lambda: len([s for s in _samples(col, did) if s["fw"] == "0.2.0"]) >= 8, 30, "samples of 0.2.0")
    finally:
        dev.stop()
        col.close()
    samples = _samples(col, did)
    per_boot: dict[int, set[int]] = {}
    for s in samples:
        per_boot.setdefault(s["boot"], set()).add(s["seq"])
    assert sorted(per_boot) == [1, 2], per_boot.keys()
    for boot, seqs in per_boot.items():
        assert seqs == set(range(max(seqs) + 1)), f"boot {boot}: samples lost"
    assert {s["fw"] for s in samples if s["boot"] == 2} == {"0.2.0"}
    status = [json.loads(p) for t, p, _r in col.messages if t.endswith("/status")]
    assert any(s["fw"] == "0.2.0" and s["boot"] == 2 for s in status)


def _samples(col: MqttCollector, did: str) -> list[dict[str, Any]]:
    return [codec.decode_sample(p, did) for t, p, _r in list(col.messages) if t == f"sqal/v1/{did}/sample"]


@pytest.mark.slow
def test_a_release_failing_its_health_check_rolls_back_by_itself(mosquitto_broker: Any, tmp_path: Path,
                                                                 keyed: dict[str, Any]) -> None:
    blind = patched_release(keyed, "0.6.0", {"sampler.py": BLIND})
    did = "OTA_BLIND_01"
    col = MqttCollector(mosquitto_broker, [f"sqal/v1/{did}/telemetry"])
    dev = _device(tmp_path, mosquitto_broker, keyed, did)
    try:
        dev.start()
        assert dev.wait_for_log("online (broker", 60), dev.log()
        with Uploader(mosquitto_broker.url) as up:
            p = up.update(did, blind, probation_s=10)
        assert p.state == "rolled_back", f"{p}\n{dev.log()[-3000:]}"
        assert p.reason == "health check not passed within 10 s (missing: tof, spec, acked)"
        tel = _wait(lambda: [t for t in _telemetry(col, did) if t.get("reset") == "rollback"], 20,
                    "telemetry after the rollback")
        assert tel[-1]["fw"] == "0.1.0" and tel[-1]["ota"]["state"] == "rolled_back"
        assert tel[-1]["ota"]["slot"] == "factory" and tel[-1]["ota"]["target"] == "0.6.0"
        assert "sensor tof degraded: blind release" in dev.log()
    finally:
        dev.stop()
        col.close()


@pytest.mark.slow
def test_a_release_that_crashes_rolls_back_and_the_operator_can_roll_back(
        mosquitto_broker: Any, tmp_path: Path, keyed: dict[str, Any]) -> None:
    good = rel.build("0.7.0", keyed["key"], keyed["out"])
    crash = patched_release(keyed, "0.8.0", {"app.py": (
        "SAMPLE_BYTES = 1100", "raise RuntimeError('broken release')\nSAMPLE_BYTES = 1100")})
    did = "OTA_CRASH_01"
    dev = _device(tmp_path, mosquitto_broker, keyed, did)
    try:
        dev.start()
        assert dev.wait_for_log("online (broker", 60), dev.log()
        with Uploader(mosquitto_broker.url) as up:
            assert up.update(did, good, probation_s=60).state == "confirmed"
            p = up.update(did, crash, probation_s=60)
            assert p.state == "rolled_back", f"{p}\n{dev.log()[-3000:]}"
            assert (p.reason or "").startswith("probation boot of 0.8.0 ended by exception: RuntimeError('broken release'")
            st = up.command(did, "ota_status")["data"]
            assert st["slot"] == "a" and st["version"] == "0.7.0"
            # the operator's rollback: back to the image's application (0.7.0's way back)
            r = up.command(did, "ota_rollback")
            assert r["ok"] and r["data"]["slot"] == "factory", r
            assert dev.wait_for_log("reset cause rollback", 30), dev.log()[-2000:]
            res = up.command(did, "ota_status", attempts=10)
            assert res["ok"], res
            st = res["data"]
            assert st["slot"] == "factory" and st["state"] == "rolled_back"
            assert st["reason"] == "rollback requested by the operator"
            again = up.command(did, "ota_rollback")
            assert not again["ok"] and "nothing to roll back to" in again["error"]
    finally:
        dev.stop()


@pytest.mark.slow
def test_without_psram_the_slot_does_not_fit_and_the_board_rolls_back(
        mosquitto_broker: Any, tmp_path: Path, keyed: dict[str, Any], esp32_micropython: str) -> None:
    good = rel.load(keyed["out"] / "0.7.0") if (keyed["out"] / "0.7.0").exists() else \
        rel.build("0.7.0", keyed["key"], keyed["out"])
    did = "OTA_WROOM_01"
    dev = _device(tmp_path, mosquitto_broker, keyed, did, target="esp32")
    try:
        dev.start()
        assert dev.wait_for_log("online (broker", 60), dev.log()
        with Uploader(mosquitto_broker.url) as up:
            p = up.update(did, good, probation_s=20, confirm_timeout=120)
        assert p.state == "rolled_back", f"{p}\n{dev.log()[-3000:]}"
        assert "MemoryError" in dev.log() or "memory allocation failed" in dev.log()
        st = p.data
        assert st["slot"] == "factory" and st["state"] == "rolled_back"
    finally:
        dev.stop()


def test_a_download_cut_by_the_network_resumes_where_it_stopped(mosquitto_broker: Any, tmp_path: Path,
                                                                keyed: dict[str, Any]) -> None:
    """The board's WiFi drops in the middle of the download for longer than the sender's command
    timeout: the sender asks where the board stands once it answers again, and goes on from there,
    every chunk written once (the board ignores a chunk at a stale offset)."""
    import threading

    good = rel.load(keyed["out"] / "0.7.0") if (keyed["out"] / "0.7.0").exists() else \
        rel.build("0.7.0", keyed["key"], keyed["out"])
    did = "OTA_CUT_01"
    dev = _device(tmp_path, mosquitto_broker, keyed, did)
    try:
        dev.start()
        assert dev.wait_for_log("online (broker", 60), dev.log()
        with Uploader(mosquitto_broker.url, cmd_timeout=2.0) as up:
            seen: list[int] = []
            out: list[Any] = []
            t = threading.Thread(target=lambda: out.append(up.update(
                did, good, probation_s=60, on_progress=lambda p: seen.append(p.progress))))
            t.start()
            _wait(lambda: seen and seen[-1] >= 30, 60, "30 % downloaded")
            dev.network_down()
            time.sleep(6)  # three command timeouts: the sender gives up on the chunk and will ask
            dev.network_up()
            t.join(180)
            assert out, "the update did not end"
            p = out[0]
            assert p.state == "confirmed", f"{p}\n{dev.log()[-3000:]}"
            assert p.resends >= 1
            chunks_needed = sum(-(-f["size"] // 600) for f in good.files) + -(-len(good.manifest) // 600)
            # the chunk lost with the link is sent again, nothing else
            assert chunks_needed <= p.chunks <= chunks_needed + 3, (p.chunks, chunks_needed)
            st = up.command(did, "ota_status")["data"]
            assert st["version"] == "0.7.0" and st["state"] == "confirmed"
    finally:
        dev.stop()
