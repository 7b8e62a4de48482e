"""The real App on an emulated board in the MicroPython unix port, for tests that drive it from a
script: the watchdog object is replaced by a recorder so the script can read its feeds; the
broker (127.0.0.1:1) never answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emulation.device import EmulatedDevice, ensure_mpy_cache

PRELUDE = """
import asyncio, sys, time
from emulation.mpboard.board import Board
from sqalfw import app, config, identity

class Recorder:
    def __init__(self):
        self.feeds = []
    def feed(self):
        self.feeds.append(time.ticks_ms())

board = Board({flash!r})
rec = Recorder()
board.watchdog = lambda ms: rec
cfg = config.load({flash!r})
ident = identity.Identity({flash!r}, cfg.device_id)
ident.start(cfg.safe_mode_after)
a = app.App(board, cfg, ident)
"""


def app_device(tmp_path: Path, device_id: str) -> EmulatedDevice:
    dev = EmulatedDevice(device_id, tmp_path / "flash", "mqtt://127.0.0.1:1", interval=0.1,
                         config={"watchdog_s": 20, "max_offline_s": 0},
                         emulation={"sensor_time_scale": 10})
    dev.prepare()
    return dev


def run_app(micropython_run: Any, script: str, dev: EmulatedDevice) -> tuple[list[int], str]:
    """Run `script` (PRELUDE + the test's part, `{flash}` filled in); returns the integers of its
    line `RESULT ...` and its whole output."""
    out = micropython_run(script.format(flash=str(dev.flash_dir)), heap="1M", extra_path=(ensure_mpy_cache(),),
                          timeout=90)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT")).split()
    return [int(v) for v in line[1:]], out.stdout
