"""Heap figures of the SQAL firmware's sample cycle on the 64-bit wheel (target unix64): a model.

The board's figures are bench/firmware_heap_esp32.py's, on the emulator's ESP32 profile (32-bit,
firmware frozen, the board's 110 KB heap, the whole App with MQTT). This one is for the wheel: its
interpreter cannot freeze modules, so the heap given is the measured code heap + 110 KB, and its
objects are 64-bit; use it to compare firmware rounds on the wheel (docs/firmware.md, "Memory").

Runs N sample cycles in-process with the emulated board (scene -> sensor models -> drivers ->
quality -> codec -> spool on a host directory), no network, no App, and prints:
  code heap      heap taken by the imported modules (frozen into flash on an ESP32: 0 there)
  heap size      -X heapsize given = code heap + 110 KB (the data budget of an ESP32 w/o PSRAM)
  live data      heap in use after init and gc, beyond the code
  peak data      largest heap in use at any cycle end before gc.collect(), beyond the code (garbage
                 included: the collector also runs by itself whenever the heap fills, so this sits
                 near the budget once a cycle's garbage is large)
  max live data  largest heap in use right after a cycle's gc.collect(), beyond the code
  per-cycle      bytes the firmware allocates per cycle for grading, encoding and spooling (gc off
                 while measuring; the emulation-only sensor models/scene are left out)

    flock /tmp/sqal-bench.lock .venv/bin/python bench/firmware_heap.py [--cycles 10000] [--resolution 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emulation.device import ESP32_FREE_HEAP, EmulatedDevice, ensure_mpy_cache, micropython_binary

SENSOR_TIME_SCALE = 1000  # the sensor models' clock runs this much faster than real time

CYCLE_MODULES = ("asyncio", "sqalfw.sampler", "sqalfw.config", "sqalfw.identity", "sqalfw.spool",
                 "emulation.mpboard.board", "emulation.mpboard.sensors", "emulation.peripherals.vl53l8",
                 "emulation.peripherals.as7341", "emulation.peripherals.bus", "emulation.peripherals.scene")

SCRIPT = """
import gc, sys, time
gc.collect()
base = gc.mem_alloc()
import asyncio
from emulation.mpboard.board import Board
from sqalfw import config, identity
from sqalfw.spool import Spool
from sqalfw.sampler import Sampler
flash, n, scale = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
board = Board(flash)
cfg = config.load(flash)
ident = identity.Identity(flash, cfg.device_id)
ident.start(cfg.safe_mode_after)
# a capped spool drained as the transport would: oldest popped once 20 are waiting
spool = Spool(flash + "/spool", capacity=64 * 1100, max_records=64)
s = Sampler(board, cfg, ident, spool)
if not s.init_sensors():
    print("DEGRADED", s.errors)
    sys.exit(3)
# The sensor models' clock runs `scale` times fast here (sensor_time_scale); the AS7341 driver sleeps
# through the integration time it configured (2 x ~50 ms a cycle), so it is told the same scaled time.
# Only the waits change: the passes, counts and allocations are the firmware's own.
_t = s.spec.integration_ms() / scale
s.spec.integration_ms = lambda: _t
gc.collect()
code_and_live = gc.mem_alloc() - base

async def main():
    peak = 0
    live_max = 0
    per_cycle = []
    t0 = time.ticks_ms()
    for i in range(n):
        rec = await s.cycle()
        if rec is None:
            print("DEGRADED", s.errors)
            sys.exit(3)
        while len(spool) > 20:
            k, _ = spool.peek()
            spool.pop(k)
        used = gc.mem_alloc() - base
        if used > peak:
            peak = used
        gc.collect()
        used = gc.mem_alloc() - base
        if used > live_max:
            live_max = used
    dt = time.ticks_diff(time.ticks_ms(), t0)
    # firmware-side allocation of one cycle (the sensor models and scene run only in emulation and
    # allocate far more, so they are left out): grade + encode + spool append, gc off meanwhile
    from sqalfw import codec, quality
    dist, st = await s.tof.measure()
    ch = await s.spec.measure()
    for _ in range(3):
        gc.collect()
        a = gc.mem_alloc()
        gc.disable()
        q = quality.analyze(dist, st, cfg.resolution, ch)
        rec = codec.encode_sample(s._sample)
        spool.append(rec)
        per_cycle.append(gc.mem_alloc() - a)
        gc.enable()
    gc.collect()
    print("RESULT", peak, code_and_live, gc.mem_alloc() - base, max(per_cycle), dt, s.sampled, live_max)

asyncio.run(main())
"""


def code_heap(cache: Path) -> int:
    probe = ("import gc\ngc.collect()\nb = gc.mem_alloc()\n"
             f"for m in {list(CYCLE_MODULES)!r}:\n    __import__(m)\n"
             "gc.collect()\nprint(gc.mem_alloc() - b)\n")
    out = subprocess.run([micropython_binary(), "-X", "heapsize=2M", "-c", probe], capture_output=True,
                         text=True, env={"MICROPYPATH": f"{cache}:.frozen"}, timeout=60, check=True)
    return int(out.stdout.split()[-1])


def run(cycles: int, resolution: int = 8, workdir: Path | None = None) -> dict[str, Any]:
    """Run the cycle loop; returns the figures (bytes, ms). Raises RuntimeError with the output on failure."""
    cache = ensure_mpy_cache()
    code = code_heap(cache)
    heap = code + ESP32_FREE_HEAP
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        flash = Path(tmp) / "flash"
        dev = EmulatedDevice("ESP32_HEAP_01", flash, "mqtt://127.0.0.1:1", interval=1, resolution=resolution,
                             config={"tof_frequency_hz": 60 if resolution == 4 else 15},
                             emulation={"sensor_time_scale": SENSOR_TIME_SCALE, "profile": "default", "seed": 7})
        dev.prepare()
        script = Path(tmp) / "heap_cycles.py"
        script.write_text(SCRIPT)
        t0 = time.monotonic()
        proc = subprocess.run(
            [micropython_binary(), "-X", f"heapsize={heap}", str(script), str(flash), str(cycles),
             str(SENSOR_TIME_SCALE)],
            capture_output=True, text=True, env={"MICROPYPATH": f"{cache}:.frozen"}, timeout=3600, check=False)
        wall = time.monotonic() - t0
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"cycle loop failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    peak, live, end, per_cycle, dt, sampled, live_max = (int(x) for x in line[0].split()[1:])
    return {
        "cycles": cycles, "sampled": sampled, "resolution": resolution, "heapsize": heap, "code_heap": code,
        "data_budget": ESP32_FREE_HEAP, "live_data": live - code, "peak_data": peak - code,
        "end_data": end - code, "max_live_data": live_max - code, "per_cycle_alloc": per_cycle, "min_headroom": heap - peak,
        "ms_per_cycle": round(dt / cycles, 2), "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=10000)
    ap.add_argument("--resolution", type=int, default=8, choices=(4, 8))
    args = ap.parse_args()
    r = run(args.cycles, args.resolution)
    print(json.dumps(r, indent=1))
    print(f"code heap {r['code_heap']} B (frozen on ESP32), heapsize {r['heapsize']} B = code + 110 KB")
    print(f"data: live {r['live_data']} B (max after gc {r['max_live_data']} B), peak {r['peak_data']} B "
          f"of {r['data_budget']} B, "
          f"per-cycle allocation {r['per_cycle_alloc']} B, {r['cycles']} cycles, "
          f"{r['ms_per_cycle']} ms/cycle")


if __name__ == "__main__":
    main()
