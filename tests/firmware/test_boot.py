"""The boot on the real MicroPython: firmware/main.py's guarded boot (a failure anywhere, imports
included, is printed, counted towards safe mode, backed off and ends in a reset, never at the
REPL), and the boot order (the WiFi connect starts before the large allocations)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.fixtures.micropython import FIRMWARE_DIR

MAIN = FIRMWARE_DIR / "main.py"

# main.py as the board runs it, with the board's `machine` replaced by one whose reset() ends the
# process (75, the emulator's reset code) and the flash root moved to a test directory
WRAPPER = """
import sys

class _Machine:
    @staticmethod
    def reset():
        print("RESET")
        sys.exit(75)

sys.modules["machine"] = _Machine
src = open({main!r}).read()
assert 'FLASH_DIR = ""' in src
src = src.replace('FLASH_DIR = ""', 'FLASH_DIR = ' + repr({flash!r}))
exec(compile(src, "main.py", "exec"), {{"__name__": "__main__"}})
print("MAIN RETURNED")
"""


def _firmware_with(tmp_path: Path, **modules: str) -> Path:
    """A copy of the sqalfw package whose named modules are replaced by the given sources."""
    pkg = tmp_path / "fw" / "sqalfw"
    shutil.copytree(FIRMWARE_DIR / "sqalfw", pkg)
    for name, text in modules.items():
        (pkg / f"{name}.py").write_text(text)
    return tmp_path / "fw"


def _boot_main(micropython_run, fw: Path, flash: Path):  # type: ignore[no-untyped-def]
    code = WRAPPER.format(main=str(MAIN), flash=str(flash))
    return micropython_run(code, check=False, extra_path=(fw,), timeout=120)


def _failed_boots(flash: Path) -> int:
    return int(json.loads((flash / "state.json").read_text())["failed_boots"])


def test_a_memory_error_importing_the_firmware_is_counted_backed_off_and_reset(micropython_run,
                                                                               tmp_path: Path) -> None:
    fw = _firmware_with(tmp_path, board='raise MemoryError("memory allocation failed, allocating 4096 bytes")\n')
    flash = tmp_path / "flash"
    flash.mkdir()
    delays = []
    for boot in (1, 2, 3):
        out = _boot_main(micropython_run, fw, flash)
        assert out.returncode == 75 and out.stdout.rstrip().endswith("RESET"), out.stdout + out.stderr
        assert "MAIN RETURNED" not in out.stdout  # never back at the REPL
        assert "MemoryError: memory allocation failed" in out.stdout + out.stderr  # the traceback
        m = re.search(r"sqal: boot failed \(MemoryError.*\); failed boots in a row: (\d+); reset in (\d+) s",
                      out.stdout)
        assert m and int(m.group(1)) == boot == _failed_boots(flash), out.stdout
        delays.append(int(m.group(2)))
    assert delays == [1, 2, 4]  # growing with the streak (and at most a minute)
    # the streak is what Identity.start() reads: with safe_mode_after 3 the next boot is safe mode
    out = micropython_run(f"from sqalfw import identity\ni = identity.Identity({str(flash)!r}, 'ESP32_T_01')\n"
                          "i.start(3)\nprint(i.safe_mode, i.failed_boots)\n")
    assert out.stdout.split() == ["True", "4"]


def test_a_crash_after_identity_counted_the_boot_is_not_counted_twice(micropython_run, tmp_path: Path) -> None:
    fw = _firmware_with(tmp_path, board="def select():\n    return None\n", app="""
from sqalfw import identity
CONFIG_ERROR = 78

def main(board):
    identity.Identity({flash!r}, "ESP32_T_01").start(5)  # the boot is counted here
    raise RuntimeError("spool directory is a file")
""".format(flash=str(tmp_path / "flash")))
    flash = tmp_path / "flash"
    flash.mkdir()
    for boot in (1, 2):
        out = _boot_main(micropython_run, fw, flash)
        assert out.returncode == 75, out.stdout + out.stderr
        assert f"failed boots in a row: {boot}; reset in" in out.stdout, out.stdout
        assert _failed_boots(flash) == boot


ORDER = """
import gc, json, sys
from emulation.mpboard.board import Board
b = Board({flash!r})
HEAVY = ("sqalfw.mqtt", "sqalfw.ws_transport", "sqalfw.spool", "sqalfw.sampler", "sqalfw.drivers.vl53l8",
         "sqalfw.drivers.as7341")
seen = []
connect = b.wlan.connect

def recording_connect(ssid, password):
    gc.collect()
    seen.append({{"loaded": [m for m in HEAVY if m in sys.modules], "alloc": gc.mem_alloc()}})
    connect(ssid, password)

b.wlan.connect = recording_connect
from sqalfw import app
a = app.boot(b)
gc.collect()
print(json.dumps({{"seen": seen, "after": [m for m in HEAVY if m in sys.modules], "alloc": gc.mem_alloc(),
                  "client": a.client is not None}}))
"""


def test_wifi_connect_starts_before_the_large_allocations(micropython_run, tmp_path: Path) -> None:
    from emulation.device import EmulatedDevice, ensure_mpy_cache

    dev = EmulatedDevice("ESP32_ORDER_01", tmp_path / "flash", "mqtt://127.0.0.1:1")
    dev.prepare()
    out = micropython_run(ORDER.format(flash=str(dev.flash_dir)), heap="1M", extra_path=(ensure_mpy_cache(),))
    r = json.loads(out.stdout.splitlines()[-1])
    # the connect was started while the boot was still building the app, before any of it
    assert len(r["seen"]) == 1 and r["seen"][0]["loaded"] == [], r
    assert r["client"] and {"sqalfw.mqtt", "sqalfw.spool", "sqalfw.sampler"} <= set(r["after"])
    assert r["alloc"] > r["seen"][0]["alloc"]  # and what followed the connect did allocate
