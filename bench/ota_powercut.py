"""Power cuts at every step of an over-the-air update on the ESP32 profile's littlefs2 flash
(emulation/ota_powercut.py): --runs cuts (100 by default) spread over every phase that writes to
flash (the download's start, the manifest, each file, the switch, the first boot, the
confirmation: its first page, its last, its middle, then pages drawn at random), each followed by
what a board does after a cut (power back on, the sender resumes, the boot goes on) and one more
boot. Prints the phases, each run's outcome by phase (new release confirmed, or old one with the
rollback's reason), the time per run, and fails (exit 1) if any board did not end on a slot whose
files match its manifest.

    .venv/bin/python bench/ota_powercut.py [--runs 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from emulation import ota_powercut
from emulation.esp32.build import ensure_profile
from gateway.ota import release as rel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    binary = str(ensure_profile())
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        pub = rel.keygen(tmp / "keys" / "release.pem")
        key = rel.load_private(tmp / "keys" / "release.pem")
        old = rel.build("0.2.0", key, tmp / "releases")
        new = rel.build("0.3.0", key, tmp / "releases")
        base = tmp / "base.img"
        ota_powercut.prepare_base(binary, base, pub, old.directory, "0.2.0")
        phases = ota_powercut.calibrate(binary, base, tmp, new.directory, "0.3.0")
        print(f"update {old.version} -> {new.version} ({len(new.files)} files, {new.size} bytes) on a 2 MiB "
              f"littlefs2 image; flash page operations per phase:")
        for step, name, first, last in phases:
            print(f"  {step} {name:<36} pages {first}-{last}")
        outcomes: Counter[tuple[str, str, str]] = Counter()
        bad = []
        t0 = time.monotonic()
        for step, page in ota_powercut.cut_points(phases, args.runs, args.seed):
            o = ota_powercut.cut_run(binary, base, tmp, new.directory, "0.3.0", step, page)
            st = o.final["status"]
            ok = (o.final["boot"]["slot"] in ("a", "b") and o.phase != "none" and (
                (o.version == "0.3.0" and st["state"] == "confirmed" and st["slot"] == "b")
                or (o.version == "0.2.0" and st["state"] == "rolled_back" and st["slot"] == "a")))
            if not ok:
                bad.append(f"cut at {step} page {page} ({o.phase}): {o.steps} -> {st}")
            phase = "A: write sqalfw/*.mpy" if o.phase.startswith("A: write sqalfw/") else o.phase
            outcomes[(phase, o.version, st.get("reason") or st["state"])] += 1
        elapsed = time.monotonic() - t0
    print(f"\n{args.runs} power cuts in {elapsed:.1f} s ({elapsed / args.runs * 1000:.0f} ms a run, "
          "each 3-4 power-ups of the profile):")
    print(f"  {'cut during':<28} {'runs':>5}  ends on   the board says")
    for (phase, version, said), n in sorted(outcomes.items()):
        print(f"  {phase:<28} {n:>5}  {version:<8} {said}")
    print(f"every board on a working slot: {'yes' if not bad else 'NO'}")
    for b in bad:
        print("  " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
