"""The watchdog is fed only by a healthy main loop: a task that stops making progress while the
event loop still runs (an await that never returns) stops the feeding. Real App, emulated board,
real MicroPython; the watchdog object is replaced by a recorder so the test can read its feeds."""

from __future__ import annotations

import json
from pathlib import Path

from emulation.device import EmulatedDevice

SCRIPT = """
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
stuck = asyncio.Event()

async def hang():
    await stuck.wait()   # never set: the loop runs, the sampler makes no progress

async def main():
    t = asyncio.create_task(a.run())
    await asyncio.sleep_ms(1500)
    healthy_feeds = len(rec.feeds)
    a.sampler.cycle = hang
    await asyncio.sleep_ms(6000)   # stall limit max(3 s, watchdog_s / 2), then 2 s without a feed
    n = len(rec.feeds)
    last_gap = time.ticks_diff(time.ticks_ms(), rec.feeds[-1])
    print("RESULT", healthy_feeds, last_gap, a.sampler.sampled)

asyncio.run(main())
"""


def test_stalled_sampler_stops_watchdog_feeding(micropython_run, tmp_path: Path) -> None:
    dev = EmulatedDevice("ESP32_WDT_01", tmp_path / "flash", "mqtt://127.0.0.1:1", interval=0.1,
                         config={"watchdog_s": 2, "max_offline_s": 0},
                         emulation={"sensor_time_scale": 10})
    dev.prepare()
    from emulation.device import ensure_mpy_cache

    cache = ensure_mpy_cache()
    out = micropython_run(SCRIPT.format(flash=str(dev.flash_dir)), heap="1M", extra_path=(cache,), timeout=60)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT")).split()
    healthy_feeds, last_gap, sampled = int(line[1]), int(line[2]), int(line[3])
    assert healthy_feeds >= 5          # fed every 200 ms while all tasks beat
    assert sampled >= 3
    assert last_gap >= 2000            # no feed for the last 2 s: the hardware watchdog will fire
    assert "task sampler stalled" in out.stdout
    assert json.loads((dev.flash_dir / "config.json").read_text())["watchdog_s"] == 2
