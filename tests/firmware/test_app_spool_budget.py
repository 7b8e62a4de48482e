"""The spool's byte budget is bounded by the board's flash (sqalfw.app.flash_room): a spool_capacity
that the 2 MiB littlefs of an ESP32_GENERIC cannot hold is capped, so that an outage fills the spool
and never the filesystem (state.json must still be writable). Run on the ESP32 profile."""

from __future__ import annotations

from pathlib import Path

from emulation.device import EmulatedDevice

FLASH = 2 * 1024 * 1024


def test_flash_room_is_three_quarters_of_what_is_free_plus_the_spool(esp32_run) -> None:  # type: ignore[no-untyped-def]
    out = esp32_run(
        "from sqalfw.app import flash_room\n"
        "r0 = flash_room('/flash', 0)\n"
        "with open('/flash/big', 'wb') as f:\n"
        "    block = b'x' * 4000\n"
        "    for _ in range(100):\n"
        "        f.write(block)\n"
        "r1 = flash_room('/flash', 0)\n"
        "r2 = flash_room('/flash', 400000)\n"
        "print('ROOM', r0, r1, r2)\n", flash_size=FLASH).stdout
    r0, r1, r2 = (int(x) for x in out.split("ROOM", 1)[1].split())
    assert FLASH * 0.70 < r0 <= FLASH * 3 // 4  # littlefs keeps a few blocks for itself
    assert abs((r0 - r1) - 400000 * 3 // 4) <= 2 * 4096  # what other files take is not the spool's
    assert abs(r2 - r0) <= 4096  # what the spool itself holds counts as room (give or take a block)


def test_a_spool_capacity_the_flash_cannot_hold_is_capped_and_said(tmp_path: Path, esp32_micropython: str) -> None:
    dev = EmulatedDevice("ESP32_SPB_01", tmp_path / "d", "mqtt://127.0.0.1:9", interval=1, target="esp32",
                         config={"spool_capacity": 1000000, "max_offline_s": 0})
    dev.start()
    try:
        assert dev.wait_for_log("capped at", 60), dev.log()
    finally:
        dev.kill()
    line = next(ln for ln in dev.log().splitlines() if "capped at" in ln)
    capped = int(line.split("capped at ")[1].split()[0])
    assert capped < FLASH * 3 // 4 and "1000000 samples do not fit" in line
