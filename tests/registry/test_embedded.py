"""The embedded PostgreSQL manager: persistence, restart, adoption, crash recovery, signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from registry import lots
from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate
from tests.fixtures.postgres import make_data_dir
from tests.registry.helpers import LOT_ARGS


@pytest.fixture
def data_dir() -> Iterator[Path]:
    d = make_data_dir("sqal-emb-")
    try:
        yield d / "data"
    finally:
        EmbeddedPostgres(d / "data").stop()
        shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    from registry.embedded import _pid_alive

    return _pid_alive(pid)


async def test_data_survives_restart(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir, fsync=False)
    dsn = server.start()
    assert server.started_here and server.pgdata == data_dir / "postgres" or server.pgdata.is_dir()
    if os.geteuid() == 0:
        assert server.pgdata.stat().st_uid != 0, "postgres runs as an unprivileged user"
    conn = await asyncpg.connect(dsn)
    await migrate(conn)
    lot = await lots.create_lot(conn, **LOT_ARGS)
    await conn.close()
    port, pid = server.port, server.pid
    server.stop()
    assert pid is not None and not _alive(pid) and not server.running
    dsn2 = server.start()
    assert server.port == port, "the remembered port is reused when free"
    conn = await asyncpg.connect(dsn2)
    try:
        assert (await lots.get_lot(conn, lot["id"]))["farmer_name"] == LOT_ARGS["farmer_name"]
        assert await migrate(conn) == []
        nxt = await lots.create_lot(conn, **LOT_ARGS)
        assert int(nxt["id"][-4:]) == int(lot["id"][-4:]) + 1, "the id counter survives the restart"
    finally:
        await conn.close()
    server.restart()
    assert server.running
    server.stop()


def test_adopts_live_postmaster_and_recovers_after_kill(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir, fsync=False)
    first.start()
    pid = first.pid
    second = EmbeddedPostgres(data_dir, fsync=False)  # e.g. our process was killed and restarted
    second.start()
    assert not second.started_here and second.pid == pid and second.port == first.port
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # a crash: postmaster.pid stays behind
    for _ in range(100):
        if not _alive(pid):
            break
        time.sleep(0.05)
    third = EmbeddedPostgres(data_dir, fsync=False)
    third.start()
    assert third.started_here and third.pid not in (None, pid)
    third.stop()
    assert not third.running


def test_sigterm_stops_the_server(data_dir: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        from registry.embedded import EmbeddedPostgres
        s = EmbeddedPostgres({str(data_dir)!r}, fsync=False)
        with s.stop_on_signals():
            s.start()
            print(s.pid, flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert _alive(pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert not _alive(pid), "the postmaster is stopped before the process exits"
    assert not EmbeddedPostgres(data_dir).running


def test_untraversable_data_dir_uses_fallback_when_root(tmp_path: Path) -> None:
    outer = make_data_dir("sqal-fb-")
    private = outer / "private"
    private.mkdir(mode=0o700)  # like /root: the service user cannot traverse it
    fallback = outer / "varlib"
    server = EmbeddedPostgres(private / "data", fsync=False, fallback_base=fallback)
    if os.geteuid() != 0:  # not root: postgres runs as us, the data dir is used as is
        assert server.pgdata == private / "data" / "postgres"
        shutil.rmtree(outer, ignore_errors=True)
        return
    try:
        server.start()
        assert server.pgdata.parent == fallback and (private / "data" / "postgres").resolve() == server.pgdata
        assert oct(private.stat().st_mode & 0o777) == "0o700", "no parent directory mode is changed"
        server.stop()
        again = EmbeddedPostgres(private / "data", fsync=False, fallback_base=fallback)
        assert again.pgdata == server.pgdata, "the symlink is followed on the next run"
    finally:
        server.stop()
        shutil.rmtree(outer, ignore_errors=True)
