"""Build the ESP32 profile's interpreter: MicroPython's unix port, 32-bit, single-precision floats,
littlefs2, with the firmware frozen from firmware/manifest.py (the manifest a real image is built
with) and the device side of the emulation frozen beside it (emulation/esp32/manifest.py).

The source is MicroPython's own release subset in ../shared/micropython/ (or $SQAL_MICROPYTHON_SRC,
a .tar.xz or a directory holding one). A build takes about 30 s on 2 cores; it is cached under
build/esp32-profile/ by a key over everything that goes into it (the source archive, the variant,
the manifests and every frozen file), so a change to the firmware rebuilds it and nothing else
does. Concurrent callers (test workers) wait on one file lock; one of them builds.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.shared_files import shared_places

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VARIANT_DIR = HERE / "variant"
MANIFEST = HERE / "manifest.py"
CACHE = REPO_ROOT / "build" / "esp32-profile"
SOURCE_ENV = "SQAL_MICROPYTHON_SRC"
KEEP_BUILDS = 3  # older cached interpreters are removed


class ProfileUnavailable(RuntimeError):
    """A part the build needs is missing here (the source, a 32-bit C toolchain); says which."""


def source_archive() -> Path:
    """The MicroPython source archive, or ProfileUnavailable naming where it was looked for."""
    given = os.environ.get(SOURCE_ENV)
    places = [Path(given)] if given else shared_places("micropython")
    for where in places:
        if where.is_file():
            return where
        found = sorted(where.glob("micropython-*-src.tar.xz")) if where.is_dir() else []
        if found:
            return found[-1]
    raise ProfileUnavailable(
        "the MicroPython source for the ESP32 profile is not here: no micropython-*-src.tar.xz in "
        f"{' or '.join(str(p) for p in places)} (../shared/micropython/ beside the clone, or set {SOURCE_ENV})")


def _frozen_inputs() -> Iterator[Path]:
    yield from sorted(VARIANT_DIR.iterdir())
    yield MANIFEST
    yield REPO_ROOT / "firmware" / "manifest.py"
    yield from sorted((REPO_ROOT / "firmware" / "sqalfw").rglob("*.py"))
    yield from sorted((REPO_ROOT / "firmware" / "sqalboot").rglob("*.py"))
    yield REPO_ROOT / "emulation" / "__init__.py"
    yield REPO_ROOT / "emulation" / "device_main.py"
    for pkg in ("mpboard", "peripherals"):
        yield from sorted((REPO_ROOT / "emulation" / pkg).rglob("*.py"))


@functools.lru_cache(maxsize=8)
def _digest_of(path: Path, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    st = path.stat()  # the archive is large: hashed once per process while it stays the same
    return _digest_of(path, st.st_size, st.st_mtime_ns)


def build_key(archive: Path) -> str:
    """Changes whenever anything that goes into the interpreter changes."""
    h = hashlib.sha256(_file_digest(archive).encode())
    for p in _frozen_inputs():
        h.update(str(p.relative_to(REPO_ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _check_toolchain() -> None:
    cc = shutil.which("gcc")
    if cc is None or shutil.which("make") is None:
        raise ProfileUnavailable("the ESP32 profile needs gcc and make (apt-get install build-essential gcc-multilib)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.c"
        src.write_text("#include <stdio.h>\nint main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n")
        proc = subprocess.run([cc, "-m32", str(src), "-o", str(Path(tmp) / "t")], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise ProfileUnavailable("gcc cannot build 32-bit programs here (apt-get install gcc-multilib): "
                                     + proc.stderr.strip()[-300:])


def _unpack(archive: Path) -> Path:
    """The source tree, unpacked once per archive (by content) under the cache."""
    root = CACHE / f"src-{_file_digest(archive)[:12]}"
    done = root / ".unpacked"
    if done.exists():
        return next(p for p in root.iterdir() if p.is_dir())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    done.touch()
    return next(p for p in root.iterdir() if p.is_dir())


def _make(args: list[str], what: str, log: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.run(["make", f"-j{os.cpu_count() or 2}", *args], stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"building the ESP32 profile failed at {what} (log {log}):\n{tail}")


def _prune(keep: Path) -> None:
    builds = sorted((p for p in CACHE.glob("mp-*") if p.is_dir() and p != keep),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def ensure_profile() -> Path:
    """The ESP32 profile's `micropython` binary, built first if the cache has none for the current
    firmware. ProfileUnavailable when the source or the 32-bit toolchain is missing."""
    archive = source_archive()
    key = build_key(archive)
    out = CACHE / f"mp-{key}" / "micropython"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others find its result below
        if out.exists():
            return out
        _check_toolchain()
        src = _unpack(archive)
        log = CACHE / "build.log"
        log.write_text(f"ESP32 profile {key} from {archive}\n")
        if not (src / "mpy-cross" / "build" / "mpy-cross").exists():
            # on its own make command line: a FROZEN_MANIFEST there would leak into its build
            _make(["-C", str(src / "mpy-cross")], "mpy-cross", log)
        obj = CACHE / "obj"  # kept between builds: a firmware change recompiles the frozen content only
        _make(["-C", str(src / "ports" / "unix"), "VARIANT=sqal_esp32", f"VARIANT_DIR={VARIANT_DIR}",
               f"BUILD={obj}", f"FROZEN_MANIFEST={MANIFEST}",
               # native or viper code in a frozen module must be x86 (32-bit) machine code
               "MPY_CROSS_FLAGS=-march=x86"], "the unix port", log)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name("micropython.tmp")
        shutil.copy2(obj / "micropython", tmp)
        os.replace(tmp, out)
        _prune(out.parent)
    return out


def main() -> int:
    """`python -m emulation.esp32.build`: build (or find) the profile and say where it is. Where a
    part is missing it says so and succeeds, unless SQAL_REQUIRE_ESP32_PROFILE=1 (CI)."""
    import sys

    try:
        cached = (CACHE / f"mp-{build_key(source_archive())}" / "micropython").exists()
        if not cached:
            print("sqal: building the emulator's ESP32 profile (about 30 s, once per firmware change)",
                  file=sys.stderr)
        print(f"sqal: ESP32 profile: {ensure_profile()}", file=sys.stderr)
    except ProfileUnavailable as e:
        required = os.environ.get("SQAL_REQUIRE_ESP32_PROFILE") == "1"
        print(f"sqal: ESP32 profile unavailable{' (required)' if required else ', its tests will be skipped'}: {e}",
              file=sys.stderr)
        return 1 if required else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
