"""A fleet of emulated SQAL devices: N `EmulatedDevice` processes running the real firmware on
MicroPython, each with its own flash dir and config, watched over MQTT. With `per_process=K > 1`
the devices run K to a process (emulation/host.py): less CPU and memory, less isolation.

    with Fleet(20, "mqtt://127.0.0.1:1883", interval=1.0) as fleet:
        fleet.wait_delivered(5, timeout=60)
        fleet.partition([0, 1], seconds=10)
        print(fleet.totals())

Counters come from what the devices publish, not from their logs: one paho subscriber (the
"monitor") on `sqal/v1/+/telemetry`, `.../status` and, unless `count_samples=False`, `.../sample`.
Telemetry gives the device's own view per boot (sampled, acked, spool depth, reconnects, drops,
I2C errors); the sample subscription gives what actually arrived (unique (boot, seq), duplicates,
gaps). Reading logs would cost a file read per device per refresh and parse free text; the
telemetry is the contract's own health channel and costs one small QoS 0 message per interval.

Faults (emulation/faults.py): per-device partitions (the emulated WLAN goes down), reboots (power
cycle, flash kept), clock skew and I2C error rates through each device's control file; broker
outages through a TCP proxy the fleet puts between its devices and the broker (`proxy=True`, or
automatically when a broker-outage fault is scheduled). The monitor always talks to the broker
directly, so an outage seen by the devices does not blind it.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as paho
from sqalfw import codec
from sqalfw.urls import hide_password, parse_broker_url

from emulation import faults as faultlib
from emulation import targets
from emulation.device import BLOB_NAME, EmulatedDevice, esp32_equivalent_heap, write_sensor_blob
from emulation.host import DeviceHost, HostedDevice, host_heap

DEFAULT_TELEMETRY_S = 5.0
# where (boot, seq) sit in a sample (docs/contract.md): the binary header, the JSON key order
_BIN_KEY = struct.Struct("<II")
_JSON_KEY = re.compile(rb'\{"v":1,"device_id":"[A-Za-z0-9_-]+","boot":(\d+),"seq":(\d+),')
START_RATE = 25.0  # devices started per second: a boot costs ~0.1-0.3 s of CPU (sensor upload)


@dataclass
class BootView:
    """What one boot of a device reported in its last telemetry."""

    sampled: int = 0
    acked: int = 0
    spool: int = 0
    reconnects: int = 0
    dropped: int = 0
    i2c_errors: int = 0
    retransmitted: int = 0


@dataclass
class DeviceStats:
    index: int
    device_id: str
    state: str = "starting"   # starting | online | connecting | partitioned | down | stopped
    boots: int = 0            # process starts seen by the host
    sampled: int = 0          # summed over boots, as last reported by telemetry
    acked: int = 0
    spool: int = 0            # spool depth in the latest telemetry
    reconnects: int = 0
    dropped: int = 0
    i2c_errors: int = 0
    received: int = 0         # unique (boot, seq) seen by the monitor
    duplicates: int = 0
    missing: int = 0          # seqs below the highest received one, per boot, never seen
    exits: list[tuple[int, str]] = field(default_factory=list)


_SUMMED = ("boots", "sampled", "acked", "spool", "reconnects", "dropped", "i2c_errors", "received",
           "duplicates", "missing")


def _broker_address(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) of mqtt://host[:port] (1883) or mqtts://host[:port] (8883), by the board's
    own rule (sqalfw.urls)."""
    try:
        b = parse_broker_url(url)
    except ValueError as exc:
        raise ValueError(f"broker URL {hide_password(url)!r}: {exc} (expected mqtt://host[:port] or "
                         "mqtts://host[:port]; websockets are not supported by the fleet runner)") from None
    return b["host"], b["port"], b["tls"]


def _read_ca(ca_file: str | os.PathLike[str]) -> bytes:
    """The CA certificate (PEM) the devices are given as ca.pem; refused now, naming the file, if it
    holds no certificate (the firmware would fail closed and the fleet would only time out)."""
    path = Path(ca_file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"ca_file {str(path)!r}: cannot be read ({exc.strerror or exc})") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"ca_file {str(path)!r}: no PEM certificate in it")
    return data


def process_usage(pid: int) -> dict[str, float] | None:
    """CPU seconds (user, sys) and memory (RSS, PSS in kB) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        out = {"user_s": int(stat[11]) / tick, "sys_s": int(stat[12]) / tick, "rss_kb": 0.0, "pss_kb": 0.0}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_kb"] = float(line.split()[1])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out["pss_kb"] = float(line.split()[1])
        except OSError:
            out["pss_kb"] = out["rss_kb"]
        return out
    except (OSError, IndexError, ValueError):
        return None


class _Monitor:
    """paho subscriber feeding per-device views. Thread-safe reads through `lock`."""

    def __init__(self, host: str, port: int, ids: Sequence[str], count_samples: bool,
                 ca_file: str | os.PathLike[str] | None = None) -> None:
        self.lock = threading.Lock()
        self.ids = set(ids)
        self.telemetry: dict[str, dict[int, BootView]] = {d: {} for d in ids}
        self.last_boot: dict[str, int] = {}
        self.status: dict[str, str] = {}
        self.seqs: dict[str, dict[int, set[int]]] = {d: {} for d in ids}
        self.duplicates: dict[str, int] = dict.fromkeys(ids, 0)
        self.bad = 0             # messages that failed the contract (counted, never fatal)
        self.last_error = ""
        self.connected = threading.Event()
        # persistent session: across a broker restart (Mosquitto keeps sessions) nothing is missed
        self.client_id = f"sqal-fleet-{uuid.uuid4().hex[:10]}"
        self.host, self.port = host, port
        topics = ["sqal/v1/+/telemetry", "sqal/v1/+/status"] + (["sqal/v1/+/sample"] if count_samples else [])
        self.topics = topics
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        c.reconnect_delay_set(1, 2)
        if ca_file is not None:  # mqtts: the broker's certificate checked against the fleet's CA
            c.tls_set_context(ssl.create_default_context(cafile=os.fspath(ca_file)))
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        self.client = c

    def start(self, timeout: float = 10) -> None:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.stop()
            raise ConnectionError(f"fleet monitor could not subscribe on {self.host}:{self.port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if not rc.is_failure:
            client.subscribe([(t, 1) for t in self.topics])
            self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 4 or parts[2] not in self.ids:
            return  # another device on the same broker: not ours
        did, kind = parts[2], parts[3]
        try:
            if kind == "sample":
                boot, seq = self._sample_key(did, msg.payload)
                with self.lock:
                    seqs = self.seqs[did].setdefault(boot, set())
                    if seq in seqs:
                        self.duplicates[did] += 1
                    else:
                        seqs.add(seq)
            elif kind == "telemetry":
                t = codec.decode_telemetry(msg.payload, did)
                c = t["counters"]
                v = BootView(c.get("sampled", 0), c.get("acked", 0), t.get("spool_depth", 0),
                             c.get("reconnects", 0), c.get("dropped", 0), c.get("i2c_errors", 0),
                             c.get("retransmitted", 0))
                with self.lock:
                    self.telemetry[did][t["boot"]] = v
                    self.last_boot[did] = max(t["boot"], self.last_boot.get(did, 0))
            elif kind == "status":
                st = codec.decode_status(msg.payload, did)
                with self.lock:
                    self.status[did] = st["state"]
        except (codec.ContractError, ValueError, KeyError, TypeError) as e:
            with self.lock:
                self.bad += 1
                self.last_error = f"{msg.topic}: {e}"

    def _sample_key(self, did: str, payload: bytes) -> tuple[int, int]:
        """(boot, seq) of a sample. The loss check needs only these two: a full decode costs
        ~60 us a sample, this ~2 us (a fleet of hundreds sends hundreds a second into one Python
        thread). The first sample of each boot, and anything the fast path does not recognise,
        still goes through the contract's decoder (`bad` counts failures)."""
        if len(payload) >= 12 and payload[0] == codec.MAGIC:  # binary: boot, seq at bytes 4 and 8
            boot, seq = _BIN_KEY.unpack_from(payload, 4)
        else:
            m = _JSON_KEY.match(payload)  # the firmware's fixed key order (codec.encode_sample)
            if m is None:
                s = codec.decode_sample(payload, did)
                return s["boot"], s["seq"]
            boot, seq = int(m.group(1)), int(m.group(2))
        if boot not in self.seqs[did]:
            s = codec.decode_sample(payload, did)
            return s["boot"], s["seq"]
        return boot, seq

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
        # drop the persistent session so the broker does not keep queueing for a gone monitor
        try:
            c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
            c.connect(self.host, self.port, keepalive=5)
            c.loop_start()
            time.sleep(0.2)
            c.disconnect()
            c.loop_stop()
        except OSError:
            pass


class Fleet:
    def __init__(
        self,
        n: int,
        broker_url: str | Sequence[str],
        interval: float = 1.0,
        profile: str = "default",
        seed: int = 1,
        base_dir: str | os.PathLike[str] | None = None,
        id_prefix: str = "ESP32_FLEET",
        *,
        telemetry_interval: float = DEFAULT_TELEMETRY_S,
        resolution: int = 8,
        config: dict[str, Any] | None = None,
        emulation: dict[str, Any] | None = None,
        faults: Iterable[str | faultlib.Fault] = (),
        proxy: bool | None = None,
        count_samples: bool = True,
        start_rate: float = START_RATE,
        heap: str | None = None,
        per_process: int = 1,
        ca_file: str | os.PathLike[str] | None = None,
        target: str = targets.DEFAULT,
    ) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"fleet size must be a positive integer, got {n!r}")
        if not interval > 0:
            raise ValueError(f"interval must be > 0 s, got {interval!r}")
        if not isinstance(per_process, int) or per_process < 1:
            raise ValueError(f"per_process must be a positive integer, got {per_process!r}")
        if not start_rate > 0:
            raise ValueError(f"start_rate must be > 0 devices/s, got {start_rate!r}")
        from emulation.peripherals import profiles

        profiles.check(profile)  # ValueError naming the known profiles
        self.target = targets.get(target)  # ValueError naming the known targets
        if self.target.frozen and per_process != 1:
            raise ValueError(f"target {target} runs one device per process (its heap is one board's): "
                             f"per_process must be 1, got {per_process}")
        self.n = n
        # a list: the nodes of one cluster; every device gets them all (the firmware fails over
        # between them), rotated so that device i starts on node i mod n
        self.broker_urls = [broker_url] if isinstance(broker_url, str) else list(broker_url)
        if not self.broker_urls:
            raise ValueError("no broker URL")
        broker_url = self.broker_url = self.broker_urls[0]
        self.broker_host, self.broker_port, self.tls = _broker_address(broker_url)
        for other in self.broker_urls[1:]:
            _broker_address(other)  # checked now, not when a device fails over
        # mqtts: every device gets the CA as ca.pem on its flash (the firmware verifies the broker
        # against it, as a board does), and the monitor checks the broker with it too
        if self.tls and ca_file is None:
            raise ValueError(f"broker URL {broker_url!r} is mqtts://: give the CA certificate that signed "
                             "the broker's (ca_file, --ca FILE)")
        if ca_file is not None and not self.tls:
            raise ValueError(f"ca_file is for an mqtts:// broker, not {broker_url!r}")
        if self.tls and self.target.frozen:
            raise ValueError(f"target {target} is built without TLS (its MicroPython source has no mbedtls): "
                             "use an mqtt:// broker, or target unix64 for mqtts://")
        self._ca_pem = _read_ca(ca_file) if ca_file is not None else None
        self.interval = interval
        self.seed = seed
        self.faults = [f if isinstance(f, faultlib.Fault) else faultlib.parse_fault(f) for f in faults]
        for f in self.faults:
            f.targets(n, seed)  # index range checked now, not mid-run
        wants_proxy = any(f.kind == "broker-outage" for f in self.faults)
        if len(self.broker_urls) > 1 and (proxy or wants_proxy):
            raise ValueError("the fault proxy stands for one broker: not with a list of broker URLs")
        if proxy is False and wants_proxy:
            raise ValueError("a broker-outage fault needs the fleet's TCP proxy (proxy=False given)")
        self.proxy = faultlib.TcpProxy(self.broker_host, self.broker_port) if (proxy or wants_proxy) else None
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="sqal-fleet-")).resolve()
        width = max(3, len(str(n)))
        self.ids = [f"{id_prefix}_{i + 1:0{width}d}" for i in range(n)]
        for did in self.ids:
            if not codec.valid_device_id(did):
                raise ValueError(f"id_prefix {id_prefix!r} gives device id {did!r}, which the contract "
                                 "rejects (^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$)")
        self.start_rate = start_rate
        self.heap = heap  # per process: one device's, or a host's of per_process devices
        # devices per MicroPython process: 1 = one process per device (default, a board's fidelity);
        # K > 1 = hosts of K devices (emulation/host.py), for fleets the machine cannot hold otherwise
        self.per_process = per_process
        self.hosts: list[DeviceHost] = []
        cfg = {"telemetry_interval_s": telemetry_interval}
        cfg.update(config or {})
        self._dev_kw: dict[str, Any] = {"profile": profile, "interval": interval, "resolution": resolution,
                                        "config": cfg, "emulation": emulation}
        self.devices: list[EmulatedDevice] = []
        self.partitioned: set[int] = set()
        self.monitor = _Monitor(self.broker_host, self.broker_port, self.ids, count_samples, ca_file)
        self.schedule: faultlib.Schedule | None = None
        self.started_at: float | None = None
        self._stopped = False
        self._start_aborted = False

    # ---- lifecycle ----

    def device_urls(self, i: int) -> str | list[str]:
        """What device i gets as its broker_url: the one URL, or the cluster's list rotated by i."""
        if len(self.broker_urls) == 1:
            return self.device_url()
        k = i % len(self.broker_urls)
        return self.broker_urls[k:] + self.broker_urls[:k]

    def device_url(self) -> str:
        """The broker URL the devices get: the broker's, or the fault proxy's address in its place
        (same scheme and credentials: TLS goes through the proxy end to end)."""
        if self.proxy is None:
            return self.broker_url
        u = urlsplit(self.broker_url)
        auth = u.netloc.rpartition("@")[0]
        return urlunsplit((u.scheme, f"{auth}@" * bool(auth) + f"{self.proxy.host}:{self.proxy.port}", u.path, "", ""))

    def prepare(self) -> None:
        """Flash dirs for every device (config, emulation settings, one shared sensor blob)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        blob = self.base_dir / BLOB_NAME
        if not blob.exists() and not self.target.frozen:
            write_sensor_blob(blob)  # one 86 KB blob for the fleet, not one per device
        k = self.per_process
        if k == 1 and self.target.frozen:
            # the blob is on each board's flash, as on a board (86 KB of its 2 MiB)
            self.devices = [
                EmulatedDevice(did, self.base_dir / did, self.device_urls(i), seed=self.seed * 1000 + i,
                               heap=self.heap, own_process_group=True, target=self.target.name, **self._dev_kw)
                for i, did in enumerate(self.ids)
            ]
        elif k == 1:
            heap = self.heap or esp32_equivalent_heap()
            self.devices = [
                EmulatedDevice(did, self.base_dir / did, self.device_urls(i), seed=self.seed * 1000 + i,
                               heap=heap, sensor_blob=blob, own_process_group=True, **self._dev_kw)
                for i, did in enumerate(self.ids)
            ]
        else:
            hosted = [
                HostedDevice(did, self.base_dir / did, self.device_urls(i), seed=self.seed * 1000 + i,
                             sensor_blob=blob, **self._dev_kw)
                for i, did in enumerate(self.ids)
            ]
            self.devices = list(hosted)
            self.hosts = []
            for h, first in enumerate(range(0, self.n, k)):
                group = hosted[first:first + k]
                self.hosts.append(DeviceHost(
                    f"host{h + 1:03d}", group, self.base_dir / f"host{h + 1:03d}.log",
                    heap=self.heap or host_heap(len(group)), stagger_s=1 / self.start_rate,
                    own_process_group=True))
        for d in self.devices:
            d.prepare()
            if self._ca_pem is not None:
                d.put_flash("ca.pem", self._ca_pem)

    def processes(self) -> list[EmulatedDevice | DeviceHost]:
        """What runs as a MicroPython process: the devices, or their hosts."""
        return list(self.hosts) if self.hosts else list(self.devices)

    def start(self) -> None:
        """Start the monitor, the proxy, then the devices at `start_rate` per second, then the
        fault schedule (its clock starts when the last device has been started)."""
        if not self.devices:
            self.prepare()
        self.monitor.start()
        if self.proxy is not None:
            self.proxy.start()
        t0 = time.monotonic()
        k = self.per_process
        for i, d in enumerate(self.processes()):
            # a host boots its devices 1 / start_rate apart itself
            delay = t0 + i * k / self.start_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if self._stopped or self._start_aborted:
                return
            d.start()
        if self.hosts:  # the last host's devices are still booting
            time.sleep(max(0.0, t0 + self.n / self.start_rate - time.monotonic()))
        self.started_at = time.monotonic()
        if self.faults:
            self.schedule = faultlib.Schedule(self._events(self.faults))
            self.schedule.start()

    def abort_start(self) -> None:
        """Make a start() in progress return before starting the next device. Only sets a flag:
        safe from a signal handler (no lock taken)."""
        self._start_aborted = True

    def stop(self, timeout: float = 20.0) -> None:
        """Every device stops gracefully (offline status, disconnect, exit 0) at once; stragglers
        are killed after `timeout`. Then the proxy and the monitor."""
        self._stopped = True
        if self.schedule is not None:
            self.schedule.stop()
        for d in self.devices:
            d.request_stop()
        # a partitioned device cannot say goodbye; let it reconnect so it can (its link comes back)
        for i in list(self.partitioned):
            self.devices[i].network_up()
        if self.proxy is not None and not self.proxy.is_up:
            self.proxy.up()
        end = time.monotonic() + timeout
        for proc in self.processes():
            p = proc._proc
            if p is None:
                continue
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except Exception:  # noqa: BLE001 - TimeoutExpired: power cut for this one (or host)
                proc.kill()
        if self.proxy is not None:
            self.proxy.stop()
        self.monitor.stop()

    def cleanup(self) -> None:
        """Remove the flash dirs when the fleet created its own temporary base dir."""
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- faults ----

    def _pick(self, indices: Iterable[int] | None) -> list[int]:
        if indices is None:
            return list(range(self.n))
        out = sorted(set(indices))
        for i in out:
            if not 0 <= i < self.n:
                raise ValueError(f"device index {i} out of range (fleet of {self.n})")
        return out

    def _later(self, seconds: float, fn: Any, *args: Any) -> None:
        t = threading.Timer(seconds, fn, args)
        t.daemon = True
        t.start()

    def partition(self, indices: Iterable[int] | None = None, seconds: float | None = None) -> list[int]:
        """The devices' network goes down (their WLAN link); back after `seconds` if given."""
        idx = self._pick(indices)
        for i in idx:
            self.partitioned.add(i)
            self.devices[i].network_down()
        if seconds is not None:
            self._later(seconds, self.heal, idx)
        return idx

    def heal(self, indices: Iterable[int] | None = None) -> None:
        for i in self._pick(indices):
            self.partitioned.discard(i)
            self.devices[i].network_up()

    def reboot(self, indices: Iterable[int] | None = None) -> list[int]:
        """Power-cycle: the process is killed and boots again with its flash (boot counter + 1)."""
        idx = self._pick(indices)
        for i in idx:
            self.devices[i].reset()
        return idx

    def clock_skew(self, seconds: float, indices: Iterable[int] | None = None) -> list[int]:
        idx = self._pick(indices)
        for i in idx:
            self.devices[i].set_clock_skew(seconds)
        return idx

    def i2c_errors(self, rate: float, indices: Iterable[int] | None = None) -> list[int]:
        idx = self._pick(indices)
        for i in idx:
            self.devices[i].set_i2c_error_rate(rate)
        return idx

    def broker_outage(self, seconds: float | None = None) -> None:
        """Every device loses the broker (through the proxy); back after `seconds` if given."""
        if self.proxy is None:
            raise RuntimeError("broker outages need the fleet's TCP proxy: Fleet(..., proxy=True)")
        self.proxy.down()
        if seconds is not None:
            self._later(seconds, self.proxy.up)

    def broker_back(self) -> None:
        if self.proxy is None:
            raise RuntimeError("no proxy")
        self.proxy.up()

    def _events(self, fs: Sequence[faultlib.Fault]) -> list[faultlib.Event]:
        ev: list[faultlib.Event] = []
        for f in fs:
            who = f.targets(self.n, self.seed)
            label = f"{f.text} -> {len(who)} device(s)" if f.kind != "broker-outage" else f.text
            if f.kind == "broker-outage":
                assert f.for_s is not None
                ev.append(faultlib.Event(f.at_s, f"{label}: broker down", self.broker_outage))
                ev.append(faultlib.Event(f.at_s + f.for_s, f"{label}: broker back", self.broker_back))
            elif f.kind == "partition":
                assert f.for_s is not None
                ev.append(faultlib.Event(f.at_s, f"{label}: network down", partial(self.partition, who)))
                ev.append(faultlib.Event(f.at_s + f.for_s, f"{label}: network up", partial(self.heal, who)))
            elif f.kind == "reboot":
                ev.append(faultlib.Event(f.at_s, f"{label}: reboot", partial(self.reboot, who)))
            elif f.kind == "clock-skew":
                v = float(f.value or 0.0)
                ev.append(faultlib.Event(f.at_s, f"{label}: clock skew {v:+g} s",
                                         partial(self.clock_skew, v, who)))
                if f.for_s is not None:
                    ev.append(faultlib.Event(f.at_s + f.for_s, f"{label}: clock skew back to 0",
                                             partial(self.clock_skew, 0.0, who)))
            elif f.kind == "i2c-errors":
                v = float(f.value or 0.0)
                ev.append(faultlib.Event(f.at_s, f"{label}: I2C error rate {v:g}",
                                         partial(self.i2c_errors, v, who)))
                if f.for_s is not None:
                    ev.append(faultlib.Event(f.at_s + f.for_s, f"{label}: I2C error rate back to 0",
                                             partial(self.i2c_errors, 0.0, who)))
        return ev

    # ---- observation ----

    def stats(self) -> list[DeviceStats]:
        out = []
        m = self.monitor
        with m.lock:
            for i, did in enumerate(self.ids):
                s = DeviceStats(i, did)
                boots = m.telemetry[did]
                for v in boots.values():
                    s.sampled += v.sampled
                    s.acked += v.acked
                    s.reconnects += v.reconnects
                    s.i2c_errors += v.i2c_errors
                if boots:
                    last = boots[max(boots)]
                    s.spool = last.spool
                    s.dropped = last.dropped  # persisted in the spool: cumulative across boots
                for seqs in m.seqs[did].values():
                    s.received += len(seqs)
                    if seqs:
                        s.missing += max(seqs) + 1 - len(seqs)
                s.duplicates = m.duplicates[did]
                status = m.status.get(did)
                if i < len(self.devices):
                    d = self.devices[i]
                    s.boots = d.starts
                    s.exits = list(d.exits)
                    if not d.running:
                        s.state = "stopped" if self._stopped else ("down" if d.starts else "starting")
                    elif i in self.partitioned:
                        s.state = "partitioned"
                    elif status == "online":
                        s.state = "online"
                    else:
                        s.state = "connecting"
                out.append(s)
        return out

    def totals(self, stats: Sequence[DeviceStats] | None = None) -> dict[str, int]:
        stats = self.stats() if stats is None else stats
        t = {k: sum(getattr(s, k) for s in stats) for k in _SUMMED}
        t["devices"] = len(stats)
        t["online"] = sum(1 for s in stats if s.state == "online")
        return t

    def received(self) -> dict[str, dict[int, set[int]]]:
        """A copy of the (boot -> seqs) the monitor has seen, per device id."""
        with self.monitor.lock:
            return {d: {b: set(s) for b, s in v.items()} for d, v in self.monitor.seqs.items()}

    def reported(self) -> dict[str, dict[int, BootView]]:
        """The last telemetry of every boot, per device id."""
        with self.monitor.lock:
            return {d: dict(v) for d, v in self.monitor.telemetry.items()}

    def wait_delivered(self, count: int, timeout: float) -> bool:
        """True once every device has at least `count` unique samples received by the monitor."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if min(s.received for s in self.stats()) >= count:
                return True
            time.sleep(0.2)
        return False

    def usage(self) -> dict[str, dict[str, float]]:
        """Per running MicroPython process (a device, or a host of per_process devices, by name):
        CPU seconds and memory (process_usage)."""
        out = {}
        for d in self.processes():
            pid = d.pid
            u = process_usage(pid) if pid is not None and d.running else None
            if u is not None:
                out[d.name if isinstance(d, DeviceHost) else d.device_id] = u
        return out

    def fault_log(self) -> list[tuple[float, str, str | None]]:
        return list(self.schedule.log) if self.schedule is not None else []
