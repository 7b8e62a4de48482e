"""The watchdog is fed only by a healthy main loop: a task that stops making progress while the
event loop still runs (an await that never returns) stops the feeding; a call that blocks the
whole loop for less than the watchdog (a DNS lookup) does not. Real App, emulated board, real
MicroPython; the watchdog object is replaced by a recorder so the test can read its feeds."""

from __future__ import annotations

import json
from pathlib import Path

from tests.firmware.app_support import PRELUDE, app_device, run_app

STALL = PRELUDE + """
stuck = asyncio.Event()

async def hang():
    await stuck.wait()   # never set: the loop runs, the sampler makes no progress

async def main():
    t = asyncio.create_task(a.run())
    await asyncio.sleep_ms(3500)
    healthy_feeds = len(rec.feeds)
    a.sampler.cycle = hang
    await asyncio.sleep_ms(14000)   # stall limit max(3 s, watchdog_s / 2) = 10 s, then 3 s without a feed
    last_gap = time.ticks_diff(time.ticks_ms(), rec.feeds[-1])
    print("RESULT", healthy_feeds, last_gap, a.sampler.sampled)

asyncio.run(main())
"""

BLOCK = PRELUDE + """
async def main():
    t = asyncio.create_task(a.run())
    await asyncio.sleep_ms(3000)
    n = len(rec.feeds)
    print("BLOCKING")
    time.sleep(12)   # the whole loop stops, longer than the stall limit (10 s), shorter than the watchdog
    await asyncio.sleep_ms(4000)
    gaps = [time.ticks_diff(y, x) for x, y in zip(rec.feeds, rec.feeds[1:])]
    print("RESULT", len(rec.feeds) - n, max(gaps), a.sampler.sampled)

asyncio.run(main())
"""


def test_stalled_sampler_stops_watchdog_feeding(micropython_run, tmp_path: Path) -> None:
    dev = app_device(tmp_path, "ESP32_WDT_01")
    (healthy_feeds, last_gap, sampled), out = run_app(micropython_run, STALL, dev)
    assert healthy_feeds >= 2          # fed every second while all tasks beat
    assert sampled >= 3
    assert last_gap >= 2000            # no feed for the last seconds: the hardware watchdog will fire
    assert "task sampler stalled" in out
    assert json.loads((dev.flash_dir / "config.json").read_text())["watchdog_s"] == 20


def test_a_loop_blocked_for_less_than_the_watchdog_is_not_a_stall(micropython_run, tmp_path: Path) -> None:
    # e.g. a DNS lookup with no cached address while the DNS servers do not answer (lwIP: up to
    # 14 s): no task could beat meanwhile, so none is stalled, and the feeding goes on right after
    dev = app_device(tmp_path, "ESP32_WDT_01")
    (feeds_after, longest_gap, sampled), out = run_app(micropython_run, BLOCK, dev)
    assert "stalled" not in out, out
    assert feeds_after >= 3 and sampled >= 3
    assert longest_gap < 20000  # the watchdog (20 s) never ran out
