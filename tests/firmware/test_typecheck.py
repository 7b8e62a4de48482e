"""The firmware type-checks against micropython-esp32-stubs: no CPython-only API reaches the board.

mypy runs with MicroPython's reduced stdlib (micropython-stdlib-stubs, as custom typeshed) and the
ESP32 port's modules (machine, network, ntptime, time, gc ...). mypy refuses site-packages on its
search path, so the ESP32 stub files are linked into a private directory first.
Run by hand: `.venv/bin/python tests/firmware/test_typecheck.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# the firmware, the emulation's code that runs inside the device's MicroPython interpreter, and the
# benchmarks' scripts for it
TARGETS = ["firmware/sqalfw", "firmware/sqalboot", "firmware/main.py", "firmware/boot.py", "emulation/mpboard",
           "emulation/peripherals", "emulation/device_main.py", "emulation/host_main.py", "bench/mp"]


def esp32_stub_dir(dest: Path) -> Path:
    """Symlink the top-level modules of micropython-esp32-stubs (+ the shared _mpy_shed) into dest."""
    site = Path(sysconfig.get_paths()["purelib"])
    names: set[str] = set()
    for dist in ("micropython-esp32-stubs", "micropython-stdlib-stubs"):
        for f in metadata.files(dist) or []:
            top = f.parts[0]
            if top.endswith(".dist-info") or top in ("stdlib", "LICENSE.md", "README.md", "pyproject.toml"):
                continue
            names.add(top)
    dest.mkdir(parents=True, exist_ok=True)
    for n in sorted(names):
        link = dest / n
        if not link.exists():
            os.symlink(site / n, link)
    return dest


def run_mypy(work: Path) -> subprocess.CompletedProcess[str]:
    site = sysconfig.get_paths()["purelib"]
    stubs = esp32_stub_dir(work / "esp32-stubs")
    env = dict(os.environ, MYPYPATH=f"{REPO / 'firmware'}:{REPO}:{REPO / 'bench' / 'mp'}:{stubs}")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "firmware" / "mypy.ini"),
         "--custom-typeshed-dir", site, "--cache-dir", str(work / "mypy-cache"), *TARGETS],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_firmware_typechecks_against_esp32_stubs(tmp_path: Path) -> None:
    out = run_mypy(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_typecheck_catches_cpython_only_api(tmp_path: Path) -> None:
    """The check has teeth: a CPython-only call (os.getpid does not exist on the board) fails it."""
    bad = tmp_path / "fw" / "sqalfw_bad.py"
    bad.parent.mkdir()
    bad.write_text("import time\nimport dataclasses\n\nprint(time.perf_counter(), dataclasses)\n")
    site = sysconfig.get_paths()["purelib"]
    stubs = esp32_stub_dir(tmp_path / "esp32-stubs")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "firmware" / "mypy.ini"),
         "--custom-typeshed-dir", site, "--cache-dir", str(tmp_path / "mypy-cache"), str(bad)],
        cwd=REPO, env=dict(os.environ, MYPYPATH=str(stubs)), capture_output=True, text=True, timeout=300,
        check=False)
    assert out.returncode != 0
    for api in ("perf_counter", "dataclasses"):
        assert api in out.stdout, out.stdout


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        r = run_mypy(Path(d))
        print(r.stdout + r.stderr)
        sys.exit(r.returncode)
