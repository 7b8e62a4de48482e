"""Fault injection for fleets: the syntax (validated, errors name the culprit), the TCP proxy, and
every fault kind applied on schedule to real emulated devices against a real Mosquitto."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqalfw import codec

from emulation.faults import Fault, FaultError, TcpProxy, parse_duration, parse_fault
from emulation.fleet import Fleet
from tests.fixtures.mqtt import MqttCollector, mqtt_ping


@pytest.mark.parametrize(("text", "want"), [
    ("broker-outage@30s:10s", Fault("broker-outage", 30.0, 10.0, text="broker-outage@30s:10s")),
    ("partition@1.5m:500ms/25%", Fault("partition", 90.0, 0.5, share=0.25, text="partition@1.5m:500ms/25%")),
    ("partition@20:15/0-2,7", Fault("partition", 20.0, 15.0, indices=(0, 1, 2, 7), text="partition@20:15/0-2,7")),
    ("reboot@45s/all", Fault("reboot", 45.0, text="reboot@45s/all")),
    ("clock-skew=-3600@10s", Fault("clock-skew", 10.0, value=-3600.0, text="clock-skew=-3600@10s")),
    ("i2c-errors=0.05@0s:60s/50%", Fault("i2c-errors", 0.0, 60.0, 0.05, 0.5, text="i2c-errors=0.05@0s:60s/50%")),
])
def test_fault_syntax_parses(text: str, want: Fault) -> None:
    assert parse_fault(text) == want


@pytest.mark.parametrize(("text", "names"), [
    ("meteor@10s", "unknown kind 'meteor'"),
    ("partition@10s", "needs a length"),
    ("partition@ten:5s", "start time 'ten' is not a duration"),
    ("partition@10s:0s", "length must be > 0"),
    ("reboot@10s:5s", "takes no :FOR"),
    ("reboot=3@10s", "takes no =VALUE"),
    ("clock-skew@10s", "needs a value"),
    ("clock-skew=abc@10s", "value 'abc' is not a number"),
    ("clock-skew=1e12@10s", "beyond"),
    ("i2c-errors=1.5@0s", "within 0..1"),
    ("broker-outage@1s:2s/50%", "takes no /WHO"),
    ("partition@1s:2s/150%", "within (0, 100]%"),
    ("partition@1s:2s/3-1", "runs backwards"),
    ("partition@1s:2s/x", "'x' is not an index"),
    ("partition 10s", "expected KIND[=VALUE]@AT"),
])
def test_fault_syntax_errors_name_the_problem(text: str, names: str) -> None:
    with pytest.raises(FaultError) as e:
        parse_fault(text)
    assert names in str(e.value) and text in str(e.value)


def test_fault_targets_deterministic_and_checked() -> None:
    f = parse_fault("partition@1s:1s/25%")
    assert f.targets(20, seed=3) == f.targets(20, seed=3) and len(f.targets(20, seed=3)) == 5
    assert f.targets(20, seed=3) != f.targets(20, seed=4) or f.targets(20, seed=3) != f.targets(20, seed=5)
    assert parse_fault("reboot@1s").targets(4) == [0, 1, 2, 3]
    with pytest.raises(FaultError, match="index 9 out of range"):
        parse_fault("reboot@1s/9").targets(5)
    assert parse_duration("250ms") == 0.25


def test_fleet_rejects_bad_settings_before_starting(tmp_path: Path) -> None:
    with pytest.raises(FaultError, match="index 7 out of range"):
        Fleet(3, "mqtt://127.0.0.1:1", faults=["partition@1s:1s/7"], base_dir=tmp_path)
    with pytest.raises(ValueError, match="profile 'gold' unknown"):
        Fleet(3, "mqtt://127.0.0.1:1", profile="gold", base_dir=tmp_path)
    with pytest.raises(ValueError, match="expected mqtt://host"):
        Fleet(3, "http://127.0.0.1:1", base_dir=tmp_path)
    with pytest.raises(ValueError, match="contract rejects"):
        Fleet(3, "mqtt://127.0.0.1:1", id_prefix="bad prefix", base_dir=tmp_path)
    with pytest.raises(ValueError, match="needs the fleet's TCP proxy"):
        Fleet(3, "mqtt://127.0.0.1:1", faults=["broker-outage@1s:1s"], proxy=False, base_dir=tmp_path)


def test_proxy_relays_then_refuses_while_down(mosquitto_broker: Any) -> None:
    p = TcpProxy(mosquitto_broker.host, mosquitto_broker.port)
    p.start()
    try:
        assert mqtt_ping(p.host, p.port) == 0  # a real CONNECT/CONNACK through the relay
        held = socket.create_connection((p.host, p.port))
        time.sleep(0.2)
        p.down()
        with pytest.raises(OSError):
            mqtt_ping(p.host, p.port)
        held.settimeout(2)
        try:  # the open connection was reset, like a crashed broker's
            assert held.recv(1) == b""
        except ConnectionResetError:
            pass
        held.close()
        p.up()
        assert mqtt_ping(p.host, p.port) == 0
        assert p.connections >= 2 and p.outages == 1
    finally:
        p.stop()


def test_scheduled_faults_hit_the_devices_they_name(mosquitto_broker: Any, tmp_path: Path) -> None:
    col = MqttCollector(mosquitto_broker, ["sqal/v1/+/sample"], client_id=f"ff-{uuid.uuid4().hex[:8]}",
                        clean_session=False)
    faults = ["broker-outage@1s:3s", "reboot@5s/1", "clock-skew=-3600@0s/2", "i2c-errors=0.01@0s/0"]
    fleet = Fleet(3, mosquitto_broker.url, interval=0.3, seed=5, base_dir=tmp_path / "fleet", telemetry_interval=1,
                  resolution=4, config={"tof_frequency_hz": 30}, faults=faults)
    assert fleet.proxy is not None  # a broker-outage fault brings the proxy
    try:
        fleet.start()
        assert fleet.devices[0].broker_url == fleet.proxy.url
        time.sleep(1.5)
        assert not fleet.proxy.is_up  # the outage is on
        assert fleet.wait_delivered(10, 60), fleet.totals()
        # devices catch up as soon as the broker is back, which can be before the reboot at 5 s
        assert fleet.schedule is not None
        end = time.monotonic() + 30
        while fleet.schedule.pending() and time.monotonic() < end:
            time.sleep(0.1)
        assert fleet.schedule.pending() == 0, fleet.fault_log()
        # the scheduled reboot gave device 1 a second boot
        assert fleet.devices[1].starts == 2 and fleet.devices[0].starts == 1
        # an outage by hand, now that every device is surely connected: all of them lose the broker
        before = {s.device_id: s.received for s in fleet.stats()}
        conns = fleet.proxy.connections
        fleet.broker_outage(seconds=3)
        time.sleep(1.0)
        mid = {s.device_id: s.received for s in fleet.stats()}
        time.sleep(1.5)
        assert {s.device_id: s.received for s in fleet.stats()} == mid  # nothing gets through
        assert fleet.proxy.outages == 2
        assert fleet.wait_delivered(max(before.values()) + 10, 60), fleet.totals()
        stats = fleet.stats()
        assert fleet.proxy.connections >= conns + 3  # every device came back through the proxy
        # their own telemetry says so too (QoS 0, every second; it can resume a few s after a reconnect)
        end = time.monotonic() + 15
        while time.monotonic() < end and not (stats[0].reconnects >= 1 and stats[2].reconnects >= 1):
            time.sleep(0.5)
            stats = fleet.stats()
        assert stats[0].reconnects >= 1 and stats[2].reconnects >= 1, (stats, [d.log() for d in fleet.devices])
        assert stats[0].i2c_errors > 0 and stats[1].i2c_errors == 0 and stats[2].i2c_errors == 0
    finally:
        fleet.stop()
    samples = [codec.decode_sample(p, t.split("/")[2]) for t, p, _r in list(col.messages)]
    col.close()
    log = [what for _t, what, err in fleet.fault_log() if err is None]
    assert len(log) == 5, fleet.fault_log()
    now = time.time()
    skewed = [s for s in samples if s["device_id"] == fleet.ids[2] and s["seq"] > 5]
    assert skewed and all(3500 < now - s["ts"] / 1000 < 3700 for s in skewed)
    normal = [s for s in samples if s["device_id"] == fleet.ids[0]]
    assert normal and all(abs(now - s["ts"] / 1000) < 120 for s in normal)
    # nothing lost across the proxy outage and the reboot
    for did in fleet.ids:
        for boot in {s["boot"] for s in samples if s["device_id"] == did}:
            seqs = {s["seq"] for s in samples if s["device_id"] == did and s["boot"] == boot}
            assert seqs == set(range(max(seqs) + 1)), (did, boot)


def _processes_under(path: Path) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(path) in (d / "cmdline").read_bytes().decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.mark.parametrize("per_process", [1, 3])
def test_cli_ctrl_c_stops_every_device_cleanly(mosquitto_broker: Any, tmp_path: Path, per_process: int) -> None:
    import os
    import signal
    import subprocess
    import sys

    prefix = f"ESP32_CLI{uuid.uuid4().hex[:4].upper()}"
    col = MqttCollector(mosquitto_broker, [f"sqal/v1/{prefix}_00{i}/#" for i in (1, 2, 3)])
    base = tmp_path / "flash"
    # its own session, like a terminal's foreground job: Ctrl-C goes to the whole process group
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulation.fleet_cli", "--devices", "3", "--broker", mosquitto_broker.url,
         "--interval", "0.3", "--telemetry", "1", "--resolution", "4", "--id-prefix", prefix,
         "--base-dir", str(base), "--keep", "--fault", "partition@1s:2s/0", "--per-process", str(per_process)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        cwd=Path(__file__).resolve().parents[2])
    try:
        ids = [f"{prefix}_00{i}" for i in (1, 2, 3)]
        assert col.wait_for(lambda m: all(sum(1 for t, _p, _r in m if t == f"sqal/v1/{d}/sample") >= 5 for d in ids),
                            60), proc.stdout.read().decode() if proc.poll() is not None and proc.stdout else "no samples"
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == 0, out
        assert "stopping every device... (interrupted)" in out and "SQAL fleet summary" in out
        assert "devices 3" in out and "missing 0" in out, out
        assert "fault at" in out and "network down" in out, out
        for d in ids:
            assert (base / d / "device.log").read_text().rstrip().endswith("stop requested")
            status = [codec.decode_status(p) for t, p, _r in list(col.messages) if t == f"sqal/v1/{d}/status"]
            assert status[-1]["state"] == "offline"
        assert _processes_under(base) == []  # no device left behind
    finally:
        col.close()


def test_cli_help_and_bad_options_refused_before_start() -> None:
    from typer.testing import CliRunner

    from emulation.fleet_cli import fleet_app

    r = CliRunner().invoke(fleet_app, ["--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    for opt in ("--devices", "--broker", "--interval", "--profile", "--seed", "--duration", "--fault", "--ca"):
        assert opt in r.output
    assert "KIND[=VALUE]@AT[:FOR][/WHO]" in r.output
    r = CliRunner().invoke(fleet_app, ["--broker", "mqtt://127.0.0.1:1", "--fault", "partition@10s"])
    assert r.exit_code == 2 and "partition needs a length" in r.output
    r = CliRunner().invoke(fleet_app, ["--broker", "mqtt://127.0.0.1:1", "--profile", "gold"])
    assert r.exit_code == 2 and "profile 'gold' unknown" in r.output
    r = CliRunner().invoke(fleet_app, ["--broker", "mqtts://127.0.0.1:1"], env={"COLUMNS": "250"})
    assert r.exit_code == 2 and "give the CA certificate" in r.output and "--ca FILE" in r.output
