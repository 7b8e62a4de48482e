"""The emulated board on the real MicroPython: link cut, host control file, clock, watchdog, reset."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from emulation.mpboard import exitcodes

LINK = """
import asyncio, json, sys
from emulation.mpboard.board import Board
b = Board({flash!r})
out = {{}}

async def serve(r, w):
    while True:
        d = await r.read(10)
        if not d:
            break
        w.write(d)
        await w.drain()

async def main():
    await asyncio.start_server(serve, "127.0.0.1", {port})
    out["before_connect"] = b.wlan.isconnected()   # the firmware has not asked for WiFi yet
    try:
        await asyncio.open_connection("127.0.0.1", {port})
        out["refused_before_connect"] = False
    except OSError:
        out["refused_before_connect"] = True
    b.wlan.connect("ssid", "pw")
    r, w = await asyncio.open_connection("127.0.0.1", {port})   # the firmware's own call
    w.write(b"ping")
    await w.drain()
    out["echo"] = (await r.read(10)).decode()
    got = []
    async def reader():
        try:
            got.append(await r.read(10))
        except OSError as e:
            got.append("OSError %d" % e.errno)
    asyncio.create_task(reader())
    await asyncio.sleep_ms(50)
    # the host takes the network down through control.json; the board polls it
    with open({flash!r} + "/control.json", "w") as f:
        f.write(json.dumps({{"net": "down", "clock_skew_s": -3600}}))
    t0 = b.time_ms()
    asyncio.create_task(b.background()[0])
    await asyncio.sleep_ms(500)
    out["blocked_reader_woken"] = got
    out["up_while_down"] = b.wlan.isconnected()
    out["rssi_down"] = b.wlan.rssi()
    out["skew_ms"] = t0 - b.time_ms()
    try:
        w.write(b"x")
        await w.drain()
        out["write_after_cut"] = "ok"
    except OSError as e:
        out["write_after_cut"] = e.errno
    try:
        await asyncio.open_connection("127.0.0.1", {port})
        out["connect_while_down"] = "ok"
    except OSError as e:
        out["connect_while_down"] = e.errno
    out["ntp_while_down"] = b.ntp_sync()
    with open({flash!r} + "/control.json", "w") as f:
        f.write(json.dumps({{"net": "up"}}))
    for _ in range(60):  # the board polls the file every second (board.POLL_MS)
        await asyncio.sleep_ms(50)
        if b.wlan.isconnected():
            break
    r2, w2 = await asyncio.open_connection("127.0.0.1", {port})
    w2.write(b"again")
    await w2.drain()
    out["echo_after_up"] = (await r2.read(10)).decode()
    out["ntp_after_up"] = b.ntp_sync()
    out["synced"] = b.clock_synced()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_link_cut_kills_open_sockets_and_refuses_new_ones(micropython_run, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = json.loads(micropython_run(LINK.format(flash=str(tmp_path), port=port), heap="512k").stdout)
    assert out["before_connect"] is False and out["refused_before_connect"] is True
    assert out["echo"] == "ping"
    assert out["blocked_reader_woken"] == ["OSError 107"]  # ENOTCONN: the read did not hang
    assert out["up_while_down"] is False and out["rssi_down"] == 0
    assert out["write_after_cut"] == 32  # EPIPE
    assert out["connect_while_down"] == 113  # EHOSTUNREACH
    assert out["ntp_while_down"] is False
    assert 3_500_000 <= out["skew_ms"] <= 3_700_000  # control.json moved the clock back an hour
    assert out["echo_after_up"] == "again"
    assert out["ntp_after_up"] is True and out["synced"] is True


def test_ntp_never_keeps_clock_unsynced_and_bad_settings_named(micropython_run, tmp_path: Path) -> None:
    (tmp_path / "emulation.json").write_text(json.dumps({"ntp": "never", "clock_skew_s": 120}))
    code = (
        "import time\nfrom emulation.mpboard.board import Board\n"
        f"b = Board({str(tmp_path)!r})\nb.wlan.connect('s', 'p')\n"
        "print(b.ntp_sync(), b.clock_synced(), (b.time_ms() - time.time_ns() // 1000000 + 500) // 1000)\n"
    )
    assert micropython_run(code, heap="512k").stdout.split() == ["False", "False", "120"]
    (tmp_path / "emulation.json").write_text(json.dumps({"i2c_error_rat": 0.1}))
    bad = micropython_run(code, heap="512k", check=False)
    assert bad.returncode != 0 and "emulation.json: unknown field 'i2c_error_rat'" in bad.stdout + bad.stderr


WDT = """
import time
from emulation.mpboard.board import Board
b = Board({flash!r})
w = b.watchdog(300)
for i in range(10):          # fed every 100 ms for a second: stays alive
    time.sleep_ms(100)
    w.feed()
print("alive after feeding")
while True:                  # a hung loop: never fed again
    pass
"""


def test_watchdog_kills_a_hung_loop_with_its_signal(micropython_run, tmp_path: Path) -> None:
    out = micropython_run(WDT.format(flash=str(tmp_path)), heap="512k", check=False, timeout=30)
    assert "alive after feeding" in out.stdout
    assert "WATCHDOG: not fed for 300 ms" in out.stdout
    assert out.returncode == -exitcodes.WATCHDOG_SIGNAL == -signal.SIGUSR1
    assert (tmp_path / "reset_reason").read_text() == "watchdog"


def test_reset_exits_with_reset_code_flash_kept(micropython_run, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    code = f"from emulation.mpboard.board import Board\nb = Board({str(tmp_path)!r})\nb.reset()\nprint('not reached')\n"
    out = micropython_run(code, heap="512k", check=False)
    assert out.returncode == exitcodes.RESET and "not reached" not in out.stdout
    assert (tmp_path / "keep.txt").read_text() == "x" and (tmp_path / "reset_reason").read_text() == "reset"
