"""Write a MicroPython image to an ESP32 with esptool used as a library (esptool >= 5 public API).

Steps: check the image file -> check the port is free -> connect and detect the chip (and check it
against --chip and the image) -> flasher stub -> erase -> write at the chip's offset -> verify ->
hard reset. The image is the SQAL image built from firmware/manifest.py (docs/boards.md, "Build the
SQAL image") or a stock download from micropython.org; nothing is fetched here. flash tells which one
it is writing. esptool draws its own Rich progress bars while writing and verifying.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import serial
from esptool.cmds import (
    attach_flash,
    detect_chip,
    erase_flash,
    reset_chip,
    run_stub,
    verify_flash,
    write_flash,
)
from esptool.util import FatalError

from gateway.boards import BoardError
from gateway.boards.ports import check_port_free

# Where a MicroPython "firmware.bin" (bootloader + partition table + app, merged) starts: the chip's
# second-stage bootloader offset. Same figures as esptool's BOOTLOADER_FLASH_OFFSET per target and
# micropython.org's download pages (ESP32/S2: 0x1000, S3/C3: 0x0); a test checks esptool agrees.
CHIP_OFFSETS: dict[str, int] = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0}
# chip_id field of the ESP image extended header (esp_image_header_t.chip_id).
IMAGE_CHIP_IDS: dict[str, int] = {"esp32": 0, "esp32s2": 2, "esp32s3": 9, "esp32c3": 5}
# MicroPython's board name on its download page, to tell the user which file to get.
DOWNLOAD_NAMES: dict[str, str] = {
    "esp32": "ESP32_GENERIC", "esp32s2": "ESP32_GENERIC_S2",
    "esp32s3": "ESP32_GENERIC_S3", "esp32c3": "ESP32_GENERIC_C3",
}
ESP_IMAGE_MAGIC = 0xE9
# An app image's first segment starts with esp_app_desc_t (magic 0xABCD5432), right after the 24-byte
# image header and the 8-byte segment header; the merged firmware.bin starts with the bootloader.
APP_DESC_MAGIC = struct.pack("<I", 0xABCD5432)
ROM_BAUD = 115200
# The SQAL image is MicroPython built with firmware/manifest.py as its FROZEN_MANIFEST. Each frozen
# module's name ("sqalfw/app.py") is a NUL-terminated string of the app's read-only data (the
# mp_frozen_names table, and the bytecode's source-file qstr), stored as-is in the .bin: ESP-IDF
# app images are not compressed. A stock image freezes no sqalfw module.
SQAL_MARKER = b"sqalfw/app.py\x00"
_FROZEN_NAME = re.compile(rb"sqalfw/[A-Za-z0-9_/]{1,64}\.py\x00")


class FlashError(BoardError):
    pass


def chip_key(chip_name: str) -> str:
    """esptool's CHIP_NAME ("ESP32-S3") -> our key ("esp32s3")."""
    return chip_name.lower().replace("-", "")


def image_chip(data: bytes, path: Path) -> str:
    """The chip an ESP firmware image was built for, read from its header; FlashError if not one."""
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise FlashError(
            f"{path} is not an ESP32 firmware image (no 0xE9 header): download the .bin for your "
            "board from https://micropython.org/download/ (not the .uf2, .elf or .app-bin)"
        )
    if data[32:36] == APP_DESC_MAGIC:
        raise FlashError(
            f"{path} is a MicroPython app alone (like micropython.bin of a build), without bootloader "
            "and partition table: write the merged firmware.bin from the same build directory"
        )
    (chip_id,) = struct.unpack_from("<H", data, 12)
    for name, cid in IMAGE_CHIP_IDS.items():
        if cid == chip_id:
            return name
    raise FlashError(f"{path} is built for a chip SQAL does not support (image chip id {chip_id}); "
                     f"supported: {', '.join(CHIP_OFFSETS)}")


def frozen_sqal_modules(data: bytes) -> list[str]:
    """The sqalfw modules frozen into a MicroPython image (empty for a stock image)."""
    if SQAL_MARKER not in data:
        return []
    return sorted({m.group()[:-1].decode() for m in _FROZEN_NAME.finditer(data)})


def image_kind(modules: list[str]) -> str:
    """One line for the user: SQAL image or stock, and what a stock image means for deploy."""
    if modules:
        return f"SQAL image: the firmware is frozen in ({len(modules)} sqalfw modules)"
    from gateway.boards.deploy import REQUIRED_FREE_HEAP  # the one place the heap figures live

    need = REQUIRED_FREE_HEAP["mpy"] // 1024
    return ("warning: stock MicroPython image (no SQAL firmware frozen in): 'sqal board deploy' will "
            f"have to send the firmware as .mpy files, which needs {need} KiB of free heap; an ESP32 "
            "without PSRAM has about 110 KB. Build the SQAL image instead (docs/boards.md, "
            "'Build the SQAL image')")


def read_image(path: Path, chip: str | None) -> tuple[bytes, str]:
    """Read and check the image; returns (bytes, chip it is for)."""
    if chip is not None and chip not in CHIP_OFFSETS:
        raise FlashError(f"--chip {chip} is not supported: use one of {', '.join(CHIP_OFFSETS)}")
    if not path.is_file():
        board = DOWNLOAD_NAMES.get(chip or "esp32", "ESP32_GENERIC")
        raise FlashError(
            f"MicroPython image {path} not found: build the SQAL image (docs/boards.md, 'Build the SQAL "
            f"image': build-{board}/firmware.bin) or download it from https://micropython.org/download/ "
            f"({board}-<date>-<version>.bin), and pass its path with --image"
        )
    data = path.read_bytes()
    built_for = image_chip(data, path)
    if chip is not None and built_for != chip:
        raise FlashError(
            f"{path} is a MicroPython image for {built_for}, but --chip is {chip}: download the "
            f"{DOWNLOAD_NAMES[chip]} image, or pass --chip {built_for} if that is your board"
        )
    return data, built_for


@dataclass
class FlashPlan:
    port: str
    image: Path
    chip: str | None = None
    baud: int = 460800
    erase: bool = True
    connect_mode: str = "default-reset"  # "no-reset" for network ports / boards held in download mode

    def steps(self) -> list[str]:
        where = f"0x{CHIP_OFFSETS[self.chip]:x}" if self.chip else "the chip's offset (esp32/s2 0x1000, s3/c3 0x0)"
        out = [
            (f"check image {self.image} (ESP header, built for {self.chip or 'the detected chip'}; "
            "SQAL image with the firmware frozen in, or stock MicroPython)"),
            f"check that port {self.port} exists and is free",
            f"connect to {self.port} at {ROM_BAUD} baud ({self.connect_mode}) and detect the chip"
            + (f", expecting {self.chip}" if self.chip else ""),
            "upload esptool's flasher stub" + (f", switch to {self.baud} baud" if self.baud != ROM_BAUD else ""),
        ]
        if self.erase:
            out.append("erase the whole flash (the board's files are lost)")
        out += [
            f"write {self.image.name} at {where}",
            f"verify the flash at {where} against {self.image.name} (MD5)",
            "hard reset the board into MicroPython",
        ]
        return out


@dataclass
class FlashResult:
    chip: str
    offset: int
    size: int
    steps: list[str] = field(default_factory=list)
    sqal_modules: list[str] = field(default_factory=list)  # frozen sqalfw modules; empty: stock image


def flash(plan: FlashPlan, say: Callable[[str], None] = print) -> FlashResult:
    """Run the plan on the port. FlashError says what went wrong and what to do."""
    data, built_for = read_image(plan.image, plan.chip)
    modules = frozen_sqal_modules(data)
    say(f"image {plan.image.name}: {len(data)} bytes, built for {built_for}")
    say(image_kind(modules))
    try:
        check_port_free(plan.port)
    except BoardError as e:
        raise FlashError(str(e)) from None
    done: list[str] = []
    try:
        with detect_chip(plan.port, ROM_BAUD, plan.connect_mode) as esp:
            found = chip_key(esp.CHIP_NAME)
            done.append(f"detected {esp.CHIP_NAME}")
            if found not in CHIP_OFFSETS:
                raise FlashError(f"the board on {plan.port} is an {esp.CHIP_NAME}; SQAL supports "
                                 f"{', '.join(CHIP_OFFSETS)}")
            expected = plan.chip or built_for
            if found != expected:
                why = f"--chip {plan.chip}" if plan.chip else f"the image {plan.image.name} is for {built_for}"
                raise FlashError(
                    f"the board on {plan.port} is an {esp.CHIP_NAME}, but {why}: use the "
                    f"{DOWNLOAD_NAMES[found]} image with --chip {found}"
                )
            offset = CHIP_OFFSETS[found]
            esp = run_stub(esp)
            if plan.baud != ROM_BAUD:
                esp.change_baud(plan.baud)
            attach_flash(esp)
            if plan.erase:
                erase_flash(esp)
                done.append("erased")
            write_flash(esp, [(offset, data)])
            done.append(f"wrote {len(data)} bytes at 0x{offset:x}")
            verify_flash(esp, [(offset, data)])
            done.append("verified")
            reset_chip(esp, "hard-reset")
            done.append("reset")
    except FatalError as e:
        raise FlashError(f"esptool failed on {plan.port} after [{', '.join(done) or 'nothing'}]: {e}. "
                         "If it could not connect: hold BOOT (GPIO0) while pressing RESET/EN, then "
                         "retry; try --baud 115200 with long or poor USB cables") from None
    except serial.SerialException as e:
        raise FlashError(f"serial link to {plan.port} lost after [{', '.join(done) or 'nothing'}]: {e}. "
                         "Check the cable and that nothing else opened the port") from None
    return FlashResult(chip=found, offset=offset, size=len(data), steps=done, sqal_modules=modules)
