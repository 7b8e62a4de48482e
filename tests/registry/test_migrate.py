"""Migrations: applied once, re-run changes nothing, edits are refused, concurrency is safe."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from registry.migrate import MigrationError, default_migrations_dir, load_migrations, migrate, migrate_dsn
from tests.fixtures.postgres import PgServer


@pytest.fixture
async def empty_db(pg_server: PgServer) -> AsyncIterator[str]:
    name = await pg_server.create_database(migrated=False)
    try:
        yield pg_server.url_for(name)
    finally:
        await pg_server.drop_database(name)


def test_files_are_ordered_and_named() -> None:
    ms = load_migrations()
    assert [m.version for m in ms] == sorted(m.version for m in ms) and ms[0].version == 1


async def test_apply_then_rerun_changes_nothing(empty_db: str) -> None:
    assert await migrate_dsn(empty_db) == [m.version for m in load_migrations()]
    conn = await asyncpg.connect(empty_db)
    try:
        before = await conn.fetch("SELECT * FROM schema_migrations ORDER BY version")
        assert before[0]["checksum"] == load_migrations()[0].checksum
        assert await migrate(conn) == []
        assert await conn.fetch("SELECT * FROM schema_migrations ORDER BY version") == before
    finally:
        await conn.close()


async def test_edited_migration_is_refused(empty_db: str, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), d)
    await migrate_dsn(empty_db, d)
    first = min(d.glob("*.sql"))
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match=f"{first.name} changed after it was applied"):
        await migrate_dsn(empty_db, d)


async def test_new_migration_applies_and_unknown_is_refused(empty_db: str, tmp_path: Path) -> None:
    d = tmp_path / "migrations"
    shutil.copytree(default_migrations_dir(), d)
    await migrate_dsn(empty_db, d)
    (d / "900_extra.sql").write_text("CREATE TABLE extra_t (x int);")
    assert await migrate_dsn(empty_db, d) == [900]
    with pytest.raises(MigrationError, match="900_extra"):
        await migrate_dsn(empty_db)  # code without 900 meets a database that has it


async def test_bad_file_name(tmp_path: Path) -> None:
    (tmp_path / "1_x.sql").write_text("")
    with pytest.raises(MigrationError, match="1_x.sql"):
        load_migrations(tmp_path)


async def test_concurrent_tasks_apply_once(empty_db: str) -> None:
    results = await asyncio.gather(*(migrate_dsn(empty_db) for _ in range(4)))
    assert sorted(map(len, results)) == [0, 0, 0, len(load_migrations())]


async def test_concurrent_processes_apply_once(empty_db: str) -> None:
    code = "import asyncio, sys; from registry.migrate import migrate_dsn; print(len(asyncio.run(migrate_dsn(sys.argv[1]))))"
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, empty_db, stdout=subprocess.PIPE)
             for _ in range(2)]
    outs = [(await asyncio.wait_for(p.communicate(), 60))[0].decode().strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(outs) == ["0", str(len(load_migrations()))]
    conn = await asyncpg.connect(empty_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
    finally:
        await conn.close()
