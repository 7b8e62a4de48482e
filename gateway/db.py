"""Opening the database: SQAL_DATABASE_URL when set, else the embedded PostgreSQL; then migrations.

After the connection is made the code path is the same for both: one asyncpg pool, migrations
applied under their advisory lock (several gateway replicas may start at once).
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

import asyncpg

from gateway.config import Settings
from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate

log = logging.getLogger(__name__)


class Database(NamedTuple):
    pool: asyncpg.Pool
    embedded: EmbeddedPostgres | None  # None when SQAL_DATABASE_URL points at a server we do not own

    async def close(self) -> None:
        """Close the pool, then stop the embedded server (if we run one)."""
        try:
            await self.pool.close()
        finally:
            if self.embedded is not None:
                await asyncio.to_thread(self.embedded.stop)


async def open_database(settings: Settings) -> Database:
    embedded: EmbeddedPostgres | None = None
    dsn = settings.database_url
    if not dsn:
        embedded = EmbeddedPostgres(settings.ensure_data_dir())
        dsn = await asyncio.to_thread(embedded.start)
        log.info("embedded PostgreSQL at %s (data in %s)", embedded.display_dsn, embedded.pgdata)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=settings.database_pool_size)
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn)
        except BaseException:
            await pool.close()
            raise
    except BaseException:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        raise
    if applied:
        log.info("applied migrations %s", applied)
    return Database(pool, embedded)
