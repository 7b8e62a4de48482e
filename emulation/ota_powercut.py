"""Power cuts at every step of an over-the-air update, on the ESP32 profile's littlefs2 flash.

A run is what a board lives through, each power-up one process of the profile's interpreter over
the same flash image (2 MiB littlefs2, `emulation/mpboard/flash.py`):

    A  boot (the old release, confirmed), then the update: manifest, each file, verify, switch
    B  the first boot of the new slot (probation), then the health check's confirmation
    (any boot that finds itself on probation confirms: the application's health check is taken
    as passed, this tests the flash and the boot loader, not the application)
    C  one more boot: which slot runs, its files checked against its manifest, its application
       imported, and the board's own account (ota_status)

The cut: in one of these power-ups, after its n-th flash page operation (a 256-byte program or the
erase of one of a block's pages), the process is killed with SIGKILL, so that page's block is
left part old, part new, as a chip leaves it. After a cut the board powers up again: the update
is resumed by the sender (process A again, which asks where the download stands), or the boot
goes on (B again), then C. The bar: after every cut the board runs a slot whose files match its
manifest, old or new, and says which (confirmed, or rolled back with the reason).

Used by tests/firmware/test_ota_board.py (a sample of cut points) and bench/ota_powercut.py (100).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLASH_BYTES = 2 * 1024 * 1024
HEAP = "4M"  # an application slot's bytecode lives in the heap: a board with PSRAM (docs/ota.md)

_SCRIPT = r"""
import json, os, sys, time, vfs
from emulation.mpboard import flash as _flash

CUT = {cut}
STEP = {step!r}
PHASE = ["mount"]
COUNT = [0]
MARKS = []  # [phase, page count when it began]


def phase(name):
    if name != PHASE[0]:
        PHASE[0] = name
        MARKS.append([name, COUNT[0]])


def _tick():
    COUNT[0] += 1
    if COUNT[0] == CUT:
        print("CUT " + json.dumps({{"phase": PHASE[0], "page": COUNT[0]}}))
        os.system("kill -9 $PPID")
        while True:
            time.sleep(1)


class CutFlash(_flash.FileFlash):
    def _program(self, pos, buf):
        mv = memoryview(buf)
        f = self._f
        f.seek(pos)
        for i in range(0, len(mv), 256):
            _tick()
            f.write(mv[i:i + 256])
        self.programmed += len(mv)

    def _erase(self, block):
        f = self._f
        f.seek(block * self.block_size)
        for _ in range(self.block_size // 256):
            _tick()
            f.write(self._erased_page)
        self.erased += 1


bdev = CutFlash({image!r}, {size})
try:
    fs = vfs.VfsLfs2(bdev)
except OSError:
    vfs.VfsLfs2.mkfs(bdev)
    fs = vfs.VfsLfs2(bdev)
vfs.mount(fs, "/flash")
FD = "/flash"

from sqalboot import install, run, slots


class Board:
    flash_dir = FD

    def __init__(self, cause):
        self.cause = cause

    def ticks_ms(self):
        return time.ticks_ms()

    def reset_cause(self):
        return self.cause

    def log(self, line):
        print(line)


def boot(cause):
    phase("boot")
    d = slots.select(Board(cause), print)
    if d is not None:
        run._use_slot(d)
    import sqalfw
    from sqalfw import app  # the slot's application loads
    return sqalfw.VERSION


def confirm():
    phase("confirm")
    if slots.BOOT["probation"]:
        for k in ("wifi", "broker", "tof", "spec", "acked"):
            slots.mark(k)
        slots.confirm(FD)


def update(rel, version):
    inst = install.Installer(FD, slots.BOOT["version"] or "factory")
    orig = install.Installer.switch

    def switch(self, dl):
        phase("switch")
        orig(self, dl)

    install.Installer.switch = switch
    raw = open(rel + "/manifest.json", "rb").read()
    sig = open(rel + "/manifest.sig").read().strip()
    st = inst.status()
    if st.get("version") == version:
        return st  # switched before the cut (confirmed in this boot's health check)
    phase("begin")
    st = inst.begin(version, len(raw), sig)  # a download of the same release resumes
    while st.get("state") == "downloading":
        path, have = st["path"], st["have"]
        phase("write " + path)
        with open(rel + "/" + path, "rb") as f:
            f.seek(have)
            data = f.read(600)
        st = inst.chunk(path, have, data)
    return st


cause = {cause!r}
ver = boot(cause)
out = {{"step": STEP, "booted": ver, "boot": dict((k, slots.BOOT[k]) for k in ("slot", "cause", "probation", "version"))}}
if slots.BOOT["probation"]:
    confirm()  # the application's health check passes (this harness tests the flash, not the app)
elif STEP == "A":
    out["update"] = update({release!r}, {version!r})
out["status"] = install.Installer(FD, ver).status()
out["pages"] = COUNT[0]
out["phases"] = MARKS
print("RESULT " + json.dumps(out))
"""


@dataclass
class StepResult:
    cut: dict[str, Any] | None  # {"phase", "page"} when the power was cut in this step
    result: dict[str, Any] | None
    output: str


def _step(binary: str, image: Path, step: str, release: Path, version: str, *, cut: int = 0,
          cause: str = "power-on") -> StepResult:
    code = _SCRIPT.format(cut=cut, step=step, image=str(image), size=FLASH_BYTES, release=str(release),
                          version=version, cause=cause)
    proc = subprocess.run([binary, "-X", f"heapsize={HEAP}", "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, env=dict(os.environ, MICROPYPATH=".frozen"),
                          cwd=str(image.parent))
    cut_info = result = None
    for line in proc.stdout.splitlines():
        if line.startswith("CUT "):
            cut_info = json.loads(line[4:])
        elif line.startswith("RESULT "):
            result = json.loads(line[7:])
    if cut_info is None and (proc.returncode != 0 or result is None):
        raise RuntimeError(f"step {step} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return StepResult(cut_info, result, proc.stdout)


def prepare_base(binary: str, image: Path, key_hex: str, old: Path, old_version: str) -> None:
    """A board running `old` from slot a, confirmed: factory -> update -> probation -> confirmed."""
    image.unlink(missing_ok=True)
    # the release key goes on the flash the way a deploy puts it: written by the board itself
    code = (f"import vfs\nfrom emulation.mpboard import flash\nflash.mount({str(image)!r}, {FLASH_BYTES})\n"
            f"f = open('/flash/ota_key.pub', 'w')\nf.write({key_hex!r})\nf.close()\n")
    subprocess.run([binary, "-c", code], check=True, capture_output=True, env=dict(os.environ, MICROPYPATH=".frozen"))
    a = _step(binary, image, "A", old, old_version)
    assert a.result is not None and a.result["update"]["state"] == "pending", a.output
    b = _step(binary, image, "B", old, old_version, cause="soft")
    assert b.result is not None and b.result["status"]["state"] == "confirmed", b.output


def calibrate(binary: str, base: Path, work: Path, new: Path, new_version: str) -> list[tuple[str, str, int, int]]:
    """The phases of an uncut update, in order: (step, phase, first page, last page) of the flash
    page operations each made (the phases that wrote nothing are left out)."""
    image = work / "flash.img"
    shutil.copy(base, image)
    a = _step(binary, image, "A", new, new_version, cause="soft")
    b = _step(binary, image, "B", new, new_version, cause="update")
    assert a.result is not None and b.result is not None
    out = []
    for step, r in (("A", a.result), ("B", b.result)):
        marks = [(str(n), int(c)) for n, c in r["phases"]] + [("end", int(r["pages"]))]
        for (name, start), (_, end) in itertools.pairwise(marks):
            if end > start:
                out.append((step, name, start + 1, end))
    return out


def cut_points(phases: list[tuple[str, str, int, int]], runs: int, seed: int = 1) -> list[tuple[str, int]]:
    """`runs` cut points covering every phase: its first page, its last and one in the middle,
    then pages drawn at random (seeded) over the whole update."""
    import random

    points: list[tuple[str, int]] = []
    for step, _, first, last in phases:
        for page in (first, (first + last) // 2, last):
            if (step, page) not in points:
                points.append((step, page))
    rng = random.Random(seed)
    while len(points) < runs:
        step, _, first, last = rng.choice(phases)
        page = rng.randint(first, last)
        if (step, page) not in points:
            points.append((step, page))
    return points[:runs]


@dataclass
class Outcome:
    step: str
    page: int
    phase: str
    final: dict[str, Any]  # step C's result
    steps: list[str]

    @property
    def version(self) -> str:
        return str(self.final["booted"])


def cut_run(binary: str, base: Path, work: Path, new: Path, new_version: str, step: str, page: int) -> Outcome:
    """One update with the power cut at `page` of `step` ("A" or "B"), then what follows a cut."""
    image = work / "flash.img"
    shutil.copy(base, image)
    trail: list[str] = []
    phase = "none"
    order = ["A", "B"]
    i = 0
    cause = "soft"
    while i < len(order):
        s = order[i]
        cut = page if s == step and phase == "none" else 0
        r = _step(binary, image, s, new, new_version, cut=cut, cause=cause)
        if r.cut is not None:
            phase = f"{s}: {r.cut['phase']}"
            trail.append(f"{s} cut at page {page} ({r.cut['phase']})")
            cause = "power-on"
            continue  # the power comes back: the same step again (the sender resumes; the boot goes on)
        trail.append(s)
        cause = "update" if s == "A" else "soft"
        i += 1
    c = _step(binary, image, "C", new, new_version, cause="power-on")
    assert c.result is not None
    trail.append("C")
    return Outcome(step, page, phase, c.result, trail)
