"""`sqal board flash`: esptool (as a library) against an emulated ROM bootloader over TCP."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
import serial
from esptool.targets import CHIP_DEFS
from typer.testing import CliRunner

from gateway.boards.cli import board_app
from gateway.boards.deploy import REQUIRED_FREE_HEAP
from gateway.boards.flash import CHIP_OFFSETS, IMAGE_CHIP_IDS, FlashError, FlashPlan, flash
from tests.boards.mock_rom import MockRom

# How the SQAL image's read-only data holds the frozen module names (mp_frozen_names: each name
# NUL-terminated, one after the other), as seen in a real frozen build's binary.
FROZEN_NAMES = (b"asyncio/__init__.py\0asyncio/core.py\0sqalfw/codec.py\0sqalfw/__init__.py\0"
                b"sqalfw/app.py\0sqalfw/mqtt.py\0sqalfw/drivers/vl53l8.py\0\0")


def make_image(path: Path, chip: str, size: int = 48 * 1024, rodata: bytes = b"") -> bytes:
    """An ESP image header (magic, segments, flash mode/size, entry, extended header with chip id)
    followed by half compressible, half random bytes (exercises both esptool write paths), with
    `rodata` placed in the middle."""
    header = bytes([0xE9, 3, 2, 0x20]) + b"\0" * 4 + b"\xee\0\0\0" + struct.pack("<H", IMAGE_CHIP_IDS[chip])
    header += b"\0" * (24 - len(header))
    body = bytes(range(256)) * (size // 512) + rodata + os.urandom(size // 2)
    data = header + body[: size - len(header)]
    assert rodata in data
    path.write_bytes(data)
    return data


def test_offsets_agree_with_esptool_targets() -> None:
    for chip, offset in CHIP_OFFSETS.items():
        assert CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET == offset, chip
        assert CHIP_DEFS[chip].IMAGE_CHIP_ID == IMAGE_CHIP_IDS[chip], chip


@pytest.mark.parametrize("chip", ["esp32", "esp32s3"])
def test_flash_writes_image_at_chip_offset_after_erase(tmp_path: Path, chip: str) -> None:
    image = make_image(tmp_path / f"{chip}.bin", chip)
    with MockRom(chip) as rom:
        result = flash(FlashPlan(rom.url, tmp_path / f"{chip}.bin", chip=chip, baud=115200,
                                 connect_mode="no-reset"), say=lambda s: None)
        offset = CHIP_OFFSETS[chip]
        assert result.chip == chip and result.offset == offset and result.size == len(image)
        assert rom.read(offset, len(image)) == image
        # erased before writing: the old contents (0x5A) are gone around the image too
        assert set(rom.read(0, offset)) <= {0xFF}
        assert set(rom.read(offset + len(image), 4096)) == {0xFF}
        assert "verified" in result.steps


def test_sqal_image_is_recognised_and_written(tmp_path: Path) -> None:
    image = make_image(tmp_path / "firmware.bin", "esp32", rodata=FROZEN_NAMES)
    said: list[str] = []
    with MockRom("esp32") as rom:
        result = flash(FlashPlan(rom.url, tmp_path / "firmware.bin", chip="esp32", baud=115200,
                                 connect_mode="no-reset"), say=said.append)
        assert rom.read(0x1000, len(image)) == image
    assert result.sqal_modules == ["sqalfw/__init__.py", "sqalfw/app.py", "sqalfw/codec.py",
                                   "sqalfw/drivers/vl53l8.py", "sqalfw/mqtt.py"]
    assert "SQAL image: the firmware is frozen in (5 sqalfw modules)" in said
    assert not any("warning" in line for line in said)


def test_stock_image_is_written_with_a_warning_about_deploy(tmp_path: Path) -> None:
    # a stock image may well mention the name elsewhere; only a frozen module's name counts
    image = make_image(tmp_path / "stock.bin", "esp32s3", rodata=b"asyncio/core.py\0sqalfw\0sqalfw.app\0")
    said: list[str] = []
    with MockRom("esp32s3") as rom:
        result = flash(FlashPlan(rom.url, tmp_path / "stock.bin", baud=115200, connect_mode="no-reset"),
                       say=said.append)
        assert rom.read(0, len(image)) == image
    assert result.sqal_modules == []
    warning = next(line for line in said if line.startswith("warning: stock MicroPython image"))
    need = REQUIRED_FREE_HEAP["mpy"] // 1024
    assert f"send the firmware as .mpy files, which needs {need} KiB of free heap" in warning
    assert "Build the SQAL image instead (docs/boards.md" in warning


def test_cli_tells_sqal_image_from_stock(tmp_path: Path) -> None:
    make_image(tmp_path / "sqal.bin", "esp32", rodata=FROZEN_NAMES)
    make_image(tmp_path / "stock.bin", "esp32")
    for name, expected in (("sqal.bin", "SQAL image: the firmware is frozen in"),
                           ("stock.bin", "warning: stock MicroPython image (no SQAL firmware frozen in)")):
        res = CliRunner().invoke(board_app, ["flash", "--port", "/dev/ttyNOPE9", "--image", str(tmp_path / name),
                                             "--dry-run"])
        assert res.exit_code == 0, res.output
        assert expected in res.output, res.output
    with MockRom("esp32") as rom:
        res = CliRunner().invoke(board_app, ["flash", "--port", rom.url, "--image", str(tmp_path / "sqal.bin"),
                                             "--baud", "115200", "--connect-mode", "no-reset"])
    assert res.exit_code == 0, res.output
    assert "The SQAL image written to the esp32" in res.output


def test_app_only_image_is_refused(tmp_path: Path) -> None:
    # micropython.bin of a build: image header, segment header, then esp_app_desc_t (magic 0xABCD5432)
    data = bytearray(make_image(tmp_path / "micropython.bin", "esp32"))
    data[32:36] = struct.pack("<I", 0xABCD5432)
    (tmp_path / "micropython.bin").write_bytes(bytes(data))
    with pytest.raises(FlashError, match="app alone .* write the merged firmware.bin"):
        flash(FlashPlan("/dev/does-not-exist", tmp_path / "micropython.bin"), say=lambda s: None)


def test_detected_chip_is_used_when_chip_not_given(tmp_path: Path) -> None:
    image = make_image(tmp_path / "c3.bin", "esp32c3")
    with MockRom("esp32c3") as rom:
        result = flash(FlashPlan(rom.url, tmp_path / "c3.bin", baud=115200, connect_mode="no-reset"),
                       say=lambda s: None)
        assert result.chip == "esp32c3" and result.offset == 0
        assert rom.read(0, len(image)) == image


def test_wrong_chip_is_a_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    make_image(tmp_path / "esp32.bin", "esp32")
    with MockRom("esp32c3") as rom:
        with pytest.raises(FlashError) as err:
            flash(FlashPlan(rom.url, tmp_path / "esp32.bin", chip="esp32", baud=115200, connect_mode="no-reset"),
                  say=lambda s: None)
        msg = str(err.value)
        assert "ESP32-C3" in msg and "--chip esp32c3" in msg and "ESP32_GENERIC_C3" in msg
        assert set(rom.read(0, 0x20000)) == {0x5A}  # untouched


def test_missing_image_is_a_clear_error_before_touching_the_port(tmp_path: Path) -> None:
    with pytest.raises(FlashError) as err:
        flash(FlashPlan("/dev/does-not-exist", tmp_path / "nope.bin", chip="esp32s3"), say=lambda s: None)
    assert "not found" in str(err.value) and "micropython.org" in str(err.value)
    assert "ESP32_GENERIC_S3" in str(err.value)


def test_image_for_another_chip_is_refused(tmp_path: Path) -> None:
    make_image(tmp_path / "s3.bin", "esp32s3")
    with pytest.raises(FlashError, match="image for esp32s3, but --chip is esp32"):
        flash(FlashPlan("/dev/does-not-exist", tmp_path / "s3.bin", chip="esp32"), say=lambda s: None)


def test_not_an_esp_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fw.uf2").write_bytes(b"UF2\n" + b"\0" * 600)
    with pytest.raises(FlashError, match="not an ESP32 firmware image"):
        flash(FlashPlan("/dev/does-not-exist", tmp_path / "fw.uf2"), say=lambda s: None)


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    make_image(tmp_path / "esp32.bin", "esp32")
    master, slave = os.openpty()
    holder = serial.Serial(os.ttyname(slave), exclusive=True)  # e.g. a serial monitor left open
    try:
        with pytest.raises(FlashError, match="is busy: close the program using it"):
            flash(FlashPlan(os.ttyname(slave), tmp_path / "esp32.bin", chip="esp32"), say=lambda s: None)
    finally:
        holder.close()
        os.close(master)
        os.close(slave)


def test_missing_port_is_a_clear_error(tmp_path: Path) -> None:
    make_image(tmp_path / "esp32.bin", "esp32")
    with pytest.raises(FlashError, match="does not exist.*sqal board list"):
        flash(FlashPlan("/dev/ttyNOPE9", tmp_path / "esp32.bin", chip="esp32"), say=lambda s: None)


def test_cli_dry_run_prints_steps_and_touches_nothing(tmp_path: Path) -> None:
    make_image(tmp_path / "esp32.bin", "esp32")
    res = CliRunner().invoke(board_app, ["flash", "--port", "/dev/ttyNOPE9", "--image",
                                         str(tmp_path / "esp32.bin"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and "write esp32.bin at 0x1000" in res.output
    assert "erase the whole flash" in res.output and "verify" in res.output


def test_cli_flash_error_exit_code_and_message(tmp_path: Path) -> None:
    # a path longer than any terminal line: the message must stay on one line, whole
    image = tmp_path / ("deep-" * 30) / "x.bin"
    res = CliRunner().invoke(board_app, ["flash", "--port", "/dev/ttyNOPE9", "--image", str(image)],
                             terminal_width=80)
    assert res.exit_code == 1
    assert f"error: MicroPython image {image} not found: build the SQAL image (docs/boards.md" in res.output
    assert "or download it from https://micropython.org/download/" in res.output
