"""identity.py on the real MicroPython: boot counter, seq, safe-mode streak, persisted lot."""

from __future__ import annotations

import json
from pathlib import Path

BOOT = """
import json
from sqalfw import identity
i = identity.Identity({flash!r}, "ESP32_T_01")
i.start({after})
print(json.dumps({{"boot": i.boot, "safe": i.safe_mode, "lot": i.lot_id,
                  "seq": [i.next_seq(), i.next_seq()]}}))
{extra}
"""


def _boot(run, flash: Path, after: int = 3, extra: str = "") -> dict:
    out = run(BOOT.format(flash=str(flash), after=after, extra=extra)).stdout.splitlines()[0]
    return json.loads(out)


def test_boot_counter_persists_and_increments(micropython_run, tmp_path: Path) -> None:
    boots = [_boot(micropython_run, tmp_path, extra="i.mark_healthy()") for _ in range(3)]
    assert [b["boot"] for b in boots] == [1, 2, 3]
    assert all(b["seq"] == [0, 1] for b in boots)  # seq restarts at 0 each boot
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["boot"] == 3 and state["failed_boots"] == 0
    assert not (tmp_path / "state.json.tmp").exists()


def test_safe_mode_after_n_unhealthy_boots(micropython_run, tmp_path: Path) -> None:
    # three boots that never become healthy, the fourth starts in safe mode
    safe = [_boot(micropython_run, tmp_path, after=3)["safe"] for _ in range(4)]
    assert safe == [False, False, False, True]
    # safe mode that reaches healthy clears the streak: the next boot is normal
    _boot(micropython_run, tmp_path, after=3, extra="i.mark_healthy()")
    assert _boot(micropython_run, tmp_path, after=3)["safe"] is False


def test_lot_survives_reboot_and_falls_back_to_tmp(micropython_run, tmp_path: Path) -> None:
    _boot(micropython_run, tmp_path, extra="i.set_lot('LOT_20250114_0042')")
    assert _boot(micropython_run, tmp_path)["lot"] == "LOT_20250114_0042"
    # a power cut between remove and rename (FAT path) leaves only the .tmp copy: still read
    state = tmp_path / "state.json"
    state.rename(tmp_path / "state.json.tmp")
    b = _boot(micropython_run, tmp_path)
    assert b["lot"] == "LOT_20250114_0042" and b["boot"] == 3


def test_boot_failed_counts_once_per_boot_keeps_the_state_and_the_back_off_is_bounded(micropython_run,
                                                                                      tmp_path: Path) -> None:
    _boot(micropython_run, tmp_path, extra="i.set_lot('LOT_20250114_0042')")
    out = micropython_run(f"""
import json
from sqalfw import identity
print(identity.boot_failed({str(tmp_path)!r}), identity.boot_failed({str(tmp_path)!r}))
print(json.dumps([identity.boot_backoff_s(n) for n in range(0, 12)]))
""").stdout.splitlines()
    assert out[0] == "2 2"  # counted once in a process (one boot), on top of the boot start() counted
    assert json.loads(out[1]) == [1, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["failed_boots"] == 2 and state["lot_id"] == "LOT_20250114_0042" and state["boot"] == 1
