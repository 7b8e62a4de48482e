"""`sqal board tof-files`: the VL53L8 driver's two files on flash, made from ST's vl53l8cx_buffers.h.

The ULD firmware blob and the ULD's constant tables are C arrays in ST's header (the user's copy,
under ST's licence: never in this repository). The header (ULD 2.0, as published in ST's STSW-IMG040
and in stm32duino/VL53L8CX src/vl53l8cx_buffers.h) defines four `const uint8_t NAME[] = { 0x.., };`
arrays, four hex bytes a line:

    VL53L8CX_FIRMWARE               86,016 bytes, one array; the ULD uploads it in three slices
                                    (0x8000, 0x8000, 0x5000) to pages 9, 10, 11
    VL53L8CX_DEFAULT_CONFIGURATION     972 bytes; one entry is the macro VL53L8CX_FW_NBTAR_RANGING
    VL53L8CX_DEFAULT_XTALK             776 bytes
    VL53L8CX_GET_NVM_CMD                40 bytes

Output: the blob, and `<blob>.tables` = GET_NVM command + default configuration + default Xtalk, in
that order, which is what firmware/sqalfw/drivers/vl53l8.py reads (its sizes are used here).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sqalfw.drivers.vl53l8 import CONFIG_SIZE, FW_SIZE, NVM_CMD_SIZE, TABLES_SIZE, XTALK_SIZE

from gateway.boards import BoardError

DEFAULT_NAME = "vl53l8cx_fw.bin"  # the firmware's default tof_firmware_path (sqalfw/config.py)
FIRMWARE_ARRAY = "VL53L8CX_FIRMWARE"
# The tables file's parts, in file order.
TABLE_ARRAYS: tuple[tuple[str, int], ...] = (
    ("VL53L8CX_GET_NVM_CMD", NVM_CMD_SIZE),
    ("VL53L8CX_DEFAULT_CONFIGURATION", CONFIG_SIZE),
    ("VL53L8CX_DEFAULT_XTALK", XTALK_SIZE),
)
EXPECTED: tuple[tuple[str, int], ...] = ((FIRMWARE_ARRAY, FW_SIZE),) + TABLE_ARRAYS
# Macros that stand for a byte inside the arrays. The header defines VL53L8CX_FW_NBTAR_RANGING as
# 2 when VL53L8CX_NB_TARGET_PER_ZONE is 1 (the ULD's default): the SQAL driver asks for one target
# per zone (pipe control), so 2 is the value its configuration must carry.
MACROS: dict[str, int] = {"VL53L8CX_FW_NBTAR_RANGING": 2}

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
# Between "]" and "= {": nothing, or attributes such as __attribute__((aligned(4))) or a section macro.
_ATTRS = r"(?:__attribute__\s*\(\(.*?\)\)|[A-Za-z_]\w*|\s)*?"
_WIDE_TYPE = re.compile(r"\b(?:u?int(?:16|32|64)_t|short|int|long|float|double)\b")
_INT = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)[uUlL]*\Z")


class TofFilesError(BoardError):
    pass


@dataclass(frozen=True)
class TofFiles:
    firmware: bytes  # the ULD blob, FW_SIZE bytes
    tables: bytes    # GET_NVM command + default configuration + default Xtalk, TABLES_SIZE bytes


def _blank_comments(text: str) -> str:
    """Comments -> spaces, newlines kept, so offsets and line numbers stay those of the file."""
    return _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _value(token: str) -> int | None:
    if token in MACROS:
        return MACROS[token]
    m = _INT.match(token)
    if not m:
        return None
    digits = m.group(1)
    if digits.lower().startswith("0x"):
        return int(digits, 16)
    return int(digits, 8) if digits.startswith("0") else int(digits)


def _array(text: str, name: str, size: int) -> tuple[bytes | None, list[str]]:
    """The bytes of `name`'s definition in text (comments blanked), or None with the problems."""
    problems: list[str] = []
    defs = list(re.finditer(rf"\b{name}\s*\[([^\]]*)\]\s*{_ATTRS}=\s*\{{", text, re.DOTALL))
    if not defs:
        if re.search(rf"\bextern\b[^;{{}}]*\b{name}\s*\[", text):
            return None, [(f"{name} is only declared (extern) here, its bytes are not in this file: "
                          "pass ST's original vl53l8cx_buffers.h, which defines it")]
        return None, [f"{name} not found (expected 'const uint8_t {name}[] = {{ ... }};')"]
    if len(defs) > 1:
        lines = ", ".join(str(_line(text, d.start())) for d in defs)
        return None, [f"{name} is defined {len(defs)} times (lines {lines}): keep one definition"]
    d = defs[0]
    at = _line(text, d.start())
    decl = text[text.rfind("\n", 0, d.start()) + 1:d.start()]
    wide = _WIDE_TYPE.search(decl)
    if wide:
        return None, [f"{name} (line {at}) is an array of {wide.group()}, expected bytes (uint8_t)"]
    end = text.find("}", d.end())
    if end < 0:
        return None, [f"{name} (line {at}): no closing '}}'"]
    body_at = d.end()
    body = text[body_at:end]
    if "{" in body:
        return None, [f"{name} (line {at}): nested braces, expected a flat list of bytes"]
    values: list[int] = []
    tokens = list(re.finditer(r"[^,]+|(?<=,)(?=,)", body))
    for i, m in enumerate(tokens):
        tok = m.group().strip()
        if tok and (v := _value(tok)) is not None and v <= 0xFF:
            values.append(v)
            continue
        if not tok and i == len(tokens) - 1:
            continue  # the trailing comma C allows
        # a bad value: say where (its line, past the whitespace before it)
        pos = body_at + m.start() + len(m.group()) - len(m.group().lstrip())
        where = f"{name}[{len(values)}] (line {_line(text, pos)})"
        if not tok:
            problems.append(f"{where}: empty value")
        elif _value(tok) is None:
            problems.append(f"{where}: {tok[:40]!r} is not a byte value")
        else:
            problems.append(f"{where}: {tok} is out of the byte range 0x00-0xFF")
        break
    if problems:
        return None, problems
    if len(values) != size:
        problems.append(f"{name} (line {at}) has {len(values)} bytes, expected {size}")
    declared = d.group(1).strip()
    if declared and _value(declared) not in (None, len(values)):
        problems.append(f"{name} (line {at}) is declared [{declared}] but lists {len(values)} bytes")
    return (None if problems else bytes(values)), problems


def parse_header(text: str, source: str = "the header") -> TofFiles:
    """The blob and the tables from the text of vl53l8cx_buffers.h; TofFilesError lists every problem."""
    clean = _blank_comments(text)
    found: dict[str, bytes] = {}
    problems: list[str] = []
    for name, size in EXPECTED:
        data, why = _array(clean, name, size)
        problems += why
        if data is not None:
            found[name] = data
    if problems:
        raise TofFilesError(f"{source} is not a usable vl53l8cx_buffers.h (ST's VL53L8CX ULD):\n  "
                            + "\n  ".join(problems))
    tables = b"".join(found[name] for name, _ in TABLE_ARRAYS)
    assert len(tables) == TABLES_SIZE
    return TofFiles(firmware=found[FIRMWARE_ARRAY], tables=tables)


def convert(header: Path) -> TofFiles:
    """Read and parse the user's copy of ST's vl53l8cx_buffers.h."""
    if not header.is_file():
        raise TofFilesError(f"{header} not found: pass ST's vl53l8cx_buffers.h from the VL53L8CX ULD "
                            "driver (STSW-IMG040, or stm32duino's VL53L8CX library, src/)")
    try:
        text = header.read_bytes().decode("latin-1")  # C source; any byte decodes
    except OSError as e:
        raise TofFilesError(f"cannot read {header}: {e}") from None
    return parse_header(text, str(header))


def tables_path(blob: Path) -> Path:
    """Where the driver looks for the tables: beside the blob, named <blob>.tables."""
    return blob.with_name(blob.name + ".tables")


def write_files(files: TofFiles, out_dir: Path, name: str = DEFAULT_NAME) -> tuple[Path, Path]:
    """Write <out_dir>/<name> and <name>.tables (each via a temporary file, then renamed)."""
    if not name or "/" in name or name.startswith("."):
        raise TofFilesError(f"--name {name!r}: expected a plain file name such as {DEFAULT_NAME}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        blob = out_dir / name
        written = []
        for path, data in ((blob, files.firmware), (tables_path(blob), files.tables)):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            written.append(path)
    except OSError as e:
        raise TofFilesError(f"cannot write the ToF files into {out_dir}: {e}") from None
    return written[0], written[1]
