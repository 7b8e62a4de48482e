"""The heap bar on the emulator's ESP32 profile: the board's figures.

The profile (emulation/esp32/build.py) is MicroPython's unix port built 32-bit with single-precision
floats, the firmware frozen from firmware/manifest.py and the device side of the emulation (emulated
board, sensor models, scene) frozen beside it. Frozen code costs no heap, as on a board, so the heap
given is the board's: `-X heapsize=110k`, what an ESP32-WROOM without PSRAM leaves to Python.

What runs (a MicroPython script on the profile, below): the firmware's App as `sqalfw.app.boot`
builds it on an emulated board (2 MiB littlefs2 flash image, config.json provisioned as a deploy
would): MQTT client with its will and birth, spool on the flash, sampler and drivers, commands,
telemetry; then `App.run()`, every task of the firmware, connected to a real Mosquitto on loopback
(started here): each 8x8 sample goes through the spool and is published QoS 1 and acknowledged,
telemetry every 5 s. Two things differ from a device in the field, both only to make 10,000 cycles
take minutes, neither touching an allocation: the sample interval is set on the App to 1 ms (the
config's minimum is 100 ms; telemetry reports 0.1 s, the contract's minimum), and the sensor
models' clock runs 1000x fast (`sensor_time_scale`), with the AS7341 driver told the same scaled
integration time (it sleeps through it).

The app calls `board.collect()` after every cycle; the script's board records, right after that
collection, the heap free and in use. The run stops (the board's stop request, as `sqal` stops a
device) once --cycles cycles have run.

Figures (bytes):
  min free after collect   the bar: at least 30 KB (30,720 B) after every cycle's collection
  min free before collect  the app's own low-water mark (`mem_min_free`, garbage included)
  live total               heap in use after a cycle's collection, worst cycle (everything in the
                           interpreter: the firmware, the emulated board, the sensor models)
  models                   the sensor models and the scene, which share the interpreter in
                           emulation but are other chips on a board: the heap their modules take at
                           import (the scene's fixed-point tables), plus what the models and scene
                           hold, measured twice: once built (the heap the board's first `i2c()` call
                           takes, between two collections) and after the last cycle (the heap freed
                           when the last reference to them goes, the drivers detached first)
  firmware live            live total - models (the larger of the two) - the interpreter's own
                           state and this script (measured at its start). The emulated board (the
                           stand-in for board_esp32, littlefs's buffers included) is counted with
                           the firmware: on a board those are in the heap too.

--bisect also finds the smallest -X heapsize (1 KB steps) at which --bisect-cycles cycles pass with
no MemoryError anywhere, every cycle sampled, no task crashed and no sensor degraded; the 30 KB
floor is not part of that test (it is the margin above it).

    flock /tmp/sqal-bench.lock .venv/bin/python bench/firmware_heap_esp32.py [--cycles 10000] [--heap 110k]
        [--bisect] [--bisect-cycles 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.brokers import Mosquitto
from emulation.device import EmulatedDevice
from emulation.esp32.build import ensure_profile

DEVICE_ID = "ESP32_HEAP_01"
SENSOR_TIME_SCALE = 1000  # the sensor models' clock runs this much faster than real time
INTERVAL_S = 0.001        # set on the App (below config's 0.1 s minimum): cycles back to back
FLOOR = 30 * 1024         # the bar: free heap after every cycle's collection
BOARD_HEAP = "110k"       # an ESP32-WROOM without PSRAM (emulation/targets.py, "esp32")

SCRIPT = """
import gc, sys
gc.collect()
S0 = gc.mem_alloc()
import asyncio
from sqalfw import app as fwapp, backoff, codec, commands, config, identity, link, mqtt, quality
from sqalfw import sampler, spool, telemetry
from sqalfw.drivers import as7341, i2cbus, vl53l8
from emulation.mpboard import board as eboard, control, exitcodes, flash, net, wdt
gc.collect()
S1 = gc.mem_alloc()
from emulation.mpboard import sensors
from emulation.peripherals import as7341 as m_as, bus, fwblob, profiles, scene, vl53l8 as m_vl
gc.collect()
S2 = gc.mem_alloc()
host, n, scale, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
_im = as7341.AS7341.integration_ms
as7341.AS7341.integration_ms = lambda self: _im(self) / scale
b = eboard.Board(host)
M = [0]
_i2c = b.i2c
def i2c(*a, **k):
    if b._i2c is not None:
        return _i2c(*a, **k)
    gc.collect()
    m0 = gc.mem_alloc()
    r = _i2c(*a, **k)
    gc.collect()
    M[0] = gc.mem_alloc() - m0
    return r
b.i2c = i2c
R = [0, 1 << 30, 0]
def collect():
    gc.collect()
    R[0] += 1
    f = gc.mem_free()
    if f < R[1]:
        R[1] = f
    u = gc.mem_alloc()
    if u > R[2]:
        R[2] = u
    if R[0] >= n:
        b.stop_requested = True
b.collect = collect
app = fwapp.boot(b)
app.cfg.sample_interval_s = interval
_tb = app.telemetry.build
def tb():
    t = _tb()
    t["sample_s"] = 0.1  # the contract's range; the bench's interval is below it
    return t
app.telemetry.build = tb
gc.collect()
S3 = gc.mem_alloc()
async def main():
    await app.run()
    await asyncio.sleep_ms(100)  # the tasks run() cancelled unwind (their frames hold the drivers)
asyncio.run(main())
s = app.sampler
c = app.client
print("RESULT", R[0], s.sampled, s.cycle_errors, c.acked, len(app.spool), app.spool.dropped, R[1], R[2],
      b.mem_min_free(), S0, S1 - S0, S2 - S1, S3, M[0], gc.mem_free() + gc.mem_alloc())
print("STATE", "ok" if app.crashed is None and not s.degraded else repr((app.crashed, s.degraded, s.errors)))
gc.collect()
sens = b.sensors
b.sensors = None
b._i2c = None
s.tof = s.spec = s.bus = None
gc.collect()
u2 = gc.mem_alloc()
sens = None
gc.collect()
print("MODELS", u2 - gc.mem_alloc())
sys.exit(0)
"""

RESULT_FIELDS = ("cycles", "sampled", "cycle_errors", "acked", "spool_depth", "spool_dropped", "min_free_after_gc",
                 "max_live_total", "min_free_before_gc", "interpreter_and_script", "firmware_and_board_modules",
                 "model_modules", "after_boot", "models_built", "heap_total")


def _prepare(flash: Path, broker_url: str) -> None:
    dev = EmulatedDevice(DEVICE_ID, flash, broker_url, interval=0.1, telemetry_interval=5.0, resolution=8,
                         config={"tof_frequency_hz": 15},
                         emulation={"sensor_time_scale": SENSOR_TIME_SCALE, "profile": "default", "seed": 7},
                         target="esp32")
    dev.prepare()


def run_once(cycles: int, heap: str, broker_url: str, workdir: Path | None = None,
             timeout: float = 3600) -> dict[str, Any]:
    """One run on the profile at `heap` against the broker. The figures, with `passed` (no
    MemoryError, every cycle sampled, nothing crashed or degraded) and `output` (its last lines)."""
    binary = str(ensure_profile())
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        flash = Path(tmp) / "device"
        _prepare(flash, broker_url)
        script = Path(tmp) / "heap_esp32.py"
        script.write_text(SCRIPT)
        t0 = time.monotonic()
        try:
            proc = subprocess.run([binary, "-X", f"heapsize={heap}", str(script), str(flash), str(cycles),
                                   str(SENSOR_TIME_SCALE), str(INTERVAL_S)],
                                  capture_output=True, text=True, cwd=tmp, env=dict(os.environ, MICROPYPATH=".frozen"),
                                  timeout=timeout, check=False)
            out, rc = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            out, rc = out + f"\n(timed out after {timeout:.0f} s)", -1
        wall = time.monotonic() - t0
    r: dict[str, Any] = {"heap": heap, "rc": rc, "wall_s": round(wall, 1)}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            r.update(zip(RESULT_FIELDS, (int(x) for x in line.split()[1:]), strict=True))
        elif line.startswith("STATE "):
            r["state"] = line[6:]
        elif line.startswith("MODELS "):
            r["models_end"] = int(line.split()[1])
    lines = out.splitlines()
    errors = [i for i, x in enumerate(lines) if "MemoryError" in x or "memory allocation failed" in x]
    r["memory_errors"] = len(errors)
    if errors:  # the first traceback's last line and innermost frame, else the first line saying it
        i = next((k for k in errors if lines[k].startswith("MemoryError:")), errors[0])
        frame = lines[i - 1].strip() if i and lines[i - 1].strip().startswith("File") else ""
        r["first_memory_error"] = (lines[i].strip() + (f" at {frame}" if frame else ""))[:300]
    r["passed"] = bool(rc == 0 and "models_end" in r and r["memory_errors"] == 0 and r["cycle_errors"] == 0
                       and r["sampled"] == r["cycles"] >= cycles and r.get("state") == "ok")
    if "models_end" in r:
        models = max(r["models_built"], r["models_end"])
        r["models_live"] = models
        r["models_total"] = models + r["model_modules"]
        r["max_live_firmware"] = r["max_live_total"] - r["models_total"] - r["interpreter_and_script"]
        r["floor_met"] = r["min_free_after_gc"] >= FLOOR
    r["output_tail"] = "\n".join(lines[-40:])
    return r


def bisect(broker_url: str, cycles: int, lo_kb: int = 40, hi_kb: int = 110,
           workdir: Path | None = None) -> tuple[int | None, list[dict[str, Any]]]:
    """The smallest heap (KB) in lo..hi at which `cycles` cycles pass (see run_once), assuming that
    a heap that passes passes at any larger size. None when hi fails."""
    probes = []
    top = run_once(cycles, f"{hi_kb}k", broker_url, workdir, timeout=600)
    probes.append(top)
    if not top["passed"]:
        return None, probes
    while hi_kb - lo_kb > 1:
        mid = (lo_kb + hi_kb) // 2
        r = run_once(cycles, f"{mid}k", broker_url, workdir, timeout=600)
        probes.append(r)
        print(f"  heap {mid} KB: {'pass' if r['passed'] else 'fail'}"
              + (f", min free after collect {r['min_free_after_gc']} B" if "min_free_after_gc" in r else "")
              + (f", {r['first_memory_error']}" if "first_memory_error" in r else ""), flush=True)
        if r["passed"]:
            hi_kb = mid
        else:
            lo_kb = mid
    return hi_kb, probes


def describe(r: dict[str, Any]) -> str:
    if "models_end" not in r:
        return f"heap {r['heap']}: FAILED (rc {r['rc']})\n{r['output_tail']}"
    run = (f"heap {r['heap']} ({r['heap_total']} B in the GC heap): {r['cycles']} cycles, {r['sampled']} sampled, "
           f"{r['cycle_errors']} cycle errors, {r['memory_errors']} MemoryError, {r['acked']} PUBACKs, "
           f"spool {r['spool_depth']} left / {r['spool_dropped']} dropped, {r['wall_s']} s")
    free = (f"free after each cycle's collection: min {r['min_free_after_gc']} B "
            f"(bar {FLOOR} B: {'met' if r['floor_met'] else 'NOT met'}); before it (garbage included): "
            f"min {r['min_free_before_gc']} B")
    live = (f"live after collection, worst cycle: {r['max_live_total']} B in all = firmware "
            f"{r['max_live_firmware']} B + sensor models and scene {r['models_total']} B (modules "
            f"{r['model_modules']} B + objects {r['models_live']} B: {r['models_built']} B built, "
            f"{r['models_end']} B after the last cycle) + interpreter and bench script "
            f"{r['interpreter_and_script']} B")
    boot = (f"firmware and board modules imported: {r['firmware_and_board_modules']} B; heap in use after boot "
            f"(App built, before run): {r['after_boot']} B")
    return "\n".join([run, free, live, boot, f"state: {r['state']}"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--heap", default=BOARD_HEAP, help="-X heapsize of the main run (default: the board's 110k)")
    ap.add_argument("--bisect", action="store_true", help="also find the smallest heap that passes")
    ap.add_argument("--bisect-cycles", type=int, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        try:
            r = run_once(args.cycles, args.heap, broker.url)
            print(describe(r), flush=True)
            out["main"] = r
            if args.bisect:
                print(f"bisecting -X heapsize over {args.bisect_cycles} cycles a probe:", flush=True)
                smallest, probes = bisect(broker.url, args.bisect_cycles)
                out["smallest_kb"], out["probes"] = smallest, probes
                if smallest is None:
                    print("smallest heap: none passes at 110 KB")
                else:
                    best = next(p for p in probes if p["heap"] == f"{smallest}k")
                    print(f"smallest heap that passes {args.bisect_cycles} cycles: {smallest} KB "
                          f"(min free after collect there {best['min_free_after_gc']} B; "
                          f"{smallest - 1} KB fails)")
        finally:
            broker.stop()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0 if out["main"]["passed"] and out["main"].get("floor_met") else 1


if __name__ == "__main__":
    sys.exit(main())
