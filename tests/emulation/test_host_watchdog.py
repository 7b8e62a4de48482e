"""The host process's last-resort watchdog (emulation/mpboard/host.py, `Host._thread`): when a blocking
stall freezes the event loop, no device can be reset on its own; the host's watchdog thread then
kills the whole process with the watchdog signal, marks every overdue device's reset reason, and
`emulation.host.DeviceHost` powers the process again (every device boots again, flash kept)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from emulation.host import DeviceHost, HostedDevice
from emulation.mpboard import exitcodes

STUCK_SCRIPT = """
import asyncio, time
from emulation.mpboard import host as H

H.install()
h = H.Host([{f0!r}, {f1!r}], stagger_ms=0)

async def block():
    h.devices[0].board.log("BLOCKING %d" % time.time_ns())  # the device's serial log
    time.sleep(90)  # a blocking stall: the event loop itself stops, so no loop-side reset can run

async def main():
    asyncio.create_task(h.main())
    await asyncio.sleep_ms(1500)
    d0, d1 = h.devices
    print("SAMPLED", d0.app.sampler.sampled, d1.app.sampler.sampled)
    d0.app.sampler.cycle = block
    await asyncio.sleep_ms(90000)
    print("NOT KILLED")

asyncio.run(main())
"""


def _devices(tmp_path: Path, watchdog_s: int) -> list[HostedDevice]:
    devs = []
    for i in range(2):
        d = HostedDevice(f"ESP32_LW_{i + 1}", tmp_path / f"d{i}", "mqtt://127.0.0.1:1", interval=0.1,
                         config={"watchdog_s": watchdog_s, "max_offline_s": 0},
                         emulation={"sensor_time_scale": 10})
        d.prepare()
        devs.append(d)
    return devs


def test_a_stuck_event_loop_kills_the_host_with_the_watchdog_signal(micropython_bin: str, tmp_path: Path) -> None:
    from emulation.device import ensure_mpy_cache
    from tests.fixtures.micropython import micropython_path

    devs = _devices(tmp_path, watchdog_s=20)
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_SCRIPT.format(f0=str(devs[0].flash_dir), f1=str(devs[1].flash_dir)))
    env = dict(os.environ, MICROPYPATH=micropython_path(ensure_mpy_cache()))
    proc = subprocess.run([micropython_bin, "-X", "heapsize=1M", str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=150, check=False)
    killed_at = time.time_ns()
    out = proc.stdout + proc.stderr
    assert proc.returncode == -exitcodes.WATCHDOG_SIGNAL, out
    assert "BLOCKING" in devs[0].log() and "NOT KILLED" not in out  # a device's print goes to its log
    assert "WATCHDOG: event loop stuck, resetting the host" in out
    sampled = [int(x) for x in next(x for x in out.splitlines() if x.startswith("SAMPLED")).split()[1:]]
    assert min(sampled) >= 3, out  # both devices were running before the stall
    # fired after the 20 s watchdog plus the host's grace (2 s), counted from the last feed, which
    # came at most a feed period (1 s) before the stall; wide margins for a loaded machine
    blocked_at = int(devs[0].log().split("BLOCKING", 1)[1].split()[0])
    stalled_for = (killed_at - blocked_at) / 1e9
    assert 20.0 <= stalled_for < 60, stalled_for
    # both dogs went unfed once the loop stopped: both devices record a watchdog reset
    for d in devs:
        assert (d.flash_dir / "reset_reason").read_text() == "watchdog"


def test_device_host_powers_the_process_again_after_its_watchdog(tmp_path: Path) -> None:
    # the launcher's side: an exit by the watchdog signal is a board's watchdog reset, so the host
    # process is started again (all its devices boot again, flash kept); a plain stop is not
    devs = _devices(tmp_path, watchdog_s=20)
    host = DeviceHost("lw", devs, tmp_path / "host.log")
    try:
        host.start()
        end = time.monotonic() + 40
        while time.monotonic() < end and not all("boot 1" in d.log() for d in devs):
            time.sleep(0.1)
        assert all("boot 1" in d.log() for d in devs), host.log()[-1500:]
        pid = host.pid
        assert pid is not None
        os.kill(pid, exitcodes.WATCHDOG_SIGNAL)  # what Host._fire does to its own process
        end = time.monotonic() + 40
        while time.monotonic() < end and not (host.pid != pid and all("boot 2" in d.log() for d in devs)):
            time.sleep(0.1)
        assert host.pid != pid and host.running, host.log()[-1500:]
        assert all("boot 2" in d.log() for d in devs), [d.log()[-600:] for d in devs]
        assert host.starts == 2
    finally:
        host.stop(timeout=20)
    assert [r for _rc, r in host.exits] == ["watchdog", "stopped"]
    for d in devs:
        assert d.state()["boot"] == 2  # flash kept: the boot counter went on
