"""Emulated devices end to end: the real firmware on the real MicroPython, a real Mosquitto broker,
a paho-mqtt subscriber, and sqalfw.codec decoding what arrives."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from sqalfw import codec

from emulation.device import EmulatedDevice
from tests.fixtures.mqtt import MosquittoBroker, MqttCollector, free_port
from tests.fixtures.tls import make_private_ca

DeviceFactory = Callable[..., EmulatedDevice]


@pytest.fixture
def make_device(tmp_path: Path, mosquitto_broker: Any, device_target: str) -> Iterator[DeviceFactory]:
    made: list[EmulatedDevice] = []

    def make(interval: float = 0.2, config: dict | None = None, emulation: dict | None = None,
             start: bool = True) -> EmulatedDevice:
        did = f"ESP32_T_{uuid.uuid4().hex[:8].upper()}"
        cfg = {"watchdog_s": 20, "telemetry_interval_s": 1, "keepalive_s": 5}
        cfg.update(config or {})
        d = EmulatedDevice(did, tmp_path / did, mosquitto_broker.url, profile="default", seed=3,
                           interval=interval, config=cfg, emulation=emulation, target=device_target)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        d.kill()


def _collector(broker: Any, dev: EmulatedDevice) -> MqttCollector:
    return MqttCollector(broker, [f"sqal/v1/{dev.device_id}/#"])


def _samples(col: MqttCollector, dev: EmulatedDevice) -> list[dict]:
    return [codec.decode_sample(p, dev.device_id) for p in col.payloads(codec.topic(dev.device_id, "sample"))]


def _keys(samples: list[dict]) -> list[tuple[int, int]]:
    return [(s["boot"], s["seq"]) for s in samples]


def _statuses(col: MqttCollector, dev: EmulatedDevice) -> list[dict]:
    return [codec.decode_status(p, dev.device_id) for p in col.payloads(codec.topic(dev.device_id, "status"))]


class Commander:
    """The gateway's side of the command topic."""

    def __init__(self, broker: Any, dev: EmulatedDevice) -> None:
        self.topic = codec.topic(dev.device_id, "cmd")
        self.results = MqttCollector(broker, [codec.topic(dev.device_id, "cmd/result")])
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:8]}")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send_raw(self, payload: bytes) -> None:
        self.client.publish(self.topic, payload, qos=1).wait_for_publish(5)

    def call(self, payload: bytes, cid: str | None, timeout: float = 15) -> dict:
        n = len(self.results.payloads())
        self.send_raw(payload)
        assert self.results.wait_count(n + 1, timeout), "no command result"
        res = codec.decode_result(self.results.payloads()[n])
        assert res["id"] == cid
        return res

    def close(self) -> None:
        self.results.close()
        self.client.loop_stop()
        self.client.disconnect()


def test_device_publishes_samples_a_subscriber_decodes(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(config={"location": "Ligne A - Landes"})
    col = _collector(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 6, 30), dev.log()
        samples = _samples(col, dev)
        assert _keys(samples)[:6] == [(1, i) for i in range(6)], dev.log()
        for s in samples:
            assert s["fw"] and s["tof"]["res"] == 8
            assert s["q"]["grade"] in codec.GRADES and 0 <= s["q"]["score"] <= 1
            assert "lot_id" not in s
        assert samples[-1]["synced"] is True  # NTP done once the link came up
        assert [s["ts"] for s in samples] == sorted(s["ts"] for s in samples)
        assert abs(samples[-1]["ts"] / 1000 - time.time()) < 30
        online = [s for s in _statuses(col, dev) if s["state"] == "online"]
        assert online and online[-1].get("degraded") is None and online[-1]["location"] == "Ligne A - Landes"
        # the line `sqal board deploy` waits for on the serial console
        assert dev.wait_for_log(f"sqal: online (broker 127.0.0.1:{mosquitto_broker.port})", 5), dev.log()
        assert col.wait_for(lambda m: any(t.endswith("/telemetry") for t, _p, _r in m), 10)
        tele = codec.decode_telemetry(col.payloads(codec.topic(dev.device_id, "telemetry"))[-1], dev.device_id)
        assert tele["counters"]["sampled"] >= 1 and tele["mem_free"] > 0 and tele["boot"] == 1
    finally:
        col.close()
    # graceful stop: retained status says offline
    assert dev.stop() == 0
    late = MqttCollector(mosquitto_broker, [codec.topic(dev.device_id, "status")])
    try:
        assert late.wait_count(1, 5)
        final = codec.decode_status(late.payloads()[-1])
        assert final["state"] == "offline"
        # the will of a connection carries its birth's identity, so the gateway orders them (contract 5)
        assert (final["conn"], final["ts"]) == (online[-1]["conn"], online[-1]["ts"]) and final["conn"] >= 1
    finally:
        late.close()


def test_commands_answered_and_bad_ones_change_nothing(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(interval=0.3)
    col = _collector(mosquitto_broker, dev)
    gw = Commander(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 1, 30), dev.log()
        r = gw.call(codec.encode_command("c1", "assign_lot", {"lot_id": "LOT_20250114_0042"}), "c1")
        assert r["ok"] and r["data"] == {"lot_id": "LOT_20250114_0042"}
        assert dev.state()["lot_id"] == "LOT_20250114_0042"
        n = len(_samples(col, dev))
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= n + 2, 15)
        assert _samples(col, dev)[-1]["lot_id"] == "LOT_20250114_0042"

        # malformed, unknown, bad argument: an error result, nothing changed
        r = gw.call(b"{not json", None)
        assert not r["ok"] and r["error"].startswith("json")
        r = gw.call(json.dumps({"v": 1, "id": "c2", "cmd": "self_destruct"}).encode(), "c2")
        assert not r["ok"] and r["error"].startswith("cmd:") and "self_destruct" in r["error"]
        r = gw.call(json.dumps({"v": 1, "id": "c3", "cmd": "assign_lot", "args": {"lot_id": "LOT_1"}}).encode(), "c3")
        assert not r["ok"] and "lot_id" in r["error"]
        r = gw.call(json.dumps({"v": 1, "id": "c4", "cmd": "set_interval", "args": {"sample_s": -1}}).encode(), "c4")
        assert not r["ok"] and "sample_s" in r["error"]
        assert dev.state()["lot_id"] == "LOT_20250114_0042" and dev.state()["interval_s"] is None

        r = gw.call(codec.encode_command("c5", "set_interval", {"sample_s": 0.5}), "c5")
        assert r["ok"] and r["data"]["sample_s"] == 0.5 and dev.state()["interval_s"] == 0.5
        r = gw.call(codec.encode_command("c6", "status"), "c6")
        assert r["ok"] and r["data"]["lot_id"] == "LOT_20250114_0042" and r["data"]["sample_s"] == 0.5
        assert r["data"]["counters"]["sampled"] >= 3
        r = gw.call(codec.encode_command("c7", "clear_lot"), "c7")
        assert r["ok"] and dev.state()["lot_id"] is None

        # reboot: answered first, then the board resets and comes back with boot 2
        r = gw.call(codec.encode_command("c8", "reboot"), "c8")
        assert r["ok"]
        assert col.wait_for(lambda m: any(b == 2 for b, _s in _keys(_samples(col, dev))), 30), dev.log()
        assert (75, "reset") in dev.exits and dev.state()["interval_s"] == 0.5
    finally:
        gw.close()
        col.close()


def test_outage_loses_nothing_and_replays_oldest_first(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(interval=0.2)
    col = _collector(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 3, 30), dev.log()
        dev.network_down()
        time.sleep(1.0)  # let the cut take effect; whatever was in flight is retransmitted later
        before = len(_samples(col, dev))
        time.sleep(6.0)  # longer than watchdog_s: waiting for the network is not a hang
        assert len(_samples(col, dev)) == before, "samples arrived while the network was down"
        cut_at = time.time()
        dev.network_up()
        # everything sampled meanwhile arrives: contiguous seqs 0..max, nothing missing
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= before + 12, 30), dev.log()
        keys = _keys(_samples(col, dev))
        first_seen: list[tuple[int, int]] = []
        for k in keys:
            if k not in first_seen:
                first_seen.append(k)
        assert first_seen == sorted(first_seen), "replay not oldest first"
        seqs = [s for _b, s in first_seen]
        assert seqs == list(range(len(seqs))), "a sample was lost"
        replayed = [s for s in _samples(col, dev)[before:] if s["ts"] / 1000 < cut_at]
        assert len(replayed) >= 8  # produced during the outage, original timestamps kept
        assert dev.exits == [] and dev.starts == 1  # an outage is not a reason to reset
    finally:
        col.close()


def test_reset_keeps_flash_boot_plus_one_seq_restarts(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(interval=0.2)
    col = _collector(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 3, 30), dev.log()
        dev.reset()
        assert col.wait_for(lambda m: (2, 1) in _keys(_samples(col, dev)), 30), dev.log()
        keys = _keys(_samples(col, dev))
        assert (2, 0) in keys and dev.state()["boot"] == 2 and dev.starts == 2
    finally:
        col.close()


def test_absent_sensor_degraded_reported_no_boot_loop(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(emulation={"absent": ["tof"]}, config={"sensor_retry_s": 1})
    col = _collector(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: any(s.get("degraded") == ["tof"] for s in _statuses(col, dev)), 30), dev.log()
        assert col.wait_for(lambda m: len(col.payloads(codec.topic(dev.device_id, "telemetry"))) >= 3, 15)
        assert _samples(col, dev) == []
        assert dev.running and dev.starts == 1 and dev.exits == []
        assert dev.log().count("sensor tof degraded") >= 2  # retried, not given up
    finally:
        col.close()


# on the ESP32 profile only: the same firmware runs on both, and the test waits out two watchdog
# periods of the 20 s minimum, a minute of the suite's time per target
@pytest.mark.slow
@pytest.mark.parametrize("device_target", ["esp32"], indirect=True)
def test_watchdog_resets_hung_loop_then_safe_mode(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(config={"watchdog_s": 20, "safe_mode_after": 2})
    col = _collector(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 1, 30), dev.log()
        dev.hang_i2c()  # the bus never answers again: every normal boot hangs at sensor init
        # two watchdog periods (20 s, the smallest) and the boots between them
        assert col.wait_for(lambda m: any(s.get("safe_mode") for s in _statuses(col, dev)), 150), dev.log()
        reasons = [r for _rc, r in dev.exits]
        assert reasons.count("watchdog") >= 2 and "WATCHDOG" in dev.log()
        n = len(_samples(col, dev))
        time.sleep(3)  # safe mode: network and status only, and it stays up
        assert len(_samples(col, dev)) == n and dev.running
        assert (dev.flash_dir / "reset_reason").read_text() == "watchdog"
    finally:
        col.close()


def test_invalid_config_exits_without_restart(make_device: DeviceFactory) -> None:
    dev = make_device(config={"sample_interval_s": "abc"}, start=False)
    dev.start()
    deadline = time.monotonic() + 15
    while dev.running and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert dev.exits == [(78, "config_error")] and dev.starts == 1
    assert "config.json: sample_interval_s must be a number" in dev.log()


def test_offline_too_long_reboots_and_the_spool_survives(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nobody listens here
    dev = make_device(config={"broker_url": f"mqtt://127.0.0.1:{dead}", "max_offline_s": 2})
    col = _collector(mosquitto_broker, dev)
    try:
        assert dev.wait_for_log("boot 1", 15), dev.log()
        # boot 1 has read its config; the next boot will find the broker
        dev.update_config(broker_url=mosquitto_broker.url)
        assert dev.wait_for_log("offline for 2 s: rebooting", 20), dev.log()
        assert col.wait_for(lambda m: (1, 0) in _keys(_samples(col, dev)) and
                            any(b == 2 for b, _s in _keys(_samples(col, dev))), 30), dev.log()
        boot1 = [s for b, s in _keys(_samples(col, dev)) if b == 1]
        assert boot1 == list(range(len(boot1))) and len(boot1) >= 5  # sampled offline, replayed in order
        assert (75, "reset") in dev.exits
    finally:
        col.close()


def test_clock_skew_moves_sample_timestamps(make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(interval=0.2)
    col = _collector(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 2, 30), dev.log()
        dev.set_clock_skew(-3600)
        n = len(_samples(col, dev))
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= n + 5, 15)
        last = _samples(col, dev)[-1]
        assert 3500 < time.time() - last["ts"] / 1000 < 3700
    finally:
        col.close()


def test_a_failing_boot_backs_off_resets_and_ends_in_safe_mode(make_device: DeviceFactory,
                                                                mosquitto_broker: Any) -> None:
    # The first three power-ups run out of heap importing the firmware (emulation.json). Unguarded,
    # that would leave a board at the REPL, uncounted; each one is counted as a failed boot, the
    # device waits longer each time, resets, and the fourth boot, the streak reached, is safe mode.
    dev = make_device(config={"safe_mode_after": 3},
                      emulation={"memory_error_at": "import", "memory_error_boots": 3})
    col = _collector(mosquitto_broker, dev)
    try:
        assert col.wait_for(lambda m: any(s.get("safe_mode") for s in _statuses(col, dev)), 90), dev.log()
        log = dev.log()
        failures = re.findall(r"sqal: boot failed \(MemoryError.*\); failed boots in a row: (\d+); reset in (\d+) s",
                              log)
        assert [(int(n), int(d)) for n, d in failures] == [(1, 1), (2, 2), (3, 4)], log
        assert [r for _rc, r in dev.exits] == ["reset"] * 3 and dev.starts == 4
        assert "SAFE MODE" in log and _samples(col, dev) == []
    finally:
        col.close()


def test_ntp_falls_back_to_the_next_server_and_a_reset_keeps_the_clock_a_power_cut_not(
        make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    dev = make_device(interval=0.3, emulation={"ntp_fail": ["0.pool.ntp.org"]})
    col = _collector(mosquitto_broker, dev)
    gw = Commander(mosquitto_broker, dev)

    def boot_samples(boot: int) -> list[dict]:
        return [s for s in _samples(col, dev) if s["boot"] == boot]

    try:
        assert col.wait_for(lambda m: any(s["synced"] for s in boot_samples(1)), 30), dev.log()
        assert "sqal: clock set by NTP from 1.pool.ntp.org (no answer from 0.pool.ntp.org)" in dev.log()
        dev.set_ntp(False)  # from now on no NTP server answers
        # a reset (the reboot command): the RTC kept its time, so the clock is still set
        assert gw.call(codec.encode_command("r1", "reboot"), "r1")["ok"]
        assert col.wait_for(lambda m: len(boot_samples(2)) >= 2, 30), dev.log()
        for s in boot_samples(2):
            assert s["synced"] is True and abs(s["ts"] / 1000 - time.time()) < 60
        assert dev.wait_for_log("sqal: NTP: no answer from 0.pool.ntp.org, 1.pool.ntp.org, 2.pool.ntp.org; "
                                "clock kept", 15), dev.log()
        # a power cut: the RTC starts again from 2000-01-01, and no NTP server answers
        dev.reset()
        assert col.wait_for(lambda m: len(boot_samples(3)) >= 2, 30), dev.log()
        for s in boot_samples(3):
            assert s["synced"] is False and s["ts"] < 978307200000  # 2001-01-01
    finally:
        gw.close()
        col.close()


def test_a_slow_failing_dns_does_not_reset_a_device_whose_cache_holds_the_broker(
        make_device: DeviceFactory, mosquitto_broker: Any) -> None:
    # the broker by name: looked up once, while DNS works; then the DNS servers stop answering and
    # a lookup would block 30 s, longer than the (smallest) watchdog
    name = f"localhost:{mosquitto_broker.port}"
    dev = make_device(config={"broker_url": f"mqtt://{name}", "watchdog_s": 20})
    col = _collector(mosquitto_broker, dev)
    try:
        assert dev.wait_for_log(f"sqal: online (broker {name})", 30), dev.log()
        dev.set_dns_failure(30)
        dev.network_down()  # the connection dies: the broker publishes the device's will
        assert col.wait_for(lambda m: any(s["state"] == "offline" for s in _statuses(col, dev)), 20), dev.log()
        dev.network_up()
        # back online from the cached address, well within the watchdog: no lookup was made
        assert dev.wait_for_log(f"sqal: online (broker {name})", 15, count=2), dev.log()
        assert "dns: lookup of localhost" not in dev.log()
        n = len(_samples(col, dev))
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= n + 3, 15), dev.log()
        assert dev.exits == [] and dev.starts == 1
    finally:
        col.close()


# ---- TLS (the ESP32 profile is built without TLS: these run on the 64-bit wheel) ----


class CountingProxy:
    """A TCP forwarder in front of a listener that counts the connections made to it: what an
    emulated device attempts is seen here, TLS included (the bytes pass through untouched)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                c.close()
                continue
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(4096):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.sock.close()


@pytest.fixture
def tls_broker(tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker]
               ) -> Iterator[tuple[MosquittoBroker, CountingProxy, bytes]]:
    """Mosquitto with a plain listener (the test's subscriber) and a TLS listener behind a counting
    proxy, and the CA certificate a device verifies it with."""
    ca = make_private_ca(tmp_path / "pki")
    tls_port = free_port()
    broker = mosquitto_factory(extra_config=[f"listener {tls_port} 127.0.0.1", f"cafile {ca.ca}",
                                             f"certfile {ca.server_cert}", f"keyfile {ca.server_key}"])
    proxy = CountingProxy(tls_port)
    yield broker, proxy, ca.ca.read_bytes()
    proxy.close()


def _tls_device(make_device: DeviceFactory, proxy: CountingProxy, ca_pem: bytes | None,
                config: dict | None = None, emulation: dict | None = None) -> EmulatedDevice:
    dev = make_device(config={"broker_url": f"mqtts://127.0.0.1:{proxy.port}", **(config or {})},
                      emulation=emulation, start=False)
    dev.prepare()
    if ca_pem is not None:
        dev.put_flash("ca.pem", ca_pem)
    dev.start()
    return dev


# the ESP32 profile is built without TLS (its MicroPython source has no mbedtls): the wheel only
@pytest.mark.parametrize("device_target", ["unix64"], indirect=True)
def test_tls_waits_for_the_clock_before_any_attempt(make_device: DeviceFactory,
                                                    tls_broker: tuple[MosquittoBroker, CountingProxy, bytes]) -> None:
    broker, proxy, ca_pem = tls_broker
    dev = _tls_device(make_device, proxy, ca_pem, emulation={"ntp": "never"})
    col = _collector(broker, dev)
    try:
        assert dev.wait_for_log("sqal: TLS: waiting for the clock to be set (NTP) before connecting", 20), dev.log()
        assert dev.wait_for_log("sqal: NTP: no answer from", 20), dev.log()
        time.sleep(3)  # three more looks at the link and the clock, and still nothing attempted
        assert proxy.accepted == 0 and dev.log().count("waiting for the clock") == 1  # logged once
        dev.set_ntp(True)  # NTP answers from now on: the clock is set at the next round, then TLS
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 2, 60), dev.log()
        assert proxy.accepted >= 1 and dev.wait_for_log("sqal: online (broker", 10), dev.log()
        log = dev.log()
        assert log.index("sqal: clock set by NTP") < log.index("sqal: online (broker")
        assert "the server certificate is verified against ca.pem" in log
    finally:
        col.close()


# the ESP32 profile is built without TLS (its MicroPython source has no mbedtls): the wheel only
@pytest.mark.parametrize("device_target", ["unix64"], indirect=True)
def test_tls_without_ca_pem_is_refused_unless_tls_insecure(make_device: DeviceFactory,
                                                           tls_broker: tuple[MosquittoBroker, CountingProxy, bytes]) -> None:
    broker, proxy, _ca_pem = tls_broker
    dev = _tls_device(make_device, proxy, None)
    assert dev.wait_for_log("sqal: TLS refused: no ca.pem on flash", 20), dev.log()
    assert dev.wait_for_log("sqal: clock set by NTP", 20), dev.log()
    time.sleep(3)  # the clock is set, the link is up: still no attempt
    assert proxy.accepted == 0 and "online (broker" not in dev.log()
    # asked for explicitly in config.json: connects, unverified, and says so
    dev.kill()
    dev.update_config(tls_insecure=True)
    col = _collector(broker, dev)
    try:
        dev.start()
        assert col.wait_for(lambda m: len(_samples(col, dev)) >= 2, 30), dev.log()
        assert proxy.accepted >= 1
        assert "sqal: TLS without ca.pem (\"tls_insecure\": true in config.json): the server certificate is " \
               "NOT verified" in dev.log()
    finally:
        col.close()
