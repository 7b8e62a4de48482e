"""A fleet of 20 emulated devices (real firmware, real MicroPython) against a real broker (NATS's MQTT
listener, the gateway's engine, and Mosquitto, a site's own), through a partition of some devices, a
device reboot and a broker restart: an independent subscriber (persistent session, QoS 1) must see
every (device, boot, seq) exactly once after dedupe and none missing.

Both keep sessions and queued messages across a restart (NATS in JetStream streams on disk,
Mosquitto in its persistence file, saved on SIGTERM): every sample a device got a PUBACK for reaches
the subscriber. Assert: no gap at all.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from sqalfw import codec

from emulation.fleet import Fleet
from tests.emulation.fleet_support import by_key_and_boot, caught_up, fleet_samples, gaps, wait_fleet
from tests.fixtures.mqtt import MqttCollector

N = 20
SAMPLES = 60
INTERVAL = 0.25
# light per-device settings so that 20 devices fit the 2-core test machine: 4x4 ToF at 30 Hz
# (the fleet behaviour under test does not depend on the resolution), telemetry every second
DEVICE_CONFIG = {"tof_frequency_hz": 30, "keepalive_s": 5, "watchdog_s": 20}


def test_fleet_partition_reboot_broker_restart_nothing_lost(mqtt_broker: Any, tmp_path: Path) -> None:
    _partition_reboot_broker_restart(mqtt_broker, tmp_path, per_process=1)


def test_fleet_of_hosts_partition_reboot_broker_restart_nothing_lost(mosquitto_broker: Any, tmp_path: Path) -> None:
    # the same bar with several devices per MicroPython process (5 hosts of 4): partitions and the
    # power cycle hit single devices inside a host; the others in that host must not notice
    _partition_reboot_broker_restart(mosquitto_broker, tmp_path, per_process=4)


def test_fleet_on_the_esp32_profile_partition_reboot_broker_restart_nothing_lost(
        mosquitto_broker: Any, tmp_path: Path, esp32_micropython: str) -> None:
    # the same bar on the ESP32 profile: 32-bit, firmware frozen, the board's heap, littlefs flash
    _partition_reboot_broker_restart(mosquitto_broker, tmp_path, per_process=1, target="esp32")


def _partition_reboot_broker_restart(mqtt_broker: Any, tmp_path: Path, per_process: int,
                                     target: str = "unix64") -> None:
    col = MqttCollector(mqtt_broker, ["sqal/v1/+/sample"], client_id=f"it-{uuid.uuid4().hex[:8]}",
                        clean_session=False)
    col.client.reconnect_delay_set(1, 1)
    fleet = Fleet(N, mqtt_broker.url, interval=INTERVAL, seed=11, base_dir=tmp_path / "fleet",
                  id_prefix="ESP32_FT", telemetry_interval=1, resolution=4, config=DEVICE_CONFIG,
                  per_process=per_process, target=target)
    try:
        fleet.start()
        assert len(fleet.processes()) == N // per_process
        wait_fleet(lambda: min(s.received for s in fleet.stats()) >= 8, 60, "8 samples from every device", fleet)

        # phase 1: five devices lose their network for 4 s; another one is power-cycled meanwhile
        t_cut = time.time()
        cut = fleet.partition(range(5), seconds=4)
        assert cut == [0, 1, 2, 3, 4]
        time.sleep(1.0)
        before_heal = {s.device_id: s.received for s in fleet.stats()[:5]}
        fleet.reboot([5])
        time.sleep(1.5)
        assert {s.device_id: s.received for s in fleet.stats()[:5]} == before_heal, "a partitioned device got through"
        assert all(s.state == "partitioned" for s in fleet.stats()[:5])
        wait_fleet(lambda: not fleet.partitioned, 10, "the partition to heal", fleet)
        wait_fleet(lambda: min(s.received for s in fleet.stats()) >= 25, 60, "25 samples from every device", fleet)

        # phase 2: the broker restarts (3 s down); the devices spool meanwhile and replay
        mqtt_broker.stop()
        time.sleep(3)
        mqtt_broker.start()
        wait_fleet(lambda: col.client.is_connected(), 15, "the subscriber to reconnect", fleet)
        wait_fleet(lambda: min(s.received for s in fleet.stats()) >= SAMPLES, 90,
              f"{SAMPLES} samples from every device", fleet)

        # end: everything each boot reported sampled has arrived (what is still spooled after the
        # last telemetry stays on the device's flash: not lost, not asserted)
        wait_fleet(lambda: caught_up(fleet), 30, "every reported sample to arrive", fleet)
        # the fleet's counters come from telemetry (QoS 0, every second, late after an outage):
        # let them catch up with what the subscriber already saw before stopping
        wait_fleet(lambda: fleet.totals()["sampled"] >= N * SAMPLES, 30, "the telemetry counters to catch up", fleet)
    finally:
        fleet.stop()
    try:
        samples = fleet_samples(col)
    finally:
        col.close()

    by_key, per_boot = by_key_and_boot(samples)
    reported = fleet.reported()

    # every device took part; the rebooted one has a second boot; nobody else restarted
    assert {did for did, _b in per_boot} == set(fleet.ids)
    assert {b for did, b in per_boot if did == fleet.ids[5]} == {1, 2}
    assert all(b == 1 for did, b in per_boot if did != fleet.ids[5])
    assert [d.starts for d in fleet.devices] == [2 if i == 5 else 1 for i in range(N)]
    assert all(d.exits[-1] == (0, "stopped") for d in fleet.devices), [d.exits for d in fleet.devices]
    for did in fleet.ids:
        assert sum(len(v) for (d, _b), v in per_boot.items() if d == did) >= SAMPLES

    for (did, boot), seqs in sorted(per_boot.items()):
        last = reported[did].get(boot)
        # everything the boot reported sampled and no longer had spooled was received (seqs start
        # at 0); caught_up() above already saw every reported sample arrive at one moment
        assert last is not None and max(seqs) + 1 >= last.sampled - last.spool, (did, boot, last, max(seqs))
        assert gaps(seqs) == [], f"{did} boot {boot}: samples lost: {gaps(seqs)}"
    # the partitioned devices' samples taken while cut off did arrive (spooled, replayed later)
    for did in fleet.ids[:5]:
        during = [s for s in by_key.values() if s["device_id"] == did and t_cut + 1 < s["ts"] / 1000 < t_cut + 3.5]
        assert len(during) >= 4, f"{did}: {len(during)} samples from inside the partition"

    # the fleet's own counters agree with the independent subscriber
    got = fleet.received()
    for (did, boot), seqs in per_boot.items():
        mine = got[did].get(boot, set())
        assert mine, (did, boot)
        # the monitor stops a moment before the subscriber: compare up to its last sample
        upto = {q for q in seqs if q <= max(mine)}
        assert mine == upto, (did, boot, sorted(upto ^ mine))
    tot = fleet.totals()
    assert tot["sampled"] >= N * SAMPLES and tot["devices"] == N and tot["boots"] == N + 1
    assert tot["reconnects"] >= N  # every device reconnected after the restart
    assert fleet.monitor.bad == 0, fleet.monitor.last_error


def test_monitor_reads_boot_and_seq_without_a_full_decode() -> None:
    # the loss check's fast path must give what the contract's decoder gives, for both encodings,
    # and leave anything it does not recognise to the decoder (counted in `bad`, never fatal)
    from types import SimpleNamespace

    from emulation.fleet import _Monitor

    did = "ESP32_MON_001"
    m = _Monitor("127.0.0.1", 1, [did], count_samples=True)
    sample = {"v": 1, "device_id": did, "boot": 3, "seq": 17, "ts": 1764201600000, "synced": True,
              "fw": "1.0.0", "tof": {"res": 8, "dist": [95] * 64, "st": [5] * 64},
              "spec": {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150,
                       "F8": 750, "CLEAR": 6500, "NIR": 600, "gain": 2.0, "atime": 29, "astep": 599,
                       "sat": False},
              "q": {"score": 0.5, "grade": "B"}}
    payloads = [codec.encode_sample(sample), codec.encode_sample_bin(sample)]
    for p in payloads:
        assert m._sample_key(did, p) == (3, 17)  # first sample of a boot: decoded in full
    m.seqs[did][3] = set()
    for p in payloads:
        assert m._sample_key(did, p) == (3, 17)  # then the fast path
    for p in payloads:
        m._on_message(None, None, SimpleNamespace(topic=f"sqal/v1/{did}/sample", payload=p))
    assert m.seqs[did][3] == {17} and m.duplicates[did] == 1 and m.bad == 0
    bad = payloads[0].replace(b'"seq":17', b'"seq":-1')
    m._on_message(None, None, SimpleNamespace(topic=f"sqal/v1/{did}/sample", payload=bad))
    assert m.bad == 1 and m.seqs[did][3] == {17}
