"""The sample cycle's heap on the 64-bit wheel (unix64): the data budget modelled, and no leak.

The heap given is the measured code heap (modules are frozen into flash on an ESP32 and cost no
heap there; the wheel's interpreter can only load them into the heap) plus 110 KB, so the data side
gets what an ESP32 without PSRAM leaves free, in 64-bit objects. Any MemoryError fails the run.
bench/firmware_heap.py prints the same figures. The board's heap bar (the ESP32 profile: firmware
frozen, 110 KB, the whole App with MQTT) is tests/firmware/test_app_memory_esp32.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import firmware_heap


def test_8x8_cycles_within_esp32_data_heap_and_flat(tmp_path: Path) -> None:
    # The full 10,000-cycle run is bench/firmware_heap.py (figures in docs/firmware.md); the suite runs
    # enough cycles to see a leak: live data after collect must not creep cycle after cycle.
    r = firmware_heap.run(800, resolution=8, workdir=tmp_path)
    print(r)
    assert r["sampled"] == 800
    assert r["heapsize"] == r["code_heap"] + 110 * 1024
    assert r["max_live_data"] < r["live_data"] + 16 * 1024, "heap grows cycle after cycle (a leak)"
    assert r["per_cycle_alloc"] > 0


def test_4x4_cycles_within_esp32_data_heap(tmp_path: Path) -> None:
    r = firmware_heap.run(300, resolution=4, workdir=tmp_path)
    print(r)
    assert r["sampled"] == 300
    assert r["max_live_data"] < r["live_data"] + 16 * 1024
