"""The outbox of command results and status messages (firmware/sqalfw/app.py): bounded, and a
result that resets the board (reboot, update installed, rollback) is never the one dropped; the
reset is made once its result is acknowledged, or after RESET_WAIT_MS without a broker, so that a
slot switched on flash is booted even when nothing can be sent, or when the command that switched
it could not even be answered (a MemoryError). Real App, emulated board, real
MicroPython, a broker that never answers; the board's reset is recorded instead of made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.firmware.app_support import PRELUDE, app_device, run_app

FULL_THEN_REBOOT = PRELUDE + """
from sqalfw import codec
resets = []
app.RESET_WAIT_MS = 3000

async def main():
    t = asyncio.create_task(a.run())
    await asyncio.sleep_ms(300)
    a._reset = lambda cause=None: resets.append((cause, time.ticks_diff(time.ticks_ms(), t0)))
    for i in range(app.OUTBOX_MAX):
        a.queue(a.t_status, b'%d' % i)   # nothing is acknowledged: the outbox fills
    full = len(a._outbox)
    d0 = a.outbox_dropped
    t0 = time.ticks_ms()
    a._on_message(a.t_cmd, codec.encode_command("r1", "reboot", {{}}))
    a._on_message(a.t_cmd, codec.encode_command("s1", "status", {{}}))
    kept = [x[2] for x in a._outbox]
    before = list(resets)
    await asyncio.sleep_ms(1500)
    early = len(resets)
    await asyncio.sleep_ms(5500)   # the outbox task looks at least every idle_ms (2.5 s here)
    cause, after_ms = resets[0] if resets else ("none", -1)
    print("RESULT", full, len(kept), kept.count("reboot"), a.outbox_dropped - d0, len(before), early,
          int(cause == "command"), after_ms)

asyncio.run(main())
"""


def test_a_reset_result_is_never_dropped_and_the_reset_comes_without_a_broker(
        micropython_run: Any, tmp_path: Path) -> None:
    dev = app_device(tmp_path, "ESP32_OUTBOX_01")
    (full, kept, reboots, dropped, before, early, by_command, after_ms), out = run_app(
        micropython_run, FULL_THEN_REBOOT, dev)
    assert full == 8 and kept == 8, out
    # the reboot's result took the oldest plain message's place; the status result found no room
    assert reboots == 1 and dropped == 2, out
    assert before == 0 and early == 0, "reset before its result had its chance"
    assert by_command == 1 and 3000 <= after_ms < 6000, (after_ms, out)
    assert "reboot requested by command: resetting, its result not acknowledged within 3 s" in out


OWED_WITHOUT_RESULT = PRELUDE + """
resets = []
app.RESET_WAIT_MS = 3000

class Installer:
    # the switch made, then the command failed before any result was queued: only the
    # installer's word is left (sqalboot.install.Installer.reset_owed)
    reset_owed = "update"

async def main():
    t = asyncio.create_task(a.run())
    await asyncio.sleep_ms(300)
    a._reset = lambda cause=None: resets.append((cause, time.ticks_diff(time.ticks_ms(), t0)))
    t0 = time.ticks_ms()
    a._installer = Installer()
    await asyncio.sleep_ms(9000)
    cause, after_ms = resets[0] if resets else ("none", -1)
    print("RESULT", int(cause == "update"), after_ms)

asyncio.run(main())
"""


def test_a_switch_whose_command_got_no_result_still_resets_the_board(micropython_run: Any,
                                                                     tmp_path: Path) -> None:
    dev = app_device(tmp_path, "ESP32_OUTBOX_02")
    (by_update, after_ms), out = run_app(micropython_run, OWED_WITHOUT_RESULT, dev)
    assert by_update == 1 and 3000 <= after_ms < 9000, (after_ms, out)
    assert "update installed: resetting, its result not acknowledged within 3 s" in out
