"""Rollouts over an emulated fleet of 20 boards on the ESP32 profile (with PSRAM), through a real
broker, sampling all along:

1. a good release rolls out wave by wave (1 device, then 10 %, then the rest): every board
   confirms it, a wave starts only when the one before ended;
2. a release that fails its health check (its sensors never come up) is stopped at the threshold
   after the first wave: that board rolls back by itself, the others never receive it;
then the operator's retry of the failed devices sends it again to that one board only, which
rolls back again.

No reading is lost or counted twice throughout: an independent subscriber (persistent session,
QoS 1) sees every (device, boot, seq) exactly once after dedupe, seqs contiguous from 0 in every
boot, up to what each boot reported sampled and no longer spooled.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from emulation.fleet import Fleet
from gateway.ota import release as rel
from gateway.ota.rollout import Rollout
from gateway.ota.uploader import Uploader
from tests.emulation.fleet_support import by_key_and_boot, caught_up, fleet_samples, gaps, wait_fleet
from tests.emulation.ota_support import BLIND, patched_release
from tests.fixtures.mqtt import MqttCollector

N = 20
DEVICE_CONFIG = {"tof_frequency_hz": 30, "keepalive_s": 5, "watchdog_s": 20}


@pytest.mark.slow
def test_rollouts_in_waves_threshold_and_retry_nothing_lost(mosquitto_broker: Any, tmp_path: Path,
                                                            esp32_micropython: str) -> None:
    key_file = tmp_path / "keys" / "release.pem"
    pub = rel.keygen(key_file)
    key = rel.load_private(key_file)
    keyed: dict[str, Any] = {"key": key, "out": tmp_path / "releases", "root": tmp_path}
    good = rel.build("0.2.0", key, tmp_path / "releases")
    blind = patched_release(keyed, "0.3.0", {"sampler.py": BLIND})

    col = MqttCollector(mosquitto_broker, ["sqal/v1/+/sample"], client_id=f"ota-{uuid.uuid4().hex[:8]}",
                        clean_session=False)
    fleet = Fleet(N, mosquitto_broker.url, interval=0.5, seed=7, base_dir=tmp_path / "fleet", id_prefix="ESP32_OTA",
                  telemetry_interval=1, resolution=4, config=DEVICE_CONFIG, target="esp32-psram")
    events: list[tuple[float, str, str, dict[str, Any]]] = []

    def on_event(d: str, kind: str, data: dict[str, Any]) -> None:
        events.append((time.monotonic(), d, kind, data))

    try:
        fleet.prepare()
        for d in fleet.devices:
            d.put_flash("ota_key.pub", pub.encode())
        fleet.start()
        wait_fleet(lambda: min(s.received for s in fleet.stats()) >= 4, 120, "4 samples from every device", fleet)
        with Uploader(mosquitto_broker.url) as up:
            # 1. the good release, wave by wave
            r1 = Rollout(up, good, list(fleet.ids), waves=["1", "10%", "100%"], max_failures=0.2, concurrency=10,
                         probation_s=60, on_event=on_event)
            assert r1.sizes == [1, 2, 20]
            assert r1.run() == "completed", r1.snapshot()
            assert r1.counts() == {"confirmed": N}
            ends = {e[3]["wave"]: e[0] for e in events if e[2] == "wave_ended"}
            starts = {e[3]["wave"]: e[0] for e in events if e[2] == "wave_started"}
            assert starts[2] >= ends[1] and starts[3] >= ends[2]
            confirmed_at = {e[1]: e[0] for e in events if e[2] == "device_confirmed"}
            assert len(confirmed_at) == N
            # wave 1's device was confirmed before wave 2 began, and so on
            assert confirmed_at[fleet.ids[0]] <= starts[2] and confirmed_at[fleet.ids[1]] <= starts[3]

            # 2. a release failing its health check: stopped at the threshold after wave 1
            events.clear()
            r2 = Rollout(up, blind, list(fleet.ids), waves=["1", "10%", "100%"], max_failures=0.2, concurrency=10,
                         probation_s=10, on_event=on_event)
            assert r2.run() == "stopped"
            assert r2.reason == "1 of 1 devices failed after wave 1 (threshold 0.2)"
            snap = {s["device_id"]: s for s in r2.snapshot()["devices"]}
            first = snap[fleet.ids[0]]
            assert first["state"] == "rolled_back"
            assert first["reason"] == "health check not passed within 10 s (missing: tof, spec, acked)"
            assert all(snap[d]["state"] == "skipped" for d in fleet.ids[1:])
            # the board that rolled back runs the good release again, and says so
            st = up.command(fleet.ids[0], "ota_status")["data"]
            assert st["version"] == "0.2.0" and st["state"] == "rolled_back" and st["target"] == "0.3.0"
            # nobody else was touched
            assert {up.command(d, "ota_status")["data"]["version"] for d in fleet.ids[1:4]} == {"0.2.0"}

            # 3. retry only the failed devices
            events.clear()
            assert r2.retry_failed() == "stopped"
            assert {e[1] for e in events if e[1]} == {fleet.ids[0]}
            assert r2.snapshot()["devices"][0]["attempts"] == 2

        # let the samples of every boot arrive before stopping
        wait_fleet(lambda: caught_up(fleet), 60, "every reported sample to arrive", fleet)
    finally:
        fleet.stop()
    try:
        samples = fleet_samples(col)
    finally:
        col.close()
    by_key, per_boot = by_key_and_boot(samples)
    reported = fleet.reported()
    # every device booted twice (the update); the first also for the blind release twice, and its
    # rollbacks (the blind boots sampled nothing: their sensors never came up)
    for did in fleet.ids:
        boots = sorted(b for d, b in per_boot if d == did)
        assert boots[:2] == [1, 2], (did, boots)
    for (did, boot), seqs in sorted(per_boot.items()):
        last = reported[did].get(boot)
        assert last is not None and max(seqs) + 1 >= last.sampled - last.spool, (did, boot, last, max(seqs))
        assert gaps(seqs) == [], f"{did} boot {boot}: samples lost: {gaps(seqs)}"
    got = fleet.received()
    assert sum(len(v) for boots in got.values() for v in boots.values()) == len(by_key)
    assert all(s.missing == 0 for s in fleet.stats())
    fws = {s["fw"] for s in samples}
    assert fws == {"0.1.0", "0.2.0"}, fws  # the blind release never produced a reading
