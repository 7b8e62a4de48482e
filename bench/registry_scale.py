"""Benchmark: the registry at scale (issue 23). Prints the figures and the bars line.

    .venv/bin/python bench/registry_scale.py [--days 7] [--boards 100] [--rate 1] [--workers 2]
                                             [--compare-readings 100000] [--lots 100]

On a fresh embedded PostgreSQL (fsync on; max_wal_size 4 GB, wal_compression on for the bulk load) in a temp
dir, or SQAL_DATABASE_URL's server (databases are created there):

1. Bytes on disk per stored reading, before (the schema of migrations 001-005 and its store
   statement: features and raw as JSON text in the row, four indexes) and after (006: compact
   rows, raw payload apart, spans and hour rows): the same readings (graded livers of the emulator's
   scene, 100 boards, batches of 500 in time order, as the ingest commits them) stored through each
   path, then heap + indexes + TOAST of every table holding per-reading data, divided by the readings.
   The lot events they caused are printed apart (005 wrote one per lot and batch).
2. The scale database: `--days` of `--boards` at `--rate` readings/s generated (registry/generate.py)
   with their lots and events; its size per reading.
3. At scale, p95 of `--lots` random lots: the lot's timeline (first page) and its stats (the lot as
   GET /api/lots/{id} answers it and its summary from the hour rows); the devices list.
4. The ingest's store path (what depends on the registry's size: COPY, spans, dedupe, link, insert,
   raw, hour rows, events; rows encoded as the ingest's workers encode them, a prepared writer
   session, batches of 500 from 100 boards linked through an assignment, a quarter re-sent) on an
   empty registry and on the full one, interleaved, three rounds each: stored readings/s and the
   ratio full / empty.
5. Dropping the oldest day of raw payloads on the full registry while the store path runs: the
   drop's duration, the batches committed meanwhile and whether the writer ever waited on a lock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqalfw import codec

from registry import assignments, blobs, devices, gavage, lots, partitions, sample_hours, samples, timeline
from registry.embedded import EmbeddedPostgres
from registry.generate import FleetPlan, generate
from registry.migrate import default_migrations_dir, migrate
from registry.sample_pool import pool as reading_pool

BATCH = 500
READING_TABLES = ("sqal_samples", "sqal_sample_raw", "sqal_sample_spans", "sqal_sample_hours")

# The store statement of migration 005's schema (registry/samples.py before issue 23), for the
# "before" figure: staging with JSON text, then the linked insert; its lot events per lot and batch.
_STAGE_005 = """CREATE TEMP TABLE IF NOT EXISTS stage005 (
    ord integer, device_id text, boot bigint, seq bigint, lot_id text, measured_at timestamptz,
    received_at timestamptz, clock_synced boolean, score real, grade text, device_score real,
    device_grade text, weight_g real, volume_cm3 real, alerts text[], features text, raw text)"""
_STORE_005 = """
WITH src AS (
    SELECT DISTINCT ON (device_id, boot, seq) i.* FROM stage005 i ORDER BY device_id, boot, seq, ord
), linked AS (
    SELECT s.*, l.id AS known_lot FROM src s LEFT JOIN lots l ON l.id = s.lot_id
), ins AS (
    INSERT INTO sqal_samples (device_id, boot, seq, lot_id, link_kind, requested_lot_id, link_issue, measured_at,
                              received_at, clock_synced, score, grade, device_score, device_grade, weight_g,
                              volume_cm3, alerts, features, raw)
    SELECT device_id, boot, seq, known_lot, CASE WHEN known_lot IS NOT NULL THEN 'explicit' ELSE 'none' END, lot_id,
           CASE WHEN known_lot IS NULL THEN 'unknown_lot' END, measured_at, received_at, clock_synced, score, grade,
           device_score, device_grade, weight_g, volume_cm3, alerts, features::json, raw::json
    FROM linked ORDER BY ord
    ON CONFLICT (device_id, boot, seq) DO NOTHING
    RETURNING lot_id, device_id, grade, score, weight_g, measured_at, received_at
), emptied AS (DELETE FROM stage005), ev AS (
    INSERT INTO lot_events (lot_id, stage, type, data, description)
    SELECT lot_id, 'sqal', 'sqal_samples',
           jsonb_build_object('count', count(*), 'devices', to_jsonb(array_agg(DISTINCT device_id)),
               'grades', (SELECT jsonb_object_agg(g, n) FROM (SELECT COALESCE(i2.grade, 'none') AS g, count(*) AS n
                          FROM ins i2 WHERE i2.lot_id = ins.lot_id GROUP BY 1) gg),
               'mean_score', round(avg(score)::numeric, 3), 'mean_weight_g', round(avg(weight_g)::numeric, 1),
               'first_measured_at', min(COALESCE(measured_at, received_at)),
               'last_measured_at', max(COALESCE(measured_at, received_at))),
           count(*) || ' SQAL sample(s) from ' || string_agg(DISTINCT device_id, ', ')
    FROM ins WHERE lot_id IS NOT NULL GROUP BY lot_id RETURNING lot_id)
SELECT count(*) FROM ins
"""


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18] if len(xs) >= 20 else max(xs)


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


# ---- the readings stored through each path ----

def readings(n: int, boards: int, start: datetime, lot_of: dict[str, str] | None = None, seed: int = 3,
             prefix: str = "ESP32_BENCH", boot: int = 7) -> list[dict[str, Any]]:
    """`n` readings of `boards` boards at 1 reading/s each, in time order, as the ingest makes rows;
    naming the board's lot in `lot_of`, else none (linked through the board's assignment)."""
    livers = reading_pool(256, seed=seed)
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        b, s = i % boards, i // boards
        dev = f"{prefix}_{b:03d}"
        r = livers[rnd.randrange(len(livers))]
        t = start + timedelta(seconds=s)
        ts = int(t.timestamp() * 1000)
        lot = lot_of[dev] if lot_of else None
        sample = {"v": 1, "device_id": dev, "boot": boot, "seq": s, "ts": ts, "synced": True, "fw": "0.1.0",
                  "tof": r.tof, "spec": r.spec, "q": r.q, **({"lot_id": lot} if lot else {})}
        features = dict(r.features)
        features["clock"] = {"device_ts": ts, "skew_ms": rnd.randint(5, 40), "flags": []}
        out.append({"device_id": dev, "boot": boot, "seq": s, "lot_id": lot, "measured_at": t,
                    "received_at": t + timedelta(milliseconds=30), "clock_synced": True, "score": r.score,
                    "grade": r.grade, "device_score": r.q["score"], "device_grade": r.q["grade"],
                    "weight_g": r.weight_g, "volume_cm3": r.volume_cm3, "alerts": list(r.alerts),
                    "features": features, "raw": sample})
    return out


def encoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the ingest's grading workers hand them to store_samples (gateway/ingest/grading.py)."""
    out = []
    for r in rows:
        row = dict(r)
        row["features"] = blobs.pack_features(orjson.dumps(r["features"]))
        row["raw"] = blobs.pack_raw(codec.encode_sample_bin(r["raw"]))
        out.append({"device_id": r["device_id"], "boot": r["boot"], "seq": r["seq"],
                    samples.ENCODED: samples.encode_row(row)})
    return out


async def make_lots(pool: asyncpg.Pool, devs: list[str], *, assign: bool = False) -> dict[str, str]:
    """A lot per device, in inspection (`assign`: through an assignment, else only named)."""
    out = {}
    for dev in devs:
        lot = await lots.create_lot(pool, farmer_id="B1", farmer_name="Bench", site_code="LL", genetics="Mulard",
                                    nb_ducks=50, planned_duration_days=12)
        await gavage.record_feeding(pool, lot["id"], day=1, moment="morning", planned_dose_g=200, actual_dose_g=200)
        await lots.mark_ready(pool, lot["id"])
        if assign:
            await assignments.assign_device(pool, lot["id"], dev, valid_from=datetime.now(UTC) - timedelta(days=30))
        out[dev] = lot["id"]
    return out


async def table_bytes(pool: asyncpg.Pool, tables: tuple[str, ...]) -> int:
    """Heap + indexes + TOAST of the tables (a partitioned one: of its partitions)."""
    total = 0
    for t in tables:
        total += int(await pool.fetchval(
            """SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
               WHERE c.oid = to_regclass($1) OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass($1))""",
            t))
    return total


async def bytes_before(url_of: Any, create_db: Any, n: int) -> tuple[float, float]:
    """(bytes per reading of sqal_samples, of lot_events) through the 005 schema and store statement."""
    name = await create_db("before")
    tmp = Path(tempfile.mkdtemp(prefix="sqal-005-"))
    for f in sorted(default_migrations_dir().glob("00[1-5]_*.sql")):
        shutil.copy(f, tmp / f.name)
    pool = await asyncpg.create_pool(url_of(name), min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, tmp)
        devs = [f"ESP32_BENCH_{b:03d}" for b in range(100)]
        rows = readings(n, 100, datetime(2027, 1, 4, tzinfo=UTC), await make_lots(pool, devs))
        ev0 = await table_bytes(pool, ("lot_events",))
        async with pool.acquire() as conn:
            await conn.execute(_STAGE_005)
            for i in range(0, n, BATCH):
                records = [(j, r["device_id"], r["boot"], r["seq"], r["lot_id"], r["measured_at"], r["received_at"],
                            True, r["score"], r["grade"], r["device_score"], r["device_grade"], r["weight_g"],
                            r["volume_cm3"], r["alerts"], orjson.dumps(r["features"]).decode(),
                            orjson.dumps(r["raw"]).decode()) for j, r in enumerate(rows[i:i + BATCH])]
                async with conn.transaction():
                    await conn.copy_records_to_table("stage005", records=records)
                    await conn.fetchval(_STORE_005)
        await pool.execute("VACUUM ANALYZE sqal_samples")
        assert await pool.fetchval("SELECT count(*) FROM sqal_samples") == n
        return (await table_bytes(pool, ("sqal_samples",)) / n,
                (await table_bytes(pool, ("lot_events",)) - ev0) / n)
    finally:
        await pool.close()
        shutil.rmtree(tmp, ignore_errors=True)


async def bytes_after(url_of: Any, create_db: Any, n: int) -> tuple[float, float, dict[str, float]]:
    """The same readings through store_samples on the 006 schema."""
    name = await create_db("after")
    pool = await asyncpg.create_pool(url_of(name), min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await partitions.ensure(conn, date(2027, 1, 3), date(2027, 1, 6))
        devs = [f"ESP32_BENCH_{b:03d}" for b in range(100)]
        rows = encoded(readings(n, 100, datetime(2027, 1, 4, tzinfo=UTC), await make_lots(pool, devs)))
        base = {t: await table_bytes(pool, (t,)) for t in READING_TABLES}
        ev0 = await table_bytes(pool, ("lot_events",))
        async with pool.acquire() as conn:
            await samples.prepare_session(conn)
            for k, i in enumerate(range(0, n, BATCH)):
                async with conn.transaction():
                    await samples.store_samples(conn, rows[i:i + BATCH], session_ready=True)
                if k % 4 == 3:
                    await samples.tidy_session(conn)
        for t in READING_TABLES:
            await pool.execute(f"VACUUM ANALYZE {t}")
        assert await pool.fetchval("SELECT count(*) FROM sqal_samples") == n
        per = {t: (await table_bytes(pool, (t,)) - base[t]) / n for t in READING_TABLES}
        return sum(per.values()), (await table_bytes(pool, ("lot_events",)) - ev0) / n, per
    finally:
        await pool.close()


# ---- at scale ----

async def queries(pool: asyncpg.Pool, n_lots: int, seed: int = 7) -> dict[str, list[float]]:
    ids = [r["id"] for r in await pool.fetch("SELECT id FROM lots WHERE id IN (SELECT DISTINCT lot_id FROM "
                                             "sqal_sample_hours WHERE lot_id IS NOT NULL)")]
    pick = random.Random(seed).sample(ids, min(n_lots, len(ids)))
    out: dict[str, list[float]] = {"timeline": [], "stats": [], "devices": []}
    for lot_id in pick:
        t = time.perf_counter()
        await timeline.timeline(pool, lot_id, limit=100)
        out["timeline"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await lots.get_lot(pool, lot_id)
        await sample_hours.lot_summary(pool, lot_id)
        out["stats"].append(time.perf_counter() - t)
        t = time.perf_counter()
        await devices.list_devices(pool, limit=500)
        out["devices"].append(time.perf_counter() - t)
    return out


async def store_rate(pool: asyncpg.Pool, batches: list[list[dict[str, Any]]]) -> tuple[float, int]:
    """Stored readings/s of the store path over `batches` (a quarter re-sent), one writer session."""
    new = 0
    async with pool.acquire() as conn:
        await samples.prepare_session(conn)
        t = time.perf_counter()
        for k, b in enumerate(batches):
            async with conn.transaction():
                new += (await samples.store_samples(conn, b, session_ready=True)).new_count
            if k % 4 == 3:
                async with conn.transaction():
                    await samples.store_samples(conn, b, session_ready=True)  # the re-sent batch: all duplicates
                await samples.tidy_session(conn)
        return new / (time.perf_counter() - t), new


async def ingest_ratio(empty: asyncpg.Pool, full: asyncpg.Pool, rounds: int, n_batches: int) -> dict[str, Any]:
    devs = [f"ESP32_INGEST_{b:03d}" for b in range(100)]
    await make_lots(empty, devs, assign=True)
    await make_lots(full, devs, assign=True)
    rates: dict[str, list[float]] = {"empty": [], "full": []}
    start = datetime.now(UTC) - timedelta(minutes=30)
    for k in range(rounds):
        for which, pool in (("empty", empty), ("full", full)):
            rows = readings(n_batches * BATCH, 100, start + timedelta(seconds=k * n_batches * BATCH // 100),
                            seed=11 + k, prefix="ESP32_INGEST", boot=100 + k)
            enc = encoded(rows)
            rate, _ = await store_rate(pool, [enc[i:i + BATCH] for i in range(0, len(enc), BATCH)])
            rates[which].append(rate)
    e, f = statistics.median(rates["empty"]), statistics.median(rates["full"])
    return {"empty": rates["empty"], "full": rates["full"], "ratio": f / e}


async def drop_while_storing(pool: asyncpg.Pool) -> dict[str, Any]:
    """Drop the oldest raw day that holds rows while a writer stores batches; watch the writer."""
    parts = await partitions.partitions(pool, partitions.RAW)
    oldest = (await partitions.oldest_data(pool, parts))[partitions.RAW]
    victim = next(p for p in parts if p.lo == oldest)
    devs = [f"ESP32_DROP_{b:03d}" for b in range(100)]
    await make_lots(pool, devs, assign=True)
    enc = encoded(readings(200 * BATCH, 100, datetime.now(UTC) - timedelta(minutes=20), seed=99,
                           prefix="ESP32_DROP"))
    lat: list[tuple[float, float]] = []  # (end time, latency)
    waits = 0
    stop = asyncio.Event()
    writer_pid: list[int] = []

    async def writer() -> None:
        async with pool.acquire() as conn:
            writer_pid.append(conn.get_server_pid())
            await samples.prepare_session(conn)
            for k in range(0, len(enc), BATCH):
                if stop.is_set():
                    break
                t = time.perf_counter()
                async with conn.transaction():
                    await samples.store_samples(conn, enc[k:k + BATCH], session_ready=True)
                lat.append((time.perf_counter(), time.perf_counter() - t))
                if k // BATCH % 4 == 3:
                    await samples.tidy_session(conn)

    async def watch(until: asyncio.Event) -> None:
        nonlocal waits
        async with pool.acquire() as conn:
            while not until.is_set():
                if writer_pid and await conn.fetchval(
                        "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", writer_pid[0]):
                    waits += 1
                await asyncio.sleep(0.005)

    task = asyncio.create_task(writer())
    await asyncio.sleep(2.0)  # the writer in its stride
    dropping = asyncio.Event()
    watcher = asyncio.create_task(watch(dropping))
    t0 = time.perf_counter()
    dropped = await partitions.drop(pool, victim)
    t1 = time.perf_counter()
    dropping.set()
    await watcher
    await asyncio.sleep(1.0)
    stop.set()
    await task
    before = [x for end, x in lat if end < t0]
    during = [x for end, x in lat if t0 <= end <= t1 + max((x for _, x in lat), default=0)]
    return {"partition": victim.name, "bytes": victim.bytes, "seconds": dropped.seconds, "lock_waits": waits,
            "batches_during": len([1 for end, _ in lat if t0 <= end <= t1]),
            "median_before": statistics.median(before) if before else float("nan"),
            "max_during": max(during) if during else float("nan")}


async def run(url: str, args: argparse.Namespace) -> None:
    counter = iter(range(1000))

    def url_of(name: str) -> str:
        from urllib.parse import urlsplit, urlunsplit
        p = urlsplit(url)
        return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))

    async def create_db(tag: str) -> str:
        name = f"sqal_scale_{tag}_{os.getpid()}_{next(counter)}"
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    n = args.compare_readings
    print(f"== 1. bytes on disk per stored reading ({n:,} readings, 100 boards, batches of {BATCH}) ==")
    before, ev_before = await bytes_before(url_of, create_db, n)
    after, ev_after, per = await bytes_after(url_of, create_db, n)
    print(f"before (005: sqal_samples with features and raw as JSON, 4 indexes): {before:,.0f} B/reading")
    print(f"after  (006): {after:,.0f} B/reading = " + " + ".join(f"{t} {v:,.0f}" for t, v in per.items()))
    print(f"ratio before / after: {before / after:.2f}x   (lot events written meanwhile: {ev_before:,.0f} -> "
          f"{ev_after:,.0f} B/reading)")

    plan = FleetPlan(days=args.days, boards=args.boards, rate_hz=args.rate, seed=1)
    print(f"\n== 2. scale: {args.days} days x {args.boards} boards x {args.rate}/s = "
          f"{args.days * args.boards * plan.per_day:,} readings ==")
    scale = await create_db("full")
    conn = await asyncpg.connect(url_of(scale))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    rep = await generate(url_of(scale), plan, workers=args.workers, progress=lambda m: print("  " + m, flush=True))
    print(f"generated {rep.readings:,} readings, {rep.lots:,} lots, {rep.events:,} events in {rep.seconds:.0f} s "
          f"({rep.readings / rep.seconds:,.0f} readings/s)")
    t = time.perf_counter()
    conn = await asyncpg.connect(url_of(scale))
    try:  # what autovacuum would have done by then on a registry running for a week (visibility map, stats)
        await conn.execute("VACUUM ANALYZE sqal_samples, sqal_sample_raw, sqal_sample_hours, lot_events")
    finally:
        await conn.close()
    print(f"VACUUM ANALYZE of the readings' tables: {time.perf_counter() - t:.0f} s")
    full = await asyncpg.create_pool(url_of(scale), min_size=2, max_size=4)
    empty_name = await create_db("empty")
    empty = await asyncpg.create_pool(url_of(empty_name), min_size=2, max_size=4)
    try:
        async with empty.acquire() as c:
            await migrate(c)
        sizes = {t: await table_bytes(full, (t,)) for t in (*READING_TABLES, "lot_events", "lots")}
        print("sizes: " + ", ".join(f"{t} {v / 2**30:.2f} GiB" for t, v in sizes.items()))
        print(f"readings' tables per reading at scale (bulk-loaded): "
              f"{sum(sizes[t] for t in READING_TABLES) / rep.readings:,.0f} B")

        print(f"\n== 3. queries at scale, {args.lots} random lots ==")
        await queries(full, 5)  # warm the caches a little, as a running gateway has them
        q = await queries(full, args.lots)
        for k, label in (("timeline", "lot timeline (first page)"), ("stats", "lot stats (lot + summary)"),
                         ("devices", "devices list")):
            print(f"{label}: p50 {ms(statistics.median(q[k]))}, p95 {ms(p95(q[k]))}, max {ms(max(q[k]))}")

        print("\n== 4. store path, empty vs full registry (3 rounds each, interleaved) ==")
        ing = await ingest_ratio(empty, full, 3, args.ingest_batches)
        print("empty: " + ", ".join(f"{x:,.0f}" for x in ing["empty"]) + " readings/s; full: "
              + ", ".join(f"{x:,.0f}" for x in ing["full"]) + f" readings/s; ratio full / empty (medians): "
              f"{ing['ratio']:.3f}")

        print("\n== 5. dropping the oldest day of raw payloads while storing ==")
        dr = await drop_while_storing(full)
        print(f"dropped {dr['partition']} ({dr['bytes'] / 2**20:,.0f} MiB) in {dr['seconds']:.3f} s; "
              f"{dr['batches_during']} batches committed during it; longest batch around it "
              f"{ms(dr['max_during'])} (median before {ms(dr['median_before'])}); writer seen waiting on a lock: "
              f"{dr['lock_waits']} times")
    finally:
        await full.close()
        await empty.close()

    bars = [
        ("bytes/reading before/after >= 3x", before / after >= 3),
        ("timeline p95 < 50 ms", p95(q["timeline"]) < 0.05),
        ("stats p95 < 50 ms", p95(q["stats"]) < 0.05),
        ("devices p95 < 50 ms", p95(q["devices"]) < 0.05),
        ("ingest full/empty >= 0.9", ing["ratio"] >= 0.9),
        ("raw day drop < 1 s", dr["seconds"] < 1.0),
        ("drop blocks no ingest", dr["lock_waits"] == 0),
    ]
    print("\nbars: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in bars))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--boards", type=int, default=100)
    ap.add_argument("--rate", type=float, default=1.0, help="readings per second per board")
    ap.add_argument("--workers", type=int, default=2, help="generator processes")
    ap.add_argument("--compare-readings", type=int, default=100_000, help="readings of the before/after figure")
    ap.add_argument("--lots", type=int, default=100)
    ap.add_argument("--ingest-batches", type=int, default=40, help="batches of 500 per store-path round")
    args = ap.parse_args()
    external = os.environ.get("SQAL_DATABASE_URL")
    if external:
        asyncio.run(run(external, args))
        return
    tmp = Path(tempfile.mkdtemp(prefix="sqal-scale-"))
    tmp.chmod(0o711)  # the unprivileged postgres user must traverse it when we run as root
    server = EmbeddedPostgres(tmp / "data")
    try:
        dsn = server.start()

        async def tune() -> None:
            conn = await asyncpg.connect(dsn)
            try:  # fewer checkpoints (and smaller full-page images) during the bulk load; nothing else changed
                await conn.execute("ALTER SYSTEM SET max_wal_size = '4GB'")
                await conn.execute("ALTER SYSTEM SET wal_compression = on")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()

        asyncio.run(tune())
        asyncio.run(run(dsn, args))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
