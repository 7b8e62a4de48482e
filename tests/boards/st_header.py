"""A stand-in for ST's vl53l8cx_buffers.h (ULD 2.0) with random bytes, for the tof-files and deploy
tests. Same layout as ST's (learnt from stm32duino/VL53L8CX src/vl53l8cx_buffers.h; none of its
content is here): include guards, the VL53L8CX_FW_NBTAR_RANGING macro defined under #if, then four
`const uint8_t NAME[] = {` arrays, four hex bytes a line, a comment above each, in this order:
firmware (86,016), default configuration (972, the macro as its byte 107), default Xtalk (776),
GET_NVM command (40)."""

from __future__ import annotations

import random

SIZES = {"VL53L8CX_FIRMWARE": 86016, "VL53L8CX_DEFAULT_CONFIGURATION": 972,
         "VL53L8CX_DEFAULT_XTALK": 776, "VL53L8CX_GET_NVM_CMD": 40}
MACRO = "VL53L8CX_FW_NBTAR_RANGING"
MACRO_AT = 107  # where ST's default configuration has it


def random_arrays(seed: int = 8) -> dict[str, bytes]:
    rnd = random.Random(seed)
    return {name: rnd.randbytes(n) for name, n in SIZES.items()}


def array_text(name: str, values: list[str]) -> str:
    lines = [", ".join(values[i:i + 4]) + "," for i in range(0, len(values), 4)]
    return (f"/**\n * @brief This buffer contains the {name} data.\n */\n\n"
            f"const uint8_t {name}[] = {{\n  " + "\n  ".join(lines) + "\n\n};\n\n")


def header_text(arrays: dict[str, bytes], *, override: dict[str, list[str]] | None = None,
                upper: bool = False) -> str:
    """The header for `arrays` (a name left out is left out); `override` gives an array's tokens."""
    out = [("\n/**\n  * Copyright (c) 2021 (test stand-in)\n  ******/\n\n#ifndef VL53L8CX_BUFFERS_H_\n"
           "#define VL53L8CX_BUFFERS_H_\n\n#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
           "#include \"vl53l8cx_platform.h\"\n\n#if VL53L8CX_NB_TARGET_PER_ZONE == 1\n"
           f"#define {MACRO} 2\n#else\n#define {MACRO} VL53L8CX_NB_TARGET_PER_ZONE\n#endif\n\n")]
    fmt = "0x{:02X}" if upper else "0x{:02x}"
    for name in SIZES:
        if name not in arrays:
            continue
        values = [fmt.format(b) for b in arrays[name]]
        if name == "VL53L8CX_DEFAULT_CONFIGURATION" and len(values) > MACRO_AT:
            values[MACRO_AT] = MACRO
        if override and name in override:
            values = override[name]
        out.append(array_text(name, values))
    out.append("#ifdef __cplusplus\n}\n#endif\n\n#endif /* VL53L8CX_BUFFERS_H_ */\n")
    return "".join(out)


def expected_tables(arrays: dict[str, bytes]) -> bytes:
    """What the tables file must hold: GET_NVM command, configuration, Xtalk."""
    config = bytearray(arrays["VL53L8CX_DEFAULT_CONFIGURATION"])
    config[MACRO_AT] = 2  # VL53L8CX_FW_NBTAR_RANGING with one target per zone
    return arrays["VL53L8CX_GET_NVM_CMD"] + bytes(config) + arrays["VL53L8CX_DEFAULT_XTALK"]
