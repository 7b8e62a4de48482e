"""`sqal board tof-files`: ST's vl53l8cx_buffers.h -> the VL53L8 blob and its .tables file.

ST's header cannot be in the repository (ST licence), so these tests write their own of the same
layout (tests/boards/st_header.py); the bytes are random.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqalfw.drivers import vl53l8
from typer.testing import CliRunner

from emulation.peripherals import fwblob
from gateway.boards.cli import board_app
from gateway.boards.tof_files import TofFilesError, convert, parse_header, write_files
from tests.boards.st_header import SIZES, expected_tables, header_text, random_arrays


def test_converts_st_layout_byte_for_byte(tmp_path: Path) -> None:
    arrays = random_arrays()
    header = tmp_path / "vl53l8cx_buffers.h"
    header.write_text(header_text(arrays))
    blob, tables = write_files(convert(header), tmp_path / "out")
    assert blob == tmp_path / "out" / "vl53l8cx_fw.bin"
    assert tables == tmp_path / "out" / "vl53l8cx_fw.bin.tables"
    assert blob.read_bytes() == arrays["VL53L8CX_FIRMWARE"]
    assert tables.read_bytes() == expected_tables(arrays)
    # the sizes the driver reads, in its order: GET_NVM command, configuration, Xtalk
    assert len(blob.read_bytes()) == vl53l8.FW_SIZE and len(tables.read_bytes()) == vl53l8.TABLES_SIZE
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vl53l8cx_fw.bin", "vl53l8cx_fw.bin.tables"]


def test_upper_case_hex_and_declaration_variants(tmp_path: Path) -> None:
    arrays = random_arrays(3)
    text = header_text(arrays, upper=True)
    text = text.replace("const uint8_t VL53L8CX_FIRMWARE[] =",
                        "static const uint8_t VL53L8CX_FIRMWARE[86016] __attribute__((aligned(4))) =")
    text = text.replace("const uint8_t VL53L8CX_DEFAULT_XTALK[] =", "const unsigned char VL53L8CX_DEFAULT_XTALK[]=")
    files = parse_header(text)
    assert files.firmware == arrays["VL53L8CX_FIRMWARE"]
    assert files.tables == expected_tables(arrays)


def test_the_emulations_stand_ins_round_trip(tmp_path: Path) -> None:
    """A header made from the emulation's synthetic blob and tables converts back to the very files
    the emulated VL53L8 (which checks the blob's CRC) boots from."""
    fw = b"".join(bytes(c) for c in fwblob.fw_chunks())
    tables = fwblob.tables()
    n1, n2 = fwblob.NVM_CMD_SIZE, fwblob.NVM_CMD_SIZE + fwblob.CONFIG_SIZE
    config = [f"0x{b:02x}" for b in tables[n1:n2]]
    arrays = {"VL53L8CX_FIRMWARE": fw, "VL53L8CX_GET_NVM_CMD": tables[:n1],
              "VL53L8CX_DEFAULT_CONFIGURATION": tables[n1:n2], "VL53L8CX_DEFAULT_XTALK": tables[n2:]}
    text = header_text(arrays, override={"VL53L8CX_DEFAULT_CONFIGURATION": config})
    out = parse_header(text)
    fwblob.write_blob(str(tmp_path / "ref.bin"))
    assert out.firmware == (tmp_path / "ref.bin").read_bytes()
    assert out.tables == (tmp_path / "ref.bin.tables").read_bytes()


def refusal(text: str) -> str:
    with pytest.raises(TofFilesError) as err:
        parse_header(text, "buffers.h")
    return str(err.value)


def test_missing_arrays_are_named() -> None:
    arrays = random_arrays()
    del arrays["VL53L8CX_DEFAULT_XTALK"]
    del arrays["VL53L8CX_GET_NVM_CMD"]
    msg = refusal(header_text(arrays))
    assert "buffers.h is not a usable vl53l8cx_buffers.h" in msg
    assert "VL53L8CX_DEFAULT_XTALK not found" in msg and "VL53L8CX_GET_NVM_CMD not found" in msg
    assert "VL53L8CX_FIRMWARE" not in msg and "VL53L8CX_DEFAULT_CONFIGURATION" not in msg


def test_extern_only_header_says_the_bytes_are_elsewhere() -> None:
    text = "".join(f"extern const uint8_t {n}[];\n" for n in SIZES)
    msg = refusal(text)
    assert "VL53L8CX_FIRMWARE is only declared (extern) here" in msg
    assert "pass ST's original vl53l8cx_buffers.h" in msg


@pytest.mark.parametrize(("name", "delta"), [("VL53L8CX_FIRMWARE", -4), ("VL53L8CX_DEFAULT_CONFIGURATION", -1),
                                             ("VL53L8CX_DEFAULT_XTALK", 1), ("VL53L8CX_GET_NVM_CMD", 4)])
def test_wrong_sizes_are_refused(name: str, delta: int) -> None:
    arrays = random_arrays()
    data = arrays[name]
    arrays[name] = data[:delta] if delta < 0 else data + os.urandom(delta)
    msg = refusal(header_text(arrays))
    assert f"{name} (line " in msg and f"has {SIZES[name] + delta} bytes, expected {SIZES[name]}" in msg


def test_declared_size_must_match_the_values() -> None:
    text = header_text(random_arrays()).replace("VL53L8CX_GET_NVM_CMD[]", "VL53L8CX_GET_NVM_CMD[44]")
    assert "VL53L8CX_GET_NVM_CMD (line" in (msg := refusal(text)) and "declared [44] but lists 40 bytes" in msg


@pytest.mark.parametrize(("bad", "why"), [("0xZZ", "'0xZZ' is not a byte value"),
                                          ("0x100", "0x100 is out of the byte range 0x00-0xFF"),
                                          ("UNKNOWN_MACRO", "'UNKNOWN_MACRO' is not a byte value"),
                                          ("", "empty value")])
def test_garbage_values_are_refused_with_their_place(bad: str, why: str) -> None:
    arrays = random_arrays()
    values = [f"0x{b:02x}" for b in arrays["VL53L8CX_DEFAULT_XTALK"]]
    values[501] = bad
    text = header_text(arrays, override={"VL53L8CX_DEFAULT_XTALK": values})
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "VL53L8CX_DEFAULT_XTALK[] =" in ln) + 1 + 501 // 4
    msg = refusal(text)
    assert f"VL53L8CX_DEFAULT_XTALK[501] (line {line}): {why}" in msg


def test_wider_element_type_is_refused() -> None:
    text = header_text(random_arrays()).replace("const uint8_t VL53L8CX_GET_NVM_CMD[]", "const uint32_t VL53L8CX_GET_NVM_CMD[]")
    assert "VL53L8CX_GET_NVM_CMD (line" in (msg := refusal(text)) and "array of uint32_t, expected bytes" in msg


def test_values_in_comments_do_not_count() -> None:
    arrays = random_arrays()
    text = header_text(arrays).replace("const uint8_t VL53L8CX_GET_NVM_CMD[] = {\n",
                                       "const uint8_t VL53L8CX_GET_NVM_CMD[] = {\n  /* 0x01, 0x02, */ // 0x03,\n")
    assert parse_header(text).tables[:40] == arrays["VL53L8CX_GET_NVM_CMD"]


def test_cli_writes_both_files_and_refuses_a_bad_header(tmp_path: Path) -> None:
    arrays = random_arrays()
    header = tmp_path / "vl53l8cx_buffers.h"
    header.write_text(header_text(arrays))
    out = tmp_path / "tof"
    res = CliRunner().invoke(board_app, ["tof-files", "--header", str(header), "--out", str(out), "--name", "tof.bin"])
    assert res.exit_code == 0, res.output
    assert (out / "tof.bin").read_bytes() == arrays["VL53L8CX_FIRMWARE"]
    assert (out / "tof.bin.tables").read_bytes() == expected_tables(arrays)
    assert "86016 bytes" in res.output and "1788 bytes" in res.output and "--sensor-firmware" in res.output

    del arrays["VL53L8CX_DEFAULT_XTALK"]
    header.write_text(header_text(arrays))
    bad = CliRunner().invoke(board_app, ["tof-files", "--header", str(header), "--out", str(tmp_path / "no")])
    assert bad.exit_code == 1 and "VL53L8CX_DEFAULT_XTALK not found" in bad.output
    assert not (tmp_path / "no").exists()
    missing = CliRunner().invoke(board_app, ["tof-files", "--header", str(tmp_path / "nope.h"), "--out", str(out)])
    assert missing.exit_code == 1 and "nope.h not found" in missing.output
