"""Benchmark: embedded PostgreSQL start times and store_samples throughput (batches of 500).

    .venv/bin/python bench/registry_store.py [--batches 40] [--batch-size 500] [--fsync/--no-fsync]

Uses a fresh embedded cluster in a temp dir (or SQAL_DATABASE_URL when set: then the start
times are skipped). Half of each batch links through a device assignment, half names its lot,
and one batch in four is re-sent whole to measure the duplicate path too. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from registry import assignments, gavage, lots, samples
from registry.embedded import EmbeddedPostgres
from registry.migrate import migrate


def sample(dev: str, boot: int, seq: int, lot_id: str | None, t: datetime) -> dict[str, object]:
    return {"device_id": dev, "boot": boot, "seq": seq, "lot_id": lot_id, "measured_at": t, "clock_synced": True,
            "score": 0.78, "grade": "A", "device_score": 0.77, "device_grade": "A", "weight_g": 612.4,
            "volume_cm3": 646.7, "alerts": [], "features": {"tof": {"volume_cm3": 646.7, "defects": []},
                                                              "spectral": {"freshness": 0.86, "fat_quality": 0.84}},
            "raw": {"v": 1, "dev": dev, "boot": boot, "seq": seq}}


async def run(dsn: str, batches: int, size: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
    lot = await lots.create_lot(pool, farmer_id="B1", farmer_name="Bench", site_code="LL", genetics="Mulard",
                                nb_ducks=50, planned_duration_days=12)
    await gavage.record_feeding(pool, lot["id"], day=1, moment="morning", planned_dose_g=200, actual_dose_g=200)
    await lots.mark_ready(pool, lot["id"])
    t0 = datetime.now(UTC) - timedelta(hours=1)
    await assignments.assign_device(pool, lot["id"], "ESP32_BENCH_01", valid_from=t0)
    rows_all = []
    for b in range(batches):
        rows_all.append([sample("ESP32_BENCH_01" if i % 2 else "ESP32_BENCH_02", 1, b * size + i,
                                None if i % 2 else lot["id"], t0 + timedelta(milliseconds=b * size + i))
                         for i in range(size)])
    new = dup = 0
    start = time.perf_counter()
    for b, rows in enumerate(rows_all):
        r = await samples.store_samples(pool, rows)
        new += r.new_count
        if b % 4 == 3:
            r = await samples.store_samples(pool, rows)
            dup += r.duplicate_count
    elapsed = time.perf_counter() - start
    total = new + dup
    print(f"store_samples: {total} rows ({new} new, {dup} duplicates) in batches of {size}: "
          f"{elapsed:.2f} s -> {total / elapsed:,.0f} rows/s ({elapsed / (batches + batches // 4) * 1000:.1f} ms/batch)")
    events = await pool.fetchval("SELECT count(*) FROM lot_events WHERE type = 'sqal_samples'")
    print(f"aggregated sqal_samples events written: {events} (at most one a minute per device and hour row)")
    await pool.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--fsync", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    external = os.environ.get("SQAL_DATABASE_URL")
    if external:
        asyncio.run(run(external, args.batches, args.batch_size))
        return
    tmp = Path(tempfile.mkdtemp(prefix="sqal-bench-"))
    tmp.chmod(0o711)  # the unprivileged postgres user must traverse it when we run as root
    server = EmbeddedPostgres(tmp / "data", fsync=args.fsync)
    try:
        t = time.perf_counter()
        dsn = server.start()
        print(f"embedded PostgreSQL first start (initdb + start + create db): {time.perf_counter() - t:.2f} s")
        server.stop()
        t = time.perf_counter()
        dsn = server.start()
        print(f"embedded PostgreSQL warm start: {time.perf_counter() - t:.2f} s")
        asyncio.run(run(dsn, args.batches, args.batch_size))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
