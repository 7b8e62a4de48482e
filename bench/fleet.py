"""Largest fleet of emulated SQAL devices this machine runs at one sample per second per device
with zero loss, against Mosquitto; CPU and memory per device.

For each fleet size N (default 25, 50, 100, 200, 300, 500, 750, 1000; stops at the first failure):
start N devices (real firmware on MicroPython, 8x8 ToF, interval 1 s, telemetry every 10 s,
flash dirs on tmpfs), wait until every device has delivered a sample, then measure for --window
seconds. A step passes when
  - zero loss: no gap in any (device, boot) seq range received by the subscriber, nothing dropped
    from a spool, no device restarted;
  - no lag: every device delivered >= 95 % of window/interval samples, and its spool (last
    telemetry) holds <= 3 records.
Figures: CPU (user+sys) of the device processes per device-second, of Mosquitto and of this
runner (subscriber + fleet bookkeeping) per device-second; RSS and PSS per device process; the
machine's load and how busy its CPUs were in total (other users of the machine included).

With --per-process K (default 1: one MicroPython process per device) the devices run K to a
process (emulation/host.py); memory per device is then the processes' total over N.

    .venv/bin/python bench/fleet.py [--sizes 25,50,100] [--window 60] [--resolution 8] [--per-process K]
                                    [--heap SIZE] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.brokers import Mosquitto
from emulation.fleet import Fleet, process_usage


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = [int(x) for x in f]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def step(n: int, broker: Mosquitto, base: Path, window: float, interval: float, resolution: int,
         warmup_timeout: float, per_process: int = 1, heap: str | None = None) -> dict[str, Any]:
    fleet = Fleet(n, broker.url, interval=interval, seed=7, base_dir=base / f"n{n}", id_prefix="ESP32_BENCH",
                  telemetry_interval=10, resolution=resolution, per_process=per_process, heap=heap)
    r: dict[str, Any] = {"devices": n, "interval_s": interval, "resolution": resolution, "window_s": window,
                         "per_process": per_process}
    try:
        t0 = time.monotonic()
        fleet.start()
        ok = fleet.wait_delivered(1, warmup_timeout)
        r["startup_s"] = round(time.monotonic() - t0, 1)
        if not ok:
            r["pass"] = False
            r["why"] = f"not every device delivered a sample within {warmup_timeout:.0f} s of start"
            return r
        time.sleep(min(10.0, window / 4))  # settle: the boot burst (sensor uploads) is over
        u0 = fleet.usage()
        s0 = {s.device_id: s.received for s in fleet.stats()}
        b0 = process_usage(broker.proc.pid) if broker.proc else None
        me0 = _self_cpu()
        m0 = _machine_busy()
        l0 = os.getloadavg()[0]
        t1 = time.monotonic()
        time.sleep(window)
        dt = time.monotonic() - t1
        u1 = fleet.usage()
        stats = fleet.stats()
        b1 = process_usage(broker.proc.pid) if broker.proc else None
        me1 = _self_cpu()
        m1 = _machine_busy()
        l1 = os.getloadavg()[0]
        cpu = sum((u1[d]["user_s"] + u1[d]["sys_s"]) - (u0[d]["user_s"] + u0[d]["sys_s"]) for d in u1 if d in u0)
        got = [s.received - s0[s.device_id] for s in stats]
        want = dt / interval
        tot = fleet.totals(stats)
        r.update({
            "device_cpu_ms_per_device_s": round(1000 * cpu / (n * dt), 2),
            "broker_cpu_ms_per_device_s": round(1000 * ((b1["user_s"] + b1["sys_s"]) - (b0["user_s"] + b0["sys_s"]))
                                                / (n * dt), 3) if b0 and b1 else None,
            "runner_cpu_ms_per_device_s": round(1000 * (me1 - me0) / (n * dt), 3),
            # the processes' total over the devices (a process is one device, or a host of K)
            "rss_kb_per_device": round(sum(u["rss_kb"] for u in u1.values()) / n),
            "pss_kb_per_device": round(sum(u["pss_kb"] for u in u1.values()) / n),
            "processes": len(u1),
            "heap": fleet.heap or (fleet.hosts[0].heap if fleet.hosts else fleet.devices[0].heap),
            "samples_per_device_s_min": round(min(got) / dt, 3),
            "samples_per_device_s_mean": round(sum(got) / len(got) / dt, 3),
            "missing": tot["missing"], "dropped": tot["dropped"], "duplicates": tot["duplicates"],
            "restarts": tot["boots"] - n, "max_spool": max(s.spool for s in stats),
            "machine_cpu_busy_pct": round(100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 1),
            "loadavg_1m": [round(l0, 2), round(l1, 2)],
            "cores": os.cpu_count(),
        })
        problems = []
        if tot["missing"] or tot["dropped"]:
            problems.append(f"loss: {tot['missing']} missing, {tot['dropped']} dropped")
        if tot["boots"] != n:
            problems.append(f"{tot['boots'] - n} device restart(s)")
        if min(got) < 0.95 * want:
            problems.append(f"lag: slowest device delivered {min(got)} of {want:.0f} samples")
        if r["max_spool"] > 3:
            problems.append(f"lag: a spool holds {r['max_spool']} records")
        if fleet.monitor.bad:
            problems.append(f"{fleet.monitor.bad} messages broke the contract")
        r["pass"] = not problems
        r["why"] = "; ".join(problems)
        if problems:  # what the slowest device says about itself
            slow = min(range(n), key=lambda i: got[i])
            r["slowest_device_log_tail"] = fleet.devices[slow].log()[-600:]
        return r
    finally:
        fleet.stop(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="25,50,100,200,300,500,750,1000")
    ap.add_argument("--window", type=float, default=60.0, help="measurement window per step, s")
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=8, choices=(4, 8))
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                    help="where flash dirs go (default tmpfs: emulated flash, not the host disk, is measured)")
    ap.add_argument("--per-process", type=int, default=1,
                    help="devices per MicroPython process (1: one process per device)")
    ap.add_argument("--heap", help="-X heapsize per process (default: the ESP32 equivalent, per device)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="sqal-bench-fleet-", dir=args.dir))
    broker = Mosquitto(base / "mosquitto", extra_config=["max_connections -1"])
    broker.start()
    results = []
    try:
        for n in sizes:
            print(f"--- {n} devices", flush=True)
            r = step(n, broker, base, args.window, args.interval, args.resolution, warmup_timeout=60 + n * 0.5,
                     per_process=args.per_process, heap=args.heap)
            results.append(r)
            print(json.dumps(r), flush=True)
            shutil.rmtree(base / f"n{n}", ignore_errors=True)
            if not r["pass"]:
                break
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    best = max((r["devices"] for r in results if r["pass"]), default=0)
    print(f"largest fleet at {1 / args.interval:g} sample/s per device with zero loss: {best} devices"
          f" ({args.per_process} per process)")
    print("| devices | pass | device CPU ms/dev-s | broker | runner | PSS kB/dev | RSS kB/dev | rate min | "
          "machine busy % | load | why |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['devices']} | {'yes' if r['pass'] else 'NO'} | {r.get('device_cpu_ms_per_device_s')} | "
              f"{r.get('broker_cpu_ms_per_device_s')} | {r.get('runner_cpu_ms_per_device_s')} | "
              f"{r.get('pss_kb_per_device')} | {r.get('rss_kb_per_device')} | {r.get('samples_per_device_s_min')} | "
              f"{r.get('machine_cpu_busy_pct')} | {r.get('loadavg_1m')} | {r.get('why', '')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
