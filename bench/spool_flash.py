"""The firmware's flash spool end to end on the ESP32 profile: footprint, wear and delivery.

A MicroPython script on the emulator's ESP32 profile (32-bit, firmware frozen, 110 KB heap) drives
the real `sqalfw.spool.Spool` on /flash, a 2 MiB littlefs2 image whose block device counts every
byte programmed and every block erased (emulation/mpboard/flash.py), and the real
`sqalfw.mqtt.MQTTClient` against a real Mosquitto on loopback, started here. Readings are real
encoded 8x8 samples (`sqalfw.codec.encode_sample`, seq incrementing, ~800 bytes), taken at
interval 0 in simulated time (no sensors, no sleeping): each is appended to the spool and drained
the way the app's `_drain` does (peek, publish QoS 1, pop on PUBACK, one in flight).

  online   --readings readings sent and acknowledged, one by one (the steady state)
  outage   the broker is stopped; --outage readings are spooled; the broker comes back and the
           spool is drained

The spool is sized as the app sizes it for `spool_capacity` = --outage samples (1,100 bytes each,
at most that many records). A paho subscriber (CPython) counts what arrived: unique (boot, seq),
duplicates, missing. Printed: readings/s, the largest spool footprint on flash (sum of the spool
directory's file sizes, sampled after every online reading and every 20th outage reading), bytes
programmed and blocks erased per reading, append failures (ENOSPC), and the outage's delivery.

    .venv/bin/python bench/spool_flash.py [--readings 100000] [--outage 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.brokers import Mosquitto
from emulation.esp32.build import ensure_profile
from emulation.targets import ESP32_FLASH_BYTES

DEVICE_ID = "BENCH_SPOOL_01"
BOOT = 7
TOPIC = f"sqal/v1/{DEVICE_ID}/sample"

DEVICE = """
import asyncio, os, sys, time
from emulation.mpboard import flash as _flash
FLASH = _flash.mount(IMAGE, FLASH_SIZE)
from sqalfw import codec
from sqalfw.backoff import Backoff
from sqalfw.mqtt import MQTTClient
from sqalfw.spool import Spool

SPOOL = "/flash/spool"
spool = Spool(SPOOL, capacity=CAPACITY * 1100, max_records=CAPACITY)  # as the app sizes it
sample = {"v": 1, "device_id": DEVICE_ID, "boot": BOOT, "seq": 0, "ts": 1736850000000, "synced": True,
          "lot_id": "LOT_20250114_0042", "fw": "0.1.0",
          "tof": {"res": 8, "dist": [1500 + (i * 37) % 900 for i in range(64)],
                  "st": [5 if i % 7 else 9 for i in range(64)]},
          "spec": {"F1": 402, "F2": 598, "F3": 505, "F4": 1893, "F5": 904, "F6": 597, "F7": 1148, "F8": 751,
                   "CLEAR": 6497, "NIR": 603, "gain": 4.0, "atime": 29, "astep": 599, "sat": False},
          "q": {"score": 0.812, "grade": "A"}}
st = {"max_du": 0, "failed": 0, "enospc": 0, "size": 0}

def du():
    n = 0
    for e in os.ilistdir(SPOOL):
        n += e[3]
    if n > st["max_du"]:
        st["max_du"] = n

def take(seq):
    # one reading at interval 0: simulated time moves 100 ms a reading, nothing sleeps
    sample["seq"] = seq
    sample["ts"] = 1736850000000 + seq * 100
    rec = codec.encode_sample(sample)
    st["size"] += len(rec)
    try:
        spool.append(rec)
    except OSError as e:
        st["failed"] += 1
        if "28" in repr(e):
            st["enospc"] += 1

async def drain(c):
    # the app's _drain: oldest first, one in flight, a record leaves the spool on its PUBACK
    while len(spool):
        key, rec = spool.peek()
        if await c.publish(TOPIC, rec, 1, False, 30):
            spool.pop(key)

def mark():
    return time.ticks_ms(), FLASH.programmed, FLASH.erased

def report(tag, m, n):
    t, p, e = mark()
    print(tag, n, time.ticks_diff(t, m[0]), p - m[1], e - m[2], st["max_du"], st["failed"], st["enospc"],
          st["size"], len(spool))

async def main():
    c = MQTTClient(DEVICE_ID, "127.0.0.1", PORT, keepalive=30, clean_session=False,
                   backoff=Backoff(0.05, 0.5), stable_s=1)
    asyncio.create_task(c.run())
    await c.wait_connected()
    print("CONNECTED")
    m = mark()
    for seq in range(READINGS):
        take(seq)
        du()
        await drain(c)
        if seq % 10000 == 9999:
            print("PROGRESS", seq + 1)
    report("ONLINE", m, READINGS)
    st["max_du"] = st["size"] = 0
    while c.isconnected():  # the bench stops the broker now
        await asyncio.sleep_ms(10)
    m = mark()
    for seq in range(READINGS, READINGS + OUTAGE):
        take(seq)
        if seq % 20 == 0:
            du()
    du()
    report("SPOOLED", m, OUTAGE)
    await c.wait_connected()  # the bench restarts the broker
    m = mark()
    await drain(c)
    st["max_du"] = st["size"] = 0
    du()  # what is left on flash once the backlog is sent
    report("DRAINED", m, OUTAGE)
    await c.disconnect()

asyncio.run(main())
"""


class Subscriber:
    """paho, persistent session: counts unique (boot, seq) and duplicates, across a broker restart."""

    def __init__(self, broker: Mosquitto) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.duplicates = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-spool-sub", clean_session=False)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(TOPIC, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber: no SUBACK")

    def _on_message(self, c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        s = json.loads(m.payload)
        key = (int(s["boot"]), int(s["seq"]))
        with self._lock:
            if key in self.seen:
                self.duplicates += 1
            self.seen.add(key)

    def count(self, lo: int, hi: int) -> int:
        with self._lock:
            return sum(1 for b, s in self.seen if b == BOOT and lo <= s < hi)

    def wait_for(self, lo: int, hi: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (n := self.count(lo, hi)) < hi - lo and time.monotonic() < deadline:
            time.sleep(0.05)
        return n

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Device:
    """The MicroPython process; its stdout lines come through a queue."""

    def __init__(self, script: Path) -> None:
        self.proc = subprocess.Popen([str(ensure_profile()), "-X", "heapsize=110k", str(script)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=script.parent,
                                     env=dict(os.environ, MICROPYPATH=".frozen"))
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<EOF>")

    def expect(self, tag: str, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"device: no {tag} line within {timeout:.0f} s:\n" + "\n".join(self.log[-20:]))
            self.log.append(line)
            if line == "<EOF>":
                raise RuntimeError(f"device exited before {tag}:\n" + "\n".join(self.log[-20:]))
            if line.startswith("PROGRESS"):
                print(f"  {line.split()[1]} readings", flush=True)
            elif line.startswith(tag + " ") or line == tag:
                return [int(x) for x in line.split()[1:]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _phase(name: str, f: list[int]) -> dict[str, Any]:
    n, ms, programmed, erased, max_du, failed, enospc, size, left = f
    return {"phase": name, "readings": n, "s": ms / 1000, "readings_per_s": n / (ms / 1000) if ms else None,
            "programmed_per_reading": programmed / n, "erased_per_reading": erased / n, "max_spool_bytes": max_du,
            "append_failures": failed, "enospc": enospc, "mean_reading_bytes": size / n if size else None,
            "left_in_spool": left}


def run(readings: int, outage: int, workdir: Path) -> dict[str, Any]:
    broker = Mosquitto(workdir / "mosquitto")
    broker.start()
    sub = Subscriber(broker)
    script = workdir / "device.py"
    consts = (f"IMAGE = {str(workdir / 'flash.img')!r}\nFLASH_SIZE = {ESP32_FLASH_BYTES}\nPORT = {broker.port}\n"
              f"READINGS = {readings}\nOUTAGE = {outage}\nCAPACITY = {outage}\nDEVICE_ID = {DEVICE_ID!r}\n"
              f"BOOT = {BOOT}\nTOPIC = {TOPIC!r}\n")
    script.write_text(consts + DEVICE)
    dev = Device(script)
    try:
        dev.expect("CONNECTED", 60)
        print(f"online: {readings} readings, each sent and acknowledged before the next", flush=True)
        online = _phase("online", dev.expect("ONLINE", 3600))
        got_online = sub.wait_for(0, readings, 60)
        print(f"outage: broker stopped, {outage} readings spooled", flush=True)
        broker.stop()
        spooled = _phase("outage (spooling)", dev.expect("SPOOLED", 600))
        broker.start()
        print("outage: broker back, draining", flush=True)
        drained = _phase("outage (draining)", dev.expect("DRAINED", 600))
        got_outage = sub.wait_for(readings, readings + outage, 60)
        time.sleep(1)  # late duplicates, if any, arrive now
    finally:
        dev.stop()
        sub.close()
        broker.stop()
    return {"online": online, "spooled": spooled, "drained": drained, "capacity_records": outage,
            "capacity_bytes": outage * 1100, "online_received": got_online, "outage_received": got_outage,
            "duplicates": sub.duplicates, "outage_missing": outage - got_outage,
            "online_missing": readings - got_online}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=100_000, help="online readings (default 100000)")
    ap.add_argument("--outage", type=int, default=2000, help="readings spooled while the broker is away")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sqal-bench-spool-"))
    try:
        r = run(args.readings, args.outage, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    on, sp, dr = r["online"], r["spooled"], r["drained"]
    print()
    size = on["mean_reading_bytes"]
    print(f"spool: capacity {r['capacity_records']} records / {r['capacity_bytes']} bytes (spool_capacity="
          f"{r['capacity_records']}), on a {ESP32_FLASH_BYTES // 1024} KiB littlefs2 image; "
          f"readings of {on['mean_reading_bytes']:.0f} bytes")
    print("| phase | readings | readings/s | max spool bytes on flash | programmed B/reading | "
          "(x reading) | erases/reading | append failures | ENOSPC |")
    print("|---|---|---|---|---|---|---|---|---|")
    for p in (on, sp, dr):
        footprint = f"{p['max_spool_bytes']}" if p is not dr else f"{p['max_spool_bytes']} once drained"
        print(f"| {p['phase']} | {p['readings']} | {p['readings_per_s']:.0f} | {footprint} | "
              f"{p['programmed_per_reading']:.0f} | {p['programmed_per_reading'] / size:.2f} | "
              f"{p['erased_per_reading']:.3f} | {p['append_failures']} | {p['enospc']} |")
    print(f"online: {r['online_received']} of {on['readings']} received; outage: {sp['readings']} spooled "
          f"({sp['readings'] - sp['append_failures']} stored), {r['outage_received']} delivered, "
          f"{r['duplicates']} duplicates, {r['outage_missing']} missing; left in the spool: {dr['left_in_spool']}")
    ok = (on["enospc"] == sp["enospc"] == 0 and r["outage_missing"] == 0 and r["online_missing"] == 0
          and r["duplicates"] == 0 and on["programmed_per_reading"] <= 2 * size)
    print("bars (no ENOSPC, nothing missing, no duplicates, online wear <= 2x the reading):",
          "met" if ok else "NOT met")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
