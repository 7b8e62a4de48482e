"""A fleet over mqtts:// (real firmware on real MicroPython, Mosquitto with a TLS listener and a
private CA): each device gets the CA as ca.pem and verifies the broker with it, as a board does; a
partition and a broker outage through the fault proxy (TLS end to end through it) lose nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from emulation.fleet import Fleet
from tests.emulation.fleet_support import wait_fleet
from tests.fixtures.mqtt import MosquittoBroker, free_port
from tests.fixtures.tls import make_private_ca

N = 3
DEVICE_CONFIG = {"tof_frequency_hz": 30, "keepalive_s": 5, "watchdog_s": 20}


@pytest.mark.parametrize("per_process", [1, 3], ids=["a process each", "one host of 3"])
def test_a_fleet_over_tls_loses_nothing_through_a_partition_and_a_broker_outage(
        mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path, per_process: int) -> None:
    ca = make_private_ca(tmp_path / "pki")
    tls_port = free_port()
    # only the TLS listener is given to the fleet: a device that did not speak TLS would get nowhere
    mosquitto_factory(extra_config=[f"listener {tls_port} 127.0.0.1", f"cafile {ca.ca}",
                                    f"certfile {ca.server_cert}", f"keyfile {ca.server_key}"])
    fleet = Fleet(N, f"mqtts://127.0.0.1:{tls_port}", interval=0.25, seed=5, base_dir=tmp_path / "fleet",
                  id_prefix="ESP32_TLS", telemetry_interval=1, resolution=4, config=DEVICE_CONFIG,
                  proxy=True, ca_file=ca.ca, per_process=per_process)
    try:
        fleet.start()
        assert fleet.device_url().startswith("mqtts://127.0.0.1:")
        assert all((d.flash_dir / "ca.pem").read_bytes() == ca.ca.read_bytes() for d in fleet.devices)
        wait_fleet(lambda: min(s.received for s in fleet.stats()) >= 8, 60, "8 samples from every device", fleet)
        fleet.partition([0], seconds=2)
        time.sleep(1)
        fleet.broker_outage(seconds=2)
        time.sleep(3)
        wait_fleet(lambda: not fleet.partitioned, 10, "the partition to heal", fleet)
        wait_fleet(lambda: min(s.received for s in fleet.stats()) >= 30, 60, "30 samples from every device", fleet)
        # every device reconnected (TLS again) after the outage; counters come with telemetry (1 s)
        wait_fleet(lambda: all(s.reconnects >= 1 for s in fleet.stats()), 15, "every device's reconnect", fleet)
    finally:
        fleet.stop()
    got = fleet.received()
    for did in fleet.ids:
        seqs = got[did][1]  # one boot each
        assert seqs == set(range(max(seqs) + 1)), f"{did}: gaps in {sorted(set(range(max(seqs) + 1)) - seqs)}"
    tot = fleet.totals()
    # (QoS 1 is at least once: a sample whose PUBACK the outage cut is sent again, a duplicate the
    # gateway's storage drops; what is asserted is that nothing is missing)
    assert tot["missing"] == 0 and tot["boots"] == N
    assert fleet.monitor.bad == 0, fleet.monitor.last_error


def test_mqtts_needs_a_readable_ca_and_only_mqtts_takes_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mqtts://: give the CA certificate"):
        Fleet(1, "mqtts://127.0.0.1:8883", base_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="ca_file is for an mqtts:// broker"):
        Fleet(1, "mqtt://127.0.0.1:1883", base_dir=tmp_path / "b", ca_file=tmp_path / "ca.pem")
    (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n...\n")
    with pytest.raises(ValueError, match=r"key\.pem'?: no PEM certificate"):
        Fleet(1, "mqtts://127.0.0.1:8883", base_dir=tmp_path / "c", ca_file=tmp_path / "key.pem")
    with pytest.raises(ValueError, match="missing.pem'?: cannot be read"):
        Fleet(1, "mqtts://127.0.0.1:8883", base_dir=tmp_path / "d", ca_file=tmp_path / "missing.pem")
