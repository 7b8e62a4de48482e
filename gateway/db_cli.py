"""`sqal db ...`: the registry database seen by the person who runs it.

- `sqal db status`: sizes per table and per partition of the readings, oldest data, the retention
  policy and the next drop of each readings' table.
- `sqal db retention`: one maintenance run now (partitions made ahead, expired ones dropped), what
  it did printed.

Both use SQAL_DATABASE_URL, else the embedded PostgreSQL of SQAL_DATA_DIR (adopted when a gateway
runs it; started and stopped again otherwise). Migrations are applied first, as the gateway does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from gateway.config import Settings
from gateway.maintenance import RetentionPolicy, run_once
from registry import partitions
from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate

db_app = typer.Typer(name="db", help="The registry database: sizes, partitions, retention.", no_args_is_help=True)


@asynccontextmanager
async def _pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    embedded = None
    dsn = settings.database_url
    if not dsn:
        embedded = EmbeddedPostgres(settings.ensure_data_dir())
        dsn = await asyncio.to_thread(embedded.start)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            yield pool
        finally:
            await pool.close()
    finally:
        if embedded is not None and embedded.started_here:  # a gateway's server is left running
            await asyncio.to_thread(embedded.stop)


def size(n: int) -> str:
    """Bytes for people: 1.5 GB, 12.0 MB, 512 B."""
    x = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if x < 1024 or unit == "TB":
            return f"{int(x)} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{n} B"


def render_status(st: dict[str, Any], console: Console) -> None:
    summary = Table(title=f"Readings (today {st['today']})")
    for col in ("table", "size", "rows (est.)", "partitions", "oldest data", "retention", "next drop"):
        summary.add_column(col)
    for name, t in st["readings"].items():
        nd = t["next_drop"]
        summary.add_row(name, size(t["bytes"]), f"{t['rows']:,}", str(len(t["partitions"])),
                        str(t["oldest_data"] or "-"), f"{t['retention_days']} days",
                        f"{nd['partition']} on {nd['on']}" if nd else "-")
    console.print(summary)
    parts = Table(title="Partitions")
    for col in ("table", "partition", "from", "to", "size", "rows (est.)"):
        parts.add_column(col)
    for name, t in st["readings"].items():
        for p in t["partitions"]:
            parts.add_row(name, p["name"], str(p["from"]), str(p["to"]), size(p["bytes"]),
                          f"{max(p['rows'], 0):,}")
    console.print(parts)
    other = Table(title="Other tables (kept)")
    other.add_column("table")
    other.add_column("size")
    for name, n in st["tables"].items():
        other.add_row(name, size(n))
    console.print(other)


@db_app.command("status")
def status_cmd() -> None:
    """Sizes per table and partition, oldest data, retention and the next drop."""
    settings = Settings()

    async def go() -> dict[str, Any]:
        async with _pool(settings) as pool:
            return await partitions.status(pool, datetime.now(UTC).date(), raw_days=settings.retention_raw_days,
                                           samples_days=settings.retention_samples_days)

    render_status(asyncio.run(go()), Console(width=140))


@db_app.command("retention")
def retention_cmd() -> None:
    """Run the maintenance now: partitions made ahead, the retention policy applied."""
    settings = Settings()
    policy = RetentionPolicy.from_settings(settings)

    async def go() -> None:
        async with _pool(settings) as pool:
            report = await run_once(pool, policy)
        if not report.ran:
            typer.echo("another process is running the maintenance now; nothing done")
            return
        typer.echo(f"partitions made ahead: {', '.join(report.created) or 'none'}")
        for d in report.dropped:
            typer.echo(f"dropped {d.name} ({d.parent}, {d.lo}..{d.hi}, {size(d.bytes)}) in {d.seconds:.3f} s")
        if not report.dropped:
            typer.echo(f"nothing past retention (raw {policy.raw_days} days, readings {policy.samples_days} days)")

    asyncio.run(go())
