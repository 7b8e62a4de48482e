"""Build the bare-metal image: MicroPython's qemu port for an emulated Cortex-M3 board (MPS2-AN385)
or a 32-bit RISC-V one (QEMU's virt), with the firmware frozen through firmware/manifest.py and the
device side of the emulation the sampling path needs frozen beside it (emulation/qemu/manifest.py).

What the image is, beyond the port's defaults (all given on the make command line, nothing in the
MicroPython tree is edited):
  - MICROPY_HEAP_SIZE=112640: the port's GC heap is a static array of that many bytes in the
    image's RAM (ports/qemu/main.c), 143,360 by default; 110 KiB is the ESP32 budget the project
    measures against (emulation.device.ESP32_FREE_HEAP; the ESP32 profile's -X heapsize=110k).
  - MICROPY_FLOAT_IMPL stays `float`: single precision in software, as on an ESP32.
  - MICROPY_VFS_LFS2=1: littlefs2, the ESP32 port's filesystem, for the flash in RAM. The port has
    no RTC for littlefs's file times, so `mp_hal_time_ns()` is defined to 0 (CFLAGS_EXTRA): files
    get the epoch as their time, nothing else changes.
  - asyncio frozen as Python with its task.py: the port leaves the C _asyncio module off.
  - VIRT_RV32 with Debian's riscv64-unknown-elf-gcc (GCC 12): RV32_ARCH=rv32imac so that the
    link picks the rv32imac/ilp32 multilib of libgcc and picolibc (GCC 12 matches no multilib for
    the port's default rv32imac_zicsr and links the 64-bit ones), and -misa-spec=2.2 (AFLAGS, also
    given to the C compiler) so that the CSR instructions the port's startup code uses assemble
    (Zicsr is part of the base ISA in that spec version).

The source is MicroPython's release subset in ../shared/micropython/ (or $SQAL_MICROPYTHON_SRC), as
for the ESP32 profile. A build takes about 30 s on 2 cores (3 s when only frozen files changed); it
is cached under build/qemu/ by a key over everything that goes into it (the source archive, the
board, the make options, the manifests and every frozen file), so a firmware change rebuilds it
and nothing else does. Concurrent callers (test workers) wait on one file lock; one of them builds.

    python -m emulation.qemu.build [--board MPS2_AN385|VIRT_RV32]
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.py"
CACHE = REPO_ROOT / "build" / "qemu"
REQUIRE_ENV = "SQAL_REQUIRE_QEMU"
# MICROPY_HEAP_SIZE: the ESP32 budget, emulation.device.ESP32_FREE_HEAP (a test keeps them equal; not
# imported: the test fixtures import this module, and a plugin that fails to import stops every test)
HEAP_BYTES = 110 * 1024
KEEP_BUILDS = 3  # per board; older cached images are removed
# littlefs stamps files with mp_hal_time_ns(), which the qemu port does not define (no RTC)
NO_RTC = "-D'mp_hal_time_ns()=0ULL'"


class QemuUnavailable(RuntimeError):
    """A part the bare-metal tier needs is missing here (the source, the cross toolchain, QEMU);
    the message says which and what provides it."""


@dataclass(frozen=True)
class QemuBoard:
    name: str              # the qemu port's BOARD
    cpu: str               # for people: what the board emulates
    cross: str             # CROSS_COMPILE prefix
    cross_packages: str    # Debian packages of the cross toolchain and its C library
    qemu: str              # the system emulator
    qemu_package: str
    machine: tuple[str, ...]  # QEMU arguments selecting the machine
    ram_disk: int          # RAM outside the image and the MicroPython heap, for the flash
    make_args: tuple[str, ...]

    def qemu_argv(self, elf: Path) -> list[str]:
        """The emulator's command line: the UART on stdin/stdout, no monitor, no display."""
        return [self.qemu, *self.machine, "-display", "none", "-monitor", "none", "-serial", "stdio",
                "-semihosting", "-kernel", str(elf)]


BOARDS = {
    "MPS2_AN385": QemuBoard(
        "MPS2_AN385", "Arm Cortex-M3 (MPS2-AN385)", "arm-none-eabi-",
        "gcc-arm-none-eabi libnewlib-arm-none-eabi", "qemu-system-arm", "qemu-system-arm",
        ("-machine", "mps2-an385"),
        # the image, its heap and its stack live in the 4 MB at 0 (ports/qemu/mcu/arm/mps2.ld); the
        # board's second 4 MB SSRAM at 0x20000000 is unused
        0x20000000,
        ()),
    "VIRT_RV32": QemuBoard(
        "VIRT_RV32", "RISC-V RV32IMAC (QEMU virt)", "riscv64-unknown-elf-",
        "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf", "qemu-system-riscv32", "qemu-system-misc",
        ("-machine", "virt", "-bios", "none"),
        # the image takes 0x80000000-0x80610000 (ports/qemu/mcu/rv32/virt.ld) of the 128 MiB of RAM
        0x80800000,
        ("RV32_ARCH=rv32imac", "AFLAGS=-mabi=ilp32 -march=rv32imac -misa-spec=2.2")),
}
DEFAULT_BOARD = "MPS2_AN385"
RAM_DISK_BYTES = 512 * 1024  # littlefs2, 4 KiB blocks: the ToF blob (86 KB), config, state, spool


def board(name: str) -> QemuBoard:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown qemu board {name!r}; choose one of {', '.join(BOARDS)}") from None


def make_args(b: QemuBoard) -> list[str]:
    """The make options of the image, FROZEN_MANIFEST and BUILD aside (in the cache key)."""
    return [f"BOARD={b.name}", f"MICROPY_HEAP_SIZE={HEAP_BYTES}", "MICROPY_VFS_LFS2=1",
            f"CFLAGS_EXTRA={NO_RTC}", *b.make_args]


def source_archive() -> Path:
    """The MicroPython source archive (the one the ESP32 profile uses), or QemuUnavailable."""
    from emulation.esp32.build import ProfileUnavailable
    from emulation.esp32.build import source_archive as esp32_source

    try:
        return esp32_source()
    except ProfileUnavailable as e:
        raise QemuUnavailable(str(e).replace("for the ESP32 profile", "for the bare-metal image")) from None


def _frozen_inputs() -> Iterator[Path]:
    yield MANIFEST
    yield HERE / "__init__.py"
    yield HERE / "lot.py"
    yield REPO_ROOT / "firmware" / "manifest.py"
    yield from sorted((REPO_ROOT / "firmware" / "sqalfw").rglob("*.py"))
    yield REPO_ROOT / "emulation" / "__init__.py"
    yield from sorted((REPO_ROOT / "emulation" / "peripherals").glob("*.py"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_ARCHIVE_DIGESTS: dict[tuple[str, int, int], str] = {}


def archive_digest(archive: Path) -> str:
    st = archive.stat()  # hashed once per process while it stays the same
    k = (str(archive), st.st_size, st.st_mtime_ns)
    if k not in _ARCHIVE_DIGESTS:
        _ARCHIVE_DIGESTS[k] = _sha256(archive)
    return _ARCHIVE_DIGESTS[k]


def build_key(b: QemuBoard, archive: Path) -> str:
    """Changes whenever anything that goes into the image changes."""
    h = hashlib.sha256(archive_digest(archive).encode())
    h.update("\0".join(make_args(b)).encode() + b"\0")
    for p in _frozen_inputs():
        h.update(str(p.relative_to(REPO_ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def image_path(b: QemuBoard, key: str) -> Path:
    return CACHE / f"{b.name}-{key}" / "firmware.elf"


def check_tools(b: QemuBoard) -> None:
    """QemuUnavailable unless make, the cross compiler with its C library and the emulator are here."""
    missing = []
    if shutil.which("make") is None:
        missing.append("make (build-essential)")
    gcc = shutil.which(b.cross + "gcc")
    if gcc is None:
        missing.append(f"{b.cross}gcc ({b.cross_packages})")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "t.c"
            # headers the port includes: there when the C library (newlib, picolibc) is installed
            src.write_text("#include <stdlib.h>\n#include <alloca.h>\nint f(void) { return 0; }\n")
            # as the port's Makefile: picolibc through its specs file when the compiler has one
            specs = subprocess.run([gcc, "--print-file-name=picolibc.specs"], capture_output=True, text=True,
                                   check=False).stdout.strip()
            extra = [f"--specs={specs}"] if specs and specs != "picolibc.specs" else []
            proc = subprocess.run([gcc, *extra, "-c", str(src), "-o", str(Path(tmp) / "t.o")],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                missing.append(f"the C library of {b.cross}gcc ({b.cross_packages}): "
                               + proc.stderr.strip()[-200:])
    if shutil.which(b.qemu) is None:
        missing.append(f"{b.qemu} ({b.qemu_package})")
    if missing:
        raise QemuUnavailable(f"the bare-metal image for {b.name} needs " + "; ".join(missing))


def emulator(b: QemuBoard) -> str:
    """Path of the board's QEMU, or QemuUnavailable."""
    found = shutil.which(b.qemu)
    if found is None:
        raise QemuUnavailable(f"{b.qemu} is not installed (apt-get install {b.qemu_package})")
    return found


def _unpack(archive: Path) -> Path:
    """The source tree, unpacked once per archive (by content) under the cache (its own copy:
    mpy-cross is built inside it, under this cache's lock)."""
    root = CACHE / f"src-{archive_digest(archive)[:12]}"
    if (root / ".unpacked").exists():
        return next(p for p in root.iterdir() if p.is_dir())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    (root / ".unpacked").touch()
    return next(p for p in root.iterdir() if p.is_dir())


def _make(args: list[str], what: str, log: Path) -> None:
    with open(log, "ab") as out:
        out.write(("$ " + shlex.join(["make", *args]) + "\n").encode())
        out.flush()
        proc = subprocess.run(["make", f"-j{os.cpu_count() or 2}", *args], stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"building the bare-metal image failed at {what} (log {log}):\n{tail}")


def _prune(b: QemuBoard, keep: Path) -> None:
    builds = sorted((p for p in CACHE.glob(f"{b.name}-*") if p.is_dir() and p != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def ensure_image(board_name: str = DEFAULT_BOARD) -> Path:
    """The board's firmware.elf, built first if the cache has none for the current inputs.
    QemuUnavailable when the source, the toolchain or the emulator is missing."""
    b = board(board_name)
    archive = source_archive()
    key = build_key(b, archive)
    out = image_path(b, key)
    if out.exists():
        emulator(b)
        return out
    check_tools(b)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others find its result below
        if out.exists():
            return out
        src = _unpack(archive)
        log = CACHE / f"build-{b.name}.log"
        log.write_text(f"bare-metal image {b.name} {key} from {archive}\n")
        if not (src / "mpy-cross" / "build" / "mpy-cross").exists():
            # on its own make command line: a FROZEN_MANIFEST there would leak into its build
            _make(["-C", str(src / "mpy-cross")], "mpy-cross", log)
        # objects kept between builds (a firmware change recompiles the frozen content only), but
        # make does not see a changed option or source: a different stamp starts them afresh
        obj = CACHE / f"obj-{b.name}"
        stamp = json.dumps({"archive": archive_digest(archive), "make": make_args(b)})
        if not (obj / ".stamp").exists() or (obj / ".stamp").read_text() != stamp:
            shutil.rmtree(obj, ignore_errors=True)
            obj.mkdir(parents=True)
            (obj / ".stamp").write_text(stamp)
        _make(["-C", str(src / "ports" / "qemu"), *make_args(b), f"BUILD={obj}", f"FROZEN_MANIFEST={MANIFEST}"],
              f"the qemu port ({b.name})", log)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name("firmware.elf.tmp")
        shutil.copy2(obj / "firmware.elf", tmp)
        os.replace(tmp, out)
        _prune(b, out.parent)
    return out


def main(argv: list[str] | None = None) -> int:
    """Build (or find) the image and say where it is. Where a part is missing it says so and
    succeeds, unless SQAL_REQUIRE_QEMU=1 (CI)."""
    ap = argparse.ArgumentParser(description="Build the bare-metal QEMU image of the SQAL firmware.")
    ap.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(BOARDS))
    args = ap.parse_args(argv)
    b = board(args.board)
    try:
        if not image_path(b, build_key(b, source_archive())).exists():
            print(f"sqal: building the bare-metal image for {b.name} (about 30 s, once per firmware change)",
                  file=sys.stderr)
        print(f"sqal: bare-metal image ({b.cpu}): {ensure_image(b.name)}", file=sys.stderr)
    except QemuUnavailable as e:
        required = os.environ.get(REQUIRE_ENV) == "1"
        print(f"sqal: bare-metal image unavailable{' (required)' if required else ', its tests will be skipped'}: "
              f"{e}", file=sys.stderr)
        return 1 if required else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
