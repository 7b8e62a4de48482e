"""gateway/nats/embedded.py: the embedded message engine (a real nats-server child).

- it starts, writes its files (0600 where they hold a secret), answers JetStream with the gateway's
  user and MQTT for the boards (without credentials: MQTT only, a plain NATS client is refused);
- it outlives a SIGKILLed owner (its own session) with what it acknowledged, and the next start
  adopts it (same pid, same ports); a start with other settings restarts it;
- stop() ends it with SIGTERM (a clean shutdown: acknowledged messages are on disk afterwards);
- a busy MQTT port falls back to a free one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import psutil
import pytest

from gateway.nats import streams
from gateway.nats.embedded import EmbeddedNats
from gateway.nats.streams import StreamLimits
from tests.fixtures.mqtt import mqtt_ping
from tests.gateway.ingest_support import ROOT, Publisher

OWNER = """
import asyncio, json, sys
from pathlib import Path
from gateway.nats.embedded import EmbeddedNats

async def main():
    e = EmbeddedNats(Path(sys.argv[1]), mqtt_port=0)
    await e.start()
    print(json.dumps({"pid": e.pid, "url": e.url, "mqtt_url": e.mqtt_url}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def running(pid: int) -> bool:
    """A nats-server process, alive (not a zombie)."""
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and "nats-server" in " ".join(p.cmdline())
    except psutil.NoSuchProcess:
        return False


def mqtt_port(engine: EmbeddedNats) -> int:
    return int(engine.mqtt_url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def gateway_client(engine: EmbeddedNats) -> AsyncIterator[nats.NATS]:
    user, password = engine.gateway_credentials()
    nc = await nats.connect(engine.url, user=user, password=password, allow_reconnect=False)
    try:
        yield nc
    finally:
        await nc.close()


async def samples_in_stream(engine: EmbeddedNats) -> int:
    async with gateway_client(engine) as nc:
        return int((await nc.jetstream().stream_info(streams.SAMPLES)).state.messages)


def board_publishes(engine: EmbeddedNats, n: int, dev: str = "ESP32_EMB_01") -> None:
    """A board without credentials publishing `n` samples, each PUBACKed."""
    pub = Publisher("127.0.0.1", mqtt_port(engine))
    for i in range(n):
        pub.publish(f"sqal/v1/{dev}/sample", b"%d" % i)
    pub.wait_all()
    pub.close()


@pytest.fixture
def engines() -> Iterator[list[EmbeddedNats]]:
    """Engines a test started: whatever is left running at the end is stopped (SIGKILL if need be)."""
    started: list[EmbeddedNats] = []
    yield started
    for e in started:
        if e.pid is not None and running(e.pid):
            os.kill(e.pid, signal.SIGKILL)


async def start(engines: list[EmbeddedNats], data_dir: Path, **options: object) -> EmbeddedNats:
    e = EmbeddedNats(data_dir, **{"mqtt_port": 0, **options})  # type: ignore[arg-type]
    engines.append(e)
    await e.start()
    return e


async def test_starts_writes_its_files_and_serves_the_gateway_and_the_boards(tmp_path: Path,
                                                                            engines: list[EmbeddedNats]) -> None:
    e = await start(engines, tmp_path)
    assert e.pid is not None and running(e.pid) and not e.adopted
    d = tmp_path / "nats"
    for name in ("nats.conf", "server.json", "gateway.json", "nats.log"):
        assert (d / name).is_file(), name
    assert (d / "jetstream").is_dir()
    user, password = e.gateway_credentials()
    # files that hold a secret (the gateway's password; the configuration has it, and the devices')
    # are readable by their owner only; the password is in no other file
    for name in ("gateway.json", "nats.conf"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
        assert password in (d / name).read_text(), name
    for name in ("server.json", "nats.log"):
        assert password not in (d / name).read_text(), name
    assert stat.S_IMODE((d / "server.json").stat().st_mode) == 0o600
    st = json.loads((d / "server.json").read_text())
    assert (st["pid"], st["client_port"], st["mqtt_port"]) == (e.pid, int(e.url.rsplit(":", 1)[1]), mqtt_port(e))
    assert e.url.startswith("nats://127.0.0.1:") and e.mqtt_url.startswith("mqtt://127.0.0.1:")

    async with gateway_client(e) as nc:  # the gateway's user: JetStream
        js = nc.jetstream()
        await js.account_info()
        await streams.ensure(js, StreamLimits())
    await asyncio.to_thread(board_publishes, e, 5)  # a board: MQTT without credentials

    async def stored() -> bool:
        return await samples_in_stream(e) == 5

    assert await stored()
    # without credentials a NATS client is refused: the boards' anonymous user is for MQTT only (a
    # NATS client could publish subjects no MQTT topic maps to, e.g. invalid UTF-8, which nats-py
    # cannot read: one such message stopped the gateway's reader for good)
    with pytest.raises(Exception, match="(?i)authorization"):
        await nats.connect(e.url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)
    assert e.gateway_credentials() == (user, password)  # made once, kept
    await e.stop()
    assert not running(st["pid"]) and not (d / "server.json").exists()


async def test_outlives_a_killed_owner_and_is_adopted_by_the_next_start(tmp_path: Path,
                                                                        engines: list[EmbeddedNats]) -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], cwd=ROOT,  # noqa: ASYNC220
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    pid: int | None = None
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 60)
        first = json.loads(line)
        pid = first["pid"]
        user, password = EmbeddedNats(tmp_path).gateway_credentials()  # the owner made them, in the data dir
        nc = await nats.connect(first["url"], user=user, password=password, allow_reconnect=False)
        try:
            await streams.ensure(nc.jetstream(), StreamLimits())
        finally:
            await nc.close()
        owner.send_signal(signal.SIGKILL)  # the gateway dies...
        owner.wait(10)
        assert running(pid)  # ...the engine, in its own session, does not
        port = int(first["mqtt_url"].rsplit(":", 1)[1])
        assert mqtt_ping("127.0.0.1", port) == 0
        pub = Publisher("127.0.0.1", port)  # the boards go on publishing while no gateway runs
        for i in range(20):
            pub.publish("sqal/v1/ESP32_EMB_02/sample", b"%d" % i)
        await asyncio.to_thread(pub.wait_all)
        pub.close()

        e = await start(engines, tmp_path)  # the next start
        assert e.adopted and e.pid == pid
        assert (e.url, e.mqtt_url) == (first["url"], first["mqtt_url"])
        assert await samples_in_stream(e) == 20  # what it acknowledged meanwhile is there
        await e.stop()
        assert not running(pid)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        if pid is not None and running(pid):
            os.kill(pid, signal.SIGKILL)


async def test_restarted_when_its_settings_changed(tmp_path: Path, engines: list[EmbeddedNats]) -> None:
    old = await start(engines, tmp_path)
    old_pid = old.pid
    assert old_pid is not None
    async with gateway_client(old) as nc:
        await streams.ensure(nc.jetstream(), StreamLimits())
    await asyncio.to_thread(board_publishes, old, 7)
    # a start with another setting (the JetStream storage bound) while the old one runs
    e = await start(engines, tmp_path, max_file_store=1 << 30)
    assert not e.adopted and e.pid != old_pid
    assert not running(old_pid)
    assert await samples_in_stream(e) == 7  # the streams are on disk: the new one has them
    log = (tmp_path / "nats" / "nats.log").read_text()
    assert f'[{old_pid}]' in log and 'Trapped "terminated" signal' in log  # the old one stopped cleanly
    # and a start with the same settings adopts the new one
    again = await start(engines, tmp_path, max_file_store=1 << 30)
    assert again.adopted and again.pid == e.pid
    await again.stop()


async def test_stop_is_a_clean_sigterm_and_keeps_what_was_acknowledged(tmp_path: Path,
                                                                       engines: list[EmbeddedNats]) -> None:
    e = await start(engines, tmp_path)
    pid = e.pid
    async with gateway_client(e) as nc:
        js = nc.jetstream()
        await streams.ensure(js, StreamLimits())
        for i in range(100):  # each acknowledged by JetStream (stored), as a board's QoS 1 publish is
            await js.publish(streams.MQTT_PREFIX + "sqal.v1.ESP32_EMB_03.sample", b"%d" % i)
    await e.stop()
    assert e.pid is None and not running(pid)  # type: ignore[arg-type]
    lines = [ln for ln in (tmp_path / "nats" / "nats.log").read_text().splitlines() if ln.startswith(f"[{pid}]")]
    assert any('Trapped "terminated" signal' in ln for ln in lines), lines[-5:]  # SIGTERM, not SIGKILL
    assert any("Server Exiting" in ln for ln in lines), lines[-5:]  # and it finished its shutdown
    e2 = await start(engines, tmp_path)
    assert not e2.adopted and e2.pid != pid
    assert await samples_in_stream(e2) == 100
    await e2.stop()


async def test_a_clean_stop_under_a_live_stream_keeps_every_acknowledged_reading(
        tmp_path: Path, engines: list[EmbeddedNats]) -> None:
    # nats-server acknowledges QoS 1 publishes for a few ms after SIGTERM stopped its JetStream
    # (11-22 of them lost per stop at 500-1,000/s with a plain SIGTERM): stop() lets the boards out
    # first. A board publishing all along: every reading it got a PUBACK for is in the stream.
    e = await start(engines, tmp_path)
    async with gateway_client(e) as nc:
        await streams.ensure(nc.jetstream(), StreamLimits())
    pub = Publisher("127.0.0.1", mqtt_port(e))
    stop = False

    def publish() -> None:
        i = 0
        while not stop:
            pub.publish("sqal/v1/ESP32_EMB_04/sample", b"%d" % i)
            i += 1
            time.sleep(0.001)

    t = threading.Thread(target=publish)
    t.start()
    try:
        await asyncio.sleep(2)
        await e.stop()
    finally:
        stop = True
        t.join()
        pub.close()
    acked = pub.acked
    assert acked > 500  # a stream, and the stop landed in it
    e2 = await start(engines, tmp_path)
    assert await samples_in_stream(e2) >= acked  # a reading may also be stored without its PUBACK
    await e2.stop()


async def test_a_busy_mqtt_port_falls_back_to_a_free_one(tmp_path: Path, engines: list[EmbeddedNats],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="gateway.nats.embedded"):
            e = await start(engines, tmp_path, mqtt_port=port)
        assert mqtt_port(e) != port
        assert mqtt_ping("127.0.0.1", mqtt_port(e)) == 0  # the boards' listener is up there
        assert any(f"MQTT port {port} is busy" in r.getMessage() for r in caplog.records)
        await e.stop()
