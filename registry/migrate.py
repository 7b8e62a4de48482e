"""Schema migrations: registry/migrations/NNN_name.sql, applied in order, each exactly once.

- `schema_migrations` records version, name, checksum (sha256 of the file) and applied_at.
- Re-running applies nothing new. A file whose checksum changed after it was applied is an
  error (MigrationError): applied migrations are history, fix forward with a new file.
- The whole run holds a session advisory lock, so two processes starting at once apply each
  migration once; the second waits, then sees everything applied.
- Each migration runs in its own transaction together with its schema_migrations row.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

# Arbitrary constant ("SQALMIG" in ASCII): the advisory lock key that serialises migration runs.
MIGRATION_LOCK_KEY = 0x5351414C4D4947
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file or the recorded history is inconsistent; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def default_migrations_dir() -> Path:
    return Path(str(resources.files("registry") / "migrations"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or default_migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files must be named NNN_name.sql (lowercase)")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version:03d} already used by {found[version].name}")
        found[version] = Migration(version, m.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(conn: asyncpg.Connection, directory: Path | None = None) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call (empty when none)."""
    migrations = load_migrations(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
        known = {m.version for m in migrations}
        for version, row in applied.items():
            if version not in known:
                raise MigrationError(
                    f"database has migration {version:03d}_{row['name']} that this code does not know (newer code ran here?)")
        done: list[int] = []
        for m in migrations:
            row = applied.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrationError(
                        f"{m.version:03d}_{m.name}.sql changed after it was applied (checksum {m.checksum[:12]} "
                        f"!= recorded {row['checksum'][:12]}); add a new migration instead of editing it")
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version, m.name, m.checksum)
            done.append(m.version)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def migrate_dsn(dsn: str, directory: Path | None = None) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, directory)
    finally:
        await conn.close()
