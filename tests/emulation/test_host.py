"""Several emulated devices in one MicroPython process (emulation/host.py, emulation/mpboard/host.py),
against a real Mosquitto: a reset of one device (the firmware's reboot command), a watchdog expiry
of another (its I2C bus hangs) and an App crash of a third restart that device alone, with its flash
kept, while its host-mates keep publishing with no seq gap and never restart."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from sqalfw import codec

from emulation.host import DeviceHost, HostedDevice
from tests.fixtures.mqtt import MqttCollector

INTERVAL = 0.25
BASE_CONFIG = {"tof_frequency_hz": 30, "telemetry_interval_s": 1, "keepalive_s": 5, "watchdog_s": 20,
               "safe_mode_after": 10}


def _make_host(tmp_path: Path, broker: Any, configs: list[dict[str, Any]]) -> DeviceHost:
    tag = uuid.uuid4().hex[:6].upper()
    devs = []
    for i, extra in enumerate(configs):
        did = f"ESP32_H{tag}_{i + 1}"
        cfg = dict(BASE_CONFIG, **extra)
        devs.append(HostedDevice(did, tmp_path / did, broker.url, seed=40 + i, interval=INTERVAL, resolution=4,
                                 config=cfg))
    for d in devs:
        d.prepare()
    return DeviceHost("hosttest", devs, tmp_path / "host.log")


def _keys(col: MqttCollector, did: str) -> list[tuple[int, int, int]]:
    out = []
    for p in col.payloads(codec.topic(did, "sample")):
        s = codec.decode_sample(p, did)
        out.append((s["boot"], s["seq"], s["ts"]))
    return out


def _wait(pred: Any, timeout: float, what: str, host: DeviceHost) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {d.device_id}\n{d.log()[-800:]}" for d in host.devices)
    raise AssertionError(f"timed out waiting for {what}\n--- host\n{host.log()[-1500:]}\n{logs}")


def _no_gaps(keys: list[tuple[int, int, int]]) -> dict[int, set[int]]:
    per_boot: dict[int, set[int]] = {}
    for boot, seq, _ts in keys:
        per_boot.setdefault(boot, set()).add(seq)
    for boot, seqs in per_boot.items():
        assert seqs == set(range(max(seqs) + 1)), f"boot {boot}: gap in {sorted(seqs)}"
    return per_boot


@pytest.mark.slow
def test_one_device_reset_and_watchdog_restart_it_alone(mosquitto_broker: Any, tmp_path: Path) -> None:
    # device 0: reboot command; device 1: hung I2C bus -> its watchdog (20 s, the smallest); device 2:
    # untouched. The mates' watchdogs are longer, so that the host's last-resort thread (watchdog
    # + 2 s) never takes the freeze for theirs: only device 1's expires first by design.
    host = _make_host(tmp_path, mosquitto_broker, [{"watchdog_s": 30}, {"watchdog_s": 20}, {"watchdog_s": 30}])
    a, b, c = host.devices
    col = MqttCollector(mosquitto_broker, [f"sqal/v1/{d.device_id}/#" for d in host.devices])
    gw = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:8]}")
    gw.connect(mosquitto_broker.host, mosquitto_broker.port)
    gw.loop_start()
    try:
        host.start()
        pid = host.pid
        _wait(lambda: all(len(_keys(col, d.device_id)) >= 6 for d in host.devices), 40, "6 samples each", host)

        # the firmware's own reset (board.reset() from the outbox task, after the result is acked)
        t_reset = time.time()
        gw.publish(codec.topic(a.device_id, "cmd"), codec.encode_command("r1", "reboot"), qos=1).wait_for_publish(5)
        _wait(lambda: (2, 3) in {(k[0], k[1]) for k in _keys(col, a.device_id)}, 30, "device 0's second boot", host)
        assert a.state()["boot"] == 2 and a.starts == 2
        assert (a.flash_dir / "reset_reason").read_text() == "reset"

        # a hung bus: only device 1's watchdog gets it back (the host freezes meanwhile, as one chip
        # would), then it boots again with its flash; the bus is released after the first expiry
        b.hang_i2c()
        _wait(lambda: "WATCHDOG" in b.log(), 60, "device 1's watchdog", host)
        b.hang_i2c(False)
        _wait(lambda: any(k[0] >= 2 and k[1] >= 3 for k in _keys(col, b.device_id)), 40,
              "device 1 sampling again after its watchdog", host)
        assert (b.flash_dir / "reset_reason").read_text() == "watchdog"
        assert ("watchdog" in [r for _rc, r in b.exits]) and b.state()["boot"] >= 2

        # the mates keep publishing through both: no restart, no seq gap, samples taken meanwhile
        n_c = len(_keys(col, c.device_id))
        time.sleep(2)
        assert len(_keys(col, c.device_id)) >= n_c + 4
        assert host.pid == pid and host.starts == 1 and host.running, host.log()
    finally:
        host.stop(timeout=20)
        gw.loop_stop()
        gw.disconnect()
    def statuses_now() -> dict[str, list[dict[str, Any]]]:
        return {d.device_id: [codec.decode_status(p, d.device_id)
                              for p in col.payloads(codec.topic(d.device_id, "status"))] for d in host.devices}

    try:
        # each device's last word on stopping may reach the collector after the host has exited
        col.wait_for(lambda _m: all(s and s[-1]["state"] == "offline" for s in statuses_now().values()), 10)
        keys = {d.device_id: _keys(col, d.device_id) for d in host.devices}
        statuses = statuses_now()
    finally:
        col.close()
    assert host.exits == [(0, "stopped")]
    per_boot = {did: _no_gaps(k) for did, k in keys.items()}
    assert set(per_boot[a.device_id]) == {1, 2}
    assert set(per_boot[c.device_id]) == {1} and c.starts == 1 and c.exits == [(0, "stopped")]
    # device 2 went on sampling while device 0 rebooted (its firmware runs on the same loop)
    ts_c = sorted(k[2] / 1000 for k in keys[c.device_id])
    # (a 0.25 s interval; bounds with room for a loaded machine)
    assert any(t_reset < t < t_reset + 3 for t in ts_c)
    # the hang freezes the host for at most the 20 s watchdog plus the reaper's 1 s look; 9 s of margin
    assert all(y - x < 30 for x, y in itertools.pairwise(ts_c)), "a host-mate stopped for longer than the hang"
    for d in host.devices:
        assert d.exits[-1] == (0, "stopped"), d.exits
        assert statuses[d.device_id][-1]["state"] == "offline"
    assert "stop requested" in c.log() and f"device {c.device_id} boot 1" in c.log()


def test_power_cycle_of_one_device_leaves_the_other_running(mosquitto_broker: Any, tmp_path: Path) -> None:
    host = _make_host(tmp_path, mosquitto_broker, [{}, {}])
    a, b = host.devices
    col = MqttCollector(mosquitto_broker, [f"sqal/v1/{d.device_id}/sample" for d in host.devices])
    try:
        host.start()
        _wait(lambda: all(len(_keys(col, d.device_id)) >= 4 for d in host.devices), 40, "4 samples each", host)
        a.reset()  # power cycle through control.json: device 0 alone, no clean shutdown
        _wait(lambda: any(k[0] == 2 and k[1] >= 2 for k in _keys(col, a.device_id)), 30,
              "device 0's second boot", host)
        assert a.starts == 2 and [r for _rc, r in a.exits] == ["power"]
        n_b = len(_keys(col, b.device_id))
        time.sleep(1.5)
        assert len(_keys(col, b.device_id)) >= n_b + 4 and b.starts == 1
    finally:
        host.stop(timeout=20)
    try:
        keys = {d.device_id: _keys(col, d.device_id) for d in host.devices}
    finally:
        col.close()
    assert set(_no_gaps(keys[b.device_id])) == {1}
    assert set(_no_gaps(keys[a.device_id])) == {1, 2}


def test_app_crash_of_one_device_leaves_the_other_running(mosquitto_broker: Any, tmp_path: Path) -> None:
    # device 0's spool directory is a file: its App cannot be built (an exception out of the
    # firmware), so it crash-loops alone, as a board would, until its flash is fixed
    host = _make_host(tmp_path, mosquitto_broker, [{}, {}])
    a, b = host.devices
    (a.flash_dir / "spool").write_text("not a directory")
    col = MqttCollector(mosquitto_broker, [f"sqal/v1/{d.device_id}/sample" for d in host.devices])
    try:
        host.start()
        _wait(lambda: len(_keys(col, b.device_id)) >= 8, 40, "8 samples from device 1", host)
        crashes = [r for _rc, r in a.exits]
        assert crashes.count("crash") >= 2 and set(crashes) == {"crash"}, crashes
        assert "crashed, resetting" in a.log() and _keys(col, a.device_id) == []
        (a.flash_dir / "spool").unlink()
        # it boots in safe mode by then (every crash counted as a failed boot): online, not sampling
        _wait(lambda: "online (broker" in a.log(), 30, "device 0 online once fixed", host)
        assert "SAFE MODE" in a.log()
        assert b.starts == 1 and host.starts == 1 and host.running
    finally:
        host.stop(timeout=20)
    try:
        keys = _keys(col, b.device_id)
    finally:
        col.close()
    assert set(_no_gaps(keys)) == {1}


HOST_SCRIPT = """
import asyncio, time
from emulation.mpboard import host as H

import builtins
real = (builtins.print, asyncio.open_connection)
H.install()
# the board seam carries each device's network and log: only task creation is the host's
print("UNPATCHED", (builtins.print, asyncio.open_connection) == real)
h = H.Host([{f0!r}, {f1!r}], stagger_ms=0)
stuck = asyncio.Event()

async def hang():
    await stuck.wait()   # never set: the loop runs on, this device's sampler makes no progress

async def main():
    asyncio.create_task(h.main())
    await asyncio.sleep_ms(1500)
    d0, d1 = h.devices
    s1 = d1.app.sampler.sampled
    d0.app.sampler.cycle = hang
    await asyncio.sleep_ms(36000)  # stall limit 10 s, then the 20 s watchdog, then a new boot
    print("RESULT", d0.boots, d1.boots, d1.app.sampler.sampled - s1, d0.app.ident.boot)
    raise SystemExit(0)

asyncio.run(main())
"""


@pytest.mark.slow
def test_unfed_watchdog_of_one_device_resets_it_alone_loop_side(micropython_run: Any, tmp_path: Path) -> None:
    # the loop-side watchdog (no blocking stall): device 0's sampler awaits forever, its supervisor
    # stops feeding, the host resets device 0 alone; device 1 samples on without a restart
    from emulation.device import ensure_mpy_cache

    devs = []
    for i in range(2):
        d = HostedDevice(f"ESP32_HW_{i + 1}", tmp_path / f"d{i}", "mqtt://127.0.0.1:1", interval=0.1,
                         config={"watchdog_s": 20, "max_offline_s": 0}, emulation={"sensor_time_scale": 10})
        d.prepare()
        devs.append(d)
    cache = ensure_mpy_cache()
    out = micropython_run(HOST_SCRIPT.format(f0=str(devs[0].flash_dir), f1=str(devs[1].flash_dir)), heap="1M",
                          extra_path=(cache,), timeout=150)
    assert "UNPATCHED True" in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT")).split()
    boots0, boots1, sampled1, fw_boot0 = (int(v) for v in line[1:])
    assert (boots0, boots1, fw_boot0) == (2, 1, 2), out.stdout
    assert sampled1 >= 100, out.stdout  # ~10 a second throughout
    assert (devs[0].flash_dir / "reset_reason").read_text() == "watchdog"
    assert [r for _rc, r in devs[0].exits] == ["watchdog"] and devs[1].exits == []
    assert "task sampler stalled" in devs[0].log() and "WATCHDOG" in devs[0].log()
    assert "stalled" not in devs[1].log()
