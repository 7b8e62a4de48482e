"""The emulated board on the real MicroPython: link cut, DNS, host control file, RTC and NTP, watchdog,
reset."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from emulation.mpboard import exitcodes

LINK = """
import asyncio, builtins, json, sys
from emulation.mpboard.board import Board
REAL = (asyncio.open_connection, builtins.print)
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
        await b.open_connection("127.0.0.1", {port})
        out["refused_before_connect"] = False
    except OSError:
        out["refused_before_connect"] = True
    b.wlan.connect("ssid", "pw")
    r, w = await b.open_connection("127.0.0.1", {port})   # the firmware's call, through the board
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
        await b.open_connection("127.0.0.1", {port})
        out["connect_while_down"] = "ok"
    except OSError as e:
        out["connect_while_down"] = e.errno
    out["ntp_while_down"] = b.ntp_sync("0.pool.ntp.org")
    with open({flash!r} + "/control.json", "w") as f:
        f.write(json.dumps({{"net": "up"}}))
    for _ in range(60):  # the board polls the file every second (board.POLL_MS)
        await asyncio.sleep_ms(50)
        if b.wlan.isconnected():
            break
    r2, w2 = await b.open_connection("127.0.0.1", {port})
    w2.write(b"again")
    await w2.drain()
    out["echo_after_up"] = (await r2.read(10)).decode()
    out["synced_before_ntp"] = b.clock_synced()
    out["ntp_after_up"] = b.ntp_sync("0.pool.ntp.org")
    out["synced"] = b.clock_synced()
    out["global_untouched"] = (asyncio.open_connection, builtins.print) == REAL
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
    assert out["synced_before_ntp"] is False
    assert out["ntp_after_up"] is True and out["synced"] is True
    assert out["global_untouched"] is True  # the seam carries the link: asyncio is not patched


RTC = """
import json, time
from emulation.mpboard.board import Board
b = Board({flash!r})
b.wlan.connect("s", "p")
up_ms = time.ticks_ms() - T0
out = {{"ms": b.time_ms(), "synced": b.clock_synced()}}
out["ntp"] = [b.ntp_sync(h) for h in {hosts!r}]
out["after"] = b.time_ms()
out["host"] = time.time_ns() // 1000000
out["synced_after"] = b.clock_synced()
print(json.dumps(out))
"""

Y2000_MS = 946684800000


def _rtc_run(micropython_run, flash: Path, hosts: list[str]) -> dict:
    code = "import time\nT0 = time.ticks_ms()\n" + RTC.format(flash=str(flash), hosts=hosts)
    return json.loads(micropython_run(code, heap="512k").stdout)


def test_rtc_reads_2000_until_ntp_kept_through_a_reset_lost_at_power_up(micropython_run, tmp_path: Path) -> None:
    (tmp_path / "emulation.json").write_text(json.dumps({"ntp_fail": ["0.pool.ntp.org"]}))
    # power-up: 2000-01-01 plus the uptime, not the host's time; a server that does not answer
    # leaves it so, the next one sets it
    first = _rtc_run(micropython_run, tmp_path, ["0.pool.ntp.org", "1.pool.ntp.org"])
    assert Y2000_MS <= first["ms"] < Y2000_MS + 60_000 and first["synced"] is False
    assert first["ntp"] == [False, True] and first["synced_after"] is True
    assert abs(first["after"] - first["host"]) < 5_000
    # a reset (the process starts again, the rtc file stays): the clock is still set
    again = _rtc_run(micropython_run, tmp_path, [])
    assert again["synced"] is True and abs(again["ms"] - again["host"]) < 5_000
    # a power cut (the host removes the RTC file at power-up): back to 2000-01-01
    (tmp_path / "rtc").unlink()
    cut = _rtc_run(micropython_run, tmp_path, ["0.pool.ntp.org"])
    assert Y2000_MS <= cut["ms"] < Y2000_MS + 60_000 and cut["synced"] is False
    assert cut["ntp"] == [False] and cut["synced_after"] is False


def test_ntp_never_keeps_clock_unset_and_bad_settings_named(micropython_run, tmp_path: Path) -> None:
    (tmp_path / "emulation.json").write_text(json.dumps({"ntp": "never", "clock_skew_s": 120}))
    code = (
        "from emulation.mpboard.board import Board\n"
        f"b = Board({str(tmp_path)!r})\nb.wlan.connect('s', 'p')\n"
        "print(b.ntp_sync('0.pool.ntp.org'), b.clock_synced(), (b.time_ms() - 946684800000) // 1000)\n"
    )
    never, synced, since_2000 = micropython_run(code, heap="512k").stdout.split()
    assert (never, synced) == ("False", "False")
    assert 120 <= int(since_2000) < 180  # the skew on top of 2000-01-01 + uptime
    for bad, msg in (({"i2c_error_rat": 0.1}, "emulation.json: unknown field 'i2c_error_rat'"),
                     ({"memory_error_at": "everywhere"}, "emulation.json: memory_error_at must be one of"),
                     ({"ntp_fail": "0.pool.ntp.org"}, "emulation.json: ntp_fail must be a list")):
        (tmp_path / "emulation.json").write_text(json.dumps(bad))
        out = micropython_run(code, heap="512k", check=False)
        assert out.returncode != 0 and msg in out.stdout + out.stderr


DNS = """
import json, time
from emulation.mpboard.board import Board
b = Board({flash!r})
b.wlan.connect("s", "p")
out = {{}}
out["first"] = b.resolver.resolve("localhost", 1883)
out["literal"] = b.resolver.resolve("127.0.0.1", 1883)
b.link.dns_fail_s = 1.5   # control.json "dns_fail_s": the DNS servers stop answering
t0 = time.ticks_ms()
out["cached"] = b.resolver.resolve("localhost", 1883)       # cached: no lookup, no wait
out["cached_ms"] = time.ticks_diff(time.ticks_ms(), t0)
b.resolver.failed("localhost")                              # its address did not answer
t0 = time.ticks_ms()
out["fallback"] = b.resolver.resolve("localhost", 1883)     # looked up: blocks, fails, last good
out["blocked_ms"] = time.ticks_diff(time.ticks_ms(), t0)
t0 = time.ticks_ms()
out["held"] = b.resolver.resolve("localhost", 1883)          # a lookup failed just now: not again
out["held_ms"] = time.ticks_diff(time.ticks_ms(), t0)
try:
    b.resolver.resolve("nowhere.example", 1883)
except OSError as e:
    out["unknown"] = str(e)
out["lookups"] = b.link.lookups
print(json.dumps(out))
"""


def test_dns_blocks_then_fails_and_the_cache_answers(micropython_run, tmp_path: Path) -> None:
    out = json.loads(micropython_run(DNS.format(flash=str(tmp_path)), heap="512k").stdout.splitlines()[-1])
    assert out["first"] == out["literal"] == out["cached"] == out["fallback"] == out["held"] == "127.0.0.1"
    assert out["cached_ms"] < 1000 and out["held_ms"] < 1000
    assert out["blocked_ms"] >= 1500  # the lookup blocked as lwIP's does, then failed
    assert "dns: lookup of nowhere.example failed" in out["unknown"]
    assert out["lookups"] == 3  # localhost twice, nowhere.example once; the literal never


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
