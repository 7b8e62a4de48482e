"""Fill a registry with N days of a fleet's readings, with the lots, assignments and events that go
with them, by COPY: for benchmarks (bench/registry_scale.py) and tests at scale.

    .venv/bin/python -m registry.generate --dsn postgresql://... --days 7 --boards 100 [--rate 1]

What a generated fleet looks like (every table as the ingest and the registry would leave it):

- `boards` devices ESP32_GEN_<site>_<nnn>, each taking `rate` readings a second, all day, rebooting at
  midnight (boot = day number since 2000-01-01, seq from 0); readings received when measured.
- Each board inspects one lot after the other, `hours_per_lot` hours each: lots LOT_YYYYMMDD_NNNN
  created an hour before their inspection, `inspected` when it ends (`inspecting` for the ones still
  running at the end), with their assignment, their `lot_created`, `assign`, `sqal_samples` (one a
  minute, as the store path writes them) and `close_inspection` events, and their results (sample
  count, grade distribution, mean liver weight, ITM) computed from their readings.
- The readings themselves: graded livers of the emulator's scene (registry/sample_pool.py), a pool
  of `pool_size` drawn once per seed; each reading's raw payload is the contract binary sample with
  its own device, boot, seq, time and lot, packed as the ingest packs it (registry/blobs.py). Its
  features are the pool entry's, clock block included. Spans, partitions and hour rows as
  `store_samples` makes them.

The readings are produced in worker processes, one (board, day) chunk at a time, as COPY text, and
sent by this process; sample ids are a block reserved from the sequence. Run it on a registry the
ingest is not writing to at the same time (the ids are reserved, the rest is not locked). With a
superuser role the foreign-key triggers are skipped for the COPY (`session_replication_role`):
the generated rows reference lots generated first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from sqalfw import codec

from registry import blobs, partitions
from registry.inspection import compute_itm, itm_grade
from registry.sample_pool import PoolReading, pool
from registry.samples import SPAN_SHIFT

SITES = ("LL", "LS", "MT", "BS", "PX")
PREFIX = "ESP32_GEN"
_EPOCH_DAY = date(2000, 1, 1)
_SAMPLE_COLS = ("id", "boot", "seq", "measured_at", "received_at", "day", "score", "device_score", "weight_g",
                "volume_cm3", "clock_synced", "device_id", "lot_id", "link_kind", "requested_lot_id", "link_issue",
                "grade", "device_grade", "alerts", "features_z")
_RAW_COLS = ("id", "day", "payload")
_EVENT_COLS = ("lot_id", "at", "stage", "type", "data", "description")
_HEAD = struct.Struct("<BBBBIIQ10HBBH")  # docs/contract.md 3.2: magic .. astep


@dataclass(frozen=True)
class FleetPlan:
    days: int = 1
    boards: int = 10
    rate_hz: float = 1.0
    hours_per_lot: int = 4
    end: date | None = None  # the last day generated (default: yesterday, UTC)
    seed: int = 1
    pool_size: int = 256
    fw: str = "0.1.0"

    @property
    def last_day(self) -> date:
        return self.end or (datetime.now(UTC).date() - timedelta(days=1))

    @property
    def first_day(self) -> date:
        return self.last_day - timedelta(days=self.days - 1)

    @property
    def per_day(self) -> int:
        return int(86400 * self.rate_hz)

    @property
    def per_lot(self) -> int:
        return int(self.hours_per_lot * 3600 * self.rate_hz)

    def device(self, b: int) -> str:
        return f"{PREFIX}_{SITES[b % len(SITES)]}_{b:03d}"


@dataclass
class Report:
    readings: int = 0
    lots: int = 0
    events: int = 0
    seconds: float = 0.0
    devices: list[str] = field(default_factory=list)


# ---- the readings of one (board, day), in a worker process ----

_POOL: list[tuple[Any, ...]] = []  # per worker: the pool entries, pre-formatted


def _fmt_real(x: float | None) -> str:
    if x is None:
        return "\\N"
    return f"{struct.unpack('<f', struct.pack('<f', x))[0]:.9g}"


def _init_pool(size: int, seed: int) -> None:
    """Per worker: the pool drawn once, each entry's constant columns formatted for COPY."""
    _POOL.clear()
    for r in pool(size, seed=seed):
        features = dict(r.features)
        features["clock"] = {"device_ts": 0, "skew_ms": 12, "flags": []}
        fz = blobs.pack_features(json.dumps(features, separators=(",", ":")))
        alerts = "{" + ",".join('"' + a + '"' for a in r.alerts) + "}"
        sp = r.spec
        head_tail = (sp["F1"], sp["F2"], sp["F3"], sp["F4"], sp["F5"], sp["F6"], sp["F7"], sp["F8"], sp["CLEAR"],
                     sp["NIR"], codec.GAINS.index(sp["gain"]), sp["atime"], sp["astep"])
        q = struct.pack("<HB", int(r.q["score"] * 1000 + 0.5), codec.GRADES.index(r.q["grade"]))
        frame = bytes(b for d in r.tof["dist"] for b in (d & 0xFF, d >> 8)) + bytes(r.tof["st"])
        flags = 1 | (2 if sp["sat"] else 0) | 4 | 8  # synced, sat, lot id, q
        _POOL.append((r, "\t".join((_fmt_real(r.score), _fmt_real(r.q["score"]), _fmt_real(r.weight_g),
                                    _fmt_real(r.volume_cm3), "t")),
                      "\t".join((r.grade, r.q["grade"], alerts, "\\\\x" + fz.hex())), head_tail, q, frame, flags,
                      r.tof["res"]))


def _ts(day: date, second: float) -> str:
    s = int(second)
    return f"{day.isoformat()} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}.{int((second - s) * 1e6):06d}+00"


def chunk(plan: FleetPlan, b: int, day_index: int, id_base: int, lot_ids: list[str]) -> tuple[bytes, bytes, bytes]:
    """COPY text of the readings, raw payloads and `sqal_samples` events of board `b` on day
    `day_index` (0 = plan.first_day). `lot_ids`: the board's lot of each window of the day."""
    if not _POOL:
        _init_pool(plan.pool_size, plan.seed)
    day = plan.first_day + timedelta(days=day_index)
    dev = plan.device(b)
    devb = dev.encode()
    fwb = plan.fw.encode()
    boot = (day - _EPOCH_DAY).days
    rnd = random.Random(plan.seed * 1_000_003 + b * 10_007 + day_index)
    t0_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    sample_lines: list[str] = []
    raw_lines: list[str] = []
    event_lines: list[str] = []
    dayiso = day.isoformat()
    minute: dict[str, Any] | None = None
    per_minute = int(60 * plan.rate_hz) or 1
    npool = len(_POOL)
    for seq in range(plan.per_day):
        second = seq / plan.rate_hz
        lot = lot_ids[seq // plan.per_lot]
        r, nums, tail, head_tail, q, frame, flags, res = _POOL[rnd.randrange(npool)]
        ts = _ts(day, second)
        rid = id_base + seq
        sample_lines.append(f"{rid}\t{boot}\t{seq}\t{ts}\t{ts}\t{dayiso}\t{nums}\t{dev}\t{lot}\texplicit\t{lot}\t\\N\t"
                            f"{tail}\n")
        lotb = lot.encode()
        binary = (_HEAD.pack(codec.MAGIC, codec.VERSION, flags, res, boot, seq, t0_ms + int(second * 1000),
                             *head_tail)
                  + bytes((len(devb),)) + devb + bytes((len(fwb),)) + fwb + bytes((len(lotb),)) + lotb + q + frame)
        raw_lines.append(f"{rid}\t{dayiso}\t\\\\x{blobs.pack_raw(binary).hex()}\n")
        # one `sqal_samples` event a minute per board (what the store path's throttle leaves)
        if minute is None or minute["lot"] != lot or seq % per_minute == 0:
            if minute is not None:
                event_lines.append(_event_line(minute, dev))
            minute = {"lot": lot, "n": 0, "grades": {}, "score": 0.0, "weight": 0.0, "weighed": 0,
                      "first": ts, "last": ts}
        minute["n"] += 1
        minute["grades"][r.grade] = minute["grades"].get(r.grade, 0) + 1
        minute["score"] += r.score
        if r.weight_g:
            minute["weight"] += r.weight_g
            minute["weighed"] += 1
        minute["last"] = ts
    if minute is not None:
        event_lines.append(_event_line(minute, dev))
    return "".join(sample_lines).encode(), "".join(raw_lines).encode(), "".join(event_lines).encode()


def _event_line(m: dict[str, Any], dev: str) -> str:
    data = {"count": m["n"], "devices": [dev], "grades": m["grades"], "mean_score": round(m["score"] / m["n"], 3),
            "mean_weight_g": round(m["weight"] / m["weighed"], 1) if m["weighed"] else None,
            "first_measured_at": m["first"], "last_measured_at": m["last"]}
    text = json.dumps(data, separators=(",", ":")).replace("\\", "\\\\")
    return f"{m['lot']}\t{m['first']}\tsqal\tsqal_samples\t{text}\t{m['n']} SQAL sample(s) from {dev}\n"


# ---- the whole fleet, from this process ----

def lot_windows(plan: FleetPlan) -> dict[tuple[int, int], list[str]]:
    """{(board, day index): [lot id of each window]} with ids numbered per creation day."""
    per_day_counter: dict[date, int] = {}
    out: dict[tuple[int, int], list[str]] = {}
    windows = max(1, -(-plan.per_day // plan.per_lot))
    for d in range(plan.days):
        day = plan.first_day + timedelta(days=d)
        for b in range(plan.boards):
            ids = []
            for _w in range(windows):
                n = per_day_counter[day] = per_day_counter.get(day, 0) + 1
                ids.append(f"LOT_{day:%Y%m%d}_{n:04d}" if n <= 9999 else f"LOT_{day:%Y%m%d}_{n}")
            out[(b, d)] = ids
    return out


async def _copy(conn: asyncpg.Connection, table: str, columns: tuple[str, ...], data: bytes) -> None:
    if data:
        await conn.copy_to_table(table, source=memoryview(data), columns=columns, format="text")


async def generate(dsn: str, plan: FleetPlan, *, workers: int = 2,
                   progress: Callable[[str], None] | None = None) -> Report:
    """Generate `plan` into the registry at `dsn` (migrated). Returns what was written."""
    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    report = Report(devices=[plan.device(b) for b in range(plan.boards)])
    conn = await asyncpg.connect(dsn)
    try:
        # the lot ids of a day must not already be taken (another run, real lots)
        taken = await conn.fetchval("SELECT count(*) FROM lots WHERE id LIKE ANY($1::text[])",
                                    [f"LOT_{plan.first_day + timedelta(days=d):%Y%m%d}_%" for d in range(plan.days)])
        if taken:
            raise RuntimeError(f"the registry already has lots created on the days to generate ({taken})")
        with_fk = True
        try:
            await conn.execute("SET session_replication_role = replica")  # skip FK triggers (superuser only)
            with_fk = False
        except asyncpg.InsufficientPrivilegeError:
            pass
        await partitions.ensure(conn, plan.first_day - timedelta(days=1), plan.last_day + timedelta(days=1))
        windows = lot_windows(plan)
        await _write_fleet(conn, plan, windows, report)
        say(f"{report.lots} lots, {plan.boards} devices written; readings next "
            f"({plan.days * plan.boards * plan.per_day:,} in {plan.days * plan.boards} chunks)")
        total = plan.days * plan.boards * plan.per_day
        first_id = int(await conn.fetchval("SELECT nextval('sqal_samples_id_seq')"))
        await conn.fetchval("SELECT setval('sqal_samples_id_seq', $1)", first_id + total)
        spans = [(plan.device(b), (plan.first_day + timedelta(days=d) - _EPOCH_DAY).days, s,
                  plan.first_day + timedelta(days=d))
                 for d in range(plan.days) for b in range(plan.boards) for s in range(((plan.per_day - 1) >> SPAN_SHIFT) + 1)]
        await conn.copy_records_to_table("sqal_sample_spans", records=spans, columns=("device_id", "boot", "span", "day"))
        jobs = [(b, d) for d in range(plan.days) for b in range(plan.boards)]
        ctx = mp.get_context("spawn")
        loop = asyncio.get_running_loop()
        with ProcessPoolExecutor(max(1, workers), mp_context=ctx) as ex:
            futures: Iterator[Any] = (loop.run_in_executor(ex, chunk, plan, b, d,
                                                           first_id + (d * plan.boards + b) * plan.per_day,
                                                           windows[(b, d)]) for b, d in jobs)
            ahead = [next(futures) for _ in range(min(len(jobs), 2 * max(1, workers)))]
            done = 0
            while ahead:
                samples_text, raw_text, events_text = await ahead.pop(0)
                nxt = next(futures, None)
                if nxt is not None:
                    ahead.append(nxt)
                await _copy(conn, "sqal_samples", _SAMPLE_COLS, samples_text)
                await _copy(conn, "sqal_sample_raw", _RAW_COLS, raw_text)
                await _copy(conn, "lot_events", _EVENT_COLS, events_text)
                report.events += events_text.count(b"\n")
                done += 1
                if done % max(1, len(jobs) // 20) == 0:
                    say(f"  {done}/{len(jobs)} chunks ({time.perf_counter() - t_start:.0f} s)")
        report.readings = total
        say("hour rows, lot results, close events, device counters")
        await _finish(conn, plan, report)
        if not with_fk:
            await conn.execute("SET session_replication_role = DEFAULT")
        await conn.execute("ANALYZE sqal_samples; ANALYZE sqal_sample_raw; ANALYZE sqal_sample_hours; "
                           "ANALYZE lot_events; ANALYZE lots")
    finally:
        await conn.close()
    report.seconds = time.perf_counter() - t_start
    return report


async def _write_fleet(conn: asyncpg.Connection, plan: FleetPlan, windows: dict[tuple[int, int], list[str]],
                       report: Report) -> None:
    rnd = random.Random(plan.seed)
    lots, assigns, events = [], [], []
    end_of_data = datetime(plan.last_day.year, plan.last_day.month, plan.last_day.day, tzinfo=UTC) + timedelta(days=1)
    counters: dict[date, int] = {}
    for (b, d), ids in sorted(windows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        day = plan.first_day + timedelta(days=d)
        dev = plan.device(b)
        for w, lot in enumerate(ids):
            start = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=w * plan.per_lot / plan.rate_hz)
            end = min(start + timedelta(hours=plan.hours_per_lot), start + timedelta(days=1))
            created = start - timedelta(hours=1)
            running = end >= end_of_data
            genetics = rnd.choices(("Mulard", "Barbarie", "Pekin"), (60, 20, 20))[0]
            lots.append((lot, f"FARM_{rnd.randrange(40):03d}", f"Gaveur {rnd.randrange(40):03d}", SITES[b % len(SITES)],
                         genetics, rnd.randint(45, 55), rnd.randint(11, 14), "inspecting" if running else "inspected",
                         created, end if not running else start, start - timedelta(hours=2), start - timedelta(hours=1),
                         12, round(rnd.uniform(9000, 10500), 1), start, None if running else end))
            assigns.append((lot, dev, f"Ligne {b:03d}", start, None if running else end, created))
            events.append((lot, created, "registry", "lot_created", json.dumps({"genetics": genetics}), "lot created"))
            events.append((lot, start, "sqal", "assign", json.dumps({"device_id": dev}), f"assigned to {dev}"))
            counters[created.date()] = counters.get(created.date(), 0) + 1
    await conn.copy_records_to_table(
        "lots", records=lots,
        columns=("id", "farmer_id", "farmer_name", "site_code", "genetics", "nb_ducks", "planned_duration_days",
                 "state", "created_at", "updated_at", "gavage_started_at", "gavage_ended_at", "current_day",
                 "maize_total_per_duck_g", "inspection_started_at", "inspected_at"))
    await conn.copy_records_to_table("device_assignments", records=assigns,
                                     columns=("lot_id", "device_id", "line", "valid_from", "valid_to", "created_at"))
    await conn.copy_records_to_table("lot_events", records=events, columns=("lot_id", "at", "stage", "type", "data",
                                                                            "description"))
    # the per-day lot id counters go on after the generated ids (lot ids stay unique)
    for d in range(plan.days):
        day = plan.first_day + timedelta(days=d)
        n = sum(len(windows[(b, d)]) for b in range(plan.boards))
        await conn.execute("""INSERT INTO lot_id_counters (day, last) VALUES ($1, $2)
                              ON CONFLICT (day) DO UPDATE SET last = GREATEST(lot_id_counters.last, $2)""", day, n)
    devices = [(plan.device(b), SITES[b % len(SITES)], f"Ligne {b:03d}", plan.fw, "offline") for b in range(plan.boards)]
    await conn.copy_records_to_table("devices", records=devices, columns=("id", "site_code", "location", "firmware",
                                                                          "state"))
    report.lots = len(lots)
    report.events += len(events)


_HOURS = """
INSERT INTO sqal_sample_hours AS h (hour, device_id, lot_id, requested_lot_id, samples, grades, score_n, score_sum,
                                    score_sumsq, score_min, score_max, weight_n, weight_sum, weight_sumsq, weight_min,
                                    weight_max, first_at, last_at, last_received_at, evented_at)
WITH g AS (
    SELECT date_trunc('hour', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, device_id, lot_id, requested_lot_id,
           COALESCE(grade, 'none') AS grade, count(*) AS n, count(score) AS score_n, sum(score::float8) AS score_sum,
           sum(score::float8 * score) AS score_sumsq, min(score) AS score_min, max(score) AS score_max,
           count(*) FILTER (WHERE weight_g > 0) AS weight_n,
           sum(weight_g::float8) FILTER (WHERE weight_g > 0) AS weight_sum,
           sum(weight_g::float8 * weight_g) FILTER (WHERE weight_g > 0) AS weight_sumsq,
           min(weight_g) FILTER (WHERE weight_g > 0) AS weight_min, max(weight_g) FILTER (WHERE weight_g > 0) AS weight_max,
           min(at) AS first_at, max(at) AS last_at, max(received_at) AS last_received_at
    FROM (SELECT *, CASE WHEN clock_synced AND measured_at IS NOT NULL THEN measured_at ELSE received_at END AS at
          FROM sqal_samples WHERE device_id = $1 AND day = $2) s
    GROUP BY 1, 2, 3, 4, 5
)
SELECT hour, device_id, lot_id, requested_lot_id, sum(n), jsonb_object_agg(grade, n), sum(score_n), sum(score_sum),
       sum(score_sumsq), min(score_min), max(score_max), sum(weight_n), sum(weight_sum), sum(weight_sumsq),
       min(weight_min), max(weight_max), min(first_at), max(last_at), max(last_received_at), max(last_received_at)
FROM g GROUP BY 1, 2, 3, 4
ON CONFLICT (hour, device_id, lot_id, requested_lot_id) DO UPDATE SET
    samples = h.samples + EXCLUDED.samples, grades = sqal_add_counts(h.grades, EXCLUDED.grades),
    score_n = h.score_n + EXCLUDED.score_n, score_sum = h.score_sum + EXCLUDED.score_sum,
    score_sumsq = h.score_sumsq + EXCLUDED.score_sumsq, score_min = LEAST(h.score_min, EXCLUDED.score_min),
    score_max = GREATEST(h.score_max, EXCLUDED.score_max), weight_n = h.weight_n + EXCLUDED.weight_n,
    weight_sum = COALESCE(h.weight_sum + EXCLUDED.weight_sum, h.weight_sum, EXCLUDED.weight_sum),
    weight_sumsq = COALESCE(h.weight_sumsq + EXCLUDED.weight_sumsq, h.weight_sumsq, EXCLUDED.weight_sumsq),
    weight_min = LEAST(h.weight_min, EXCLUDED.weight_min), weight_max = GREATEST(h.weight_max, EXCLUDED.weight_max),
    first_at = LEAST(h.first_at, EXCLUDED.first_at), last_at = GREATEST(h.last_at, EXCLUDED.last_at),
    last_received_at = GREATEST(h.last_received_at, EXCLUDED.last_received_at)
"""


async def _finish(conn: asyncpg.Connection, plan: FleetPlan, report: Report) -> None:
    """Hour rows (per board and day: the rows of one span day), then each lot's results and its
    close_inspection event from them, and the devices' counters."""
    for d in range(plan.days):
        day = plan.first_day + timedelta(days=d)
        for b in range(plan.boards):
            await conn.execute(_HOURS, plan.device(b), day)
    rows = await conn.fetch(
        """SELECT l.id, l.state, l.inspected_at, l.maize_total_per_duck_g, sum(h.samples) AS n,
                  sum(h.weight_sum) / NULLIF(sum(h.weight_n), 0) AS mean_w,
                  (SELECT jsonb_object_agg(k, v) FROM (SELECT key AS k, sum(value::bigint) AS v
                      FROM sqal_sample_hours h2, jsonb_each_text(h2.grades) WHERE h2.lot_id = l.id GROUP BY key) x)::text
                   AS dist
           FROM lots l JOIN sqal_sample_hours h ON h.lot_id = l.id
           WHERE l.id = ANY($1::text[]) GROUP BY l.id""",
        [lot for ids in lot_windows(plan).values() for lot in ids])
    updates, closes = [], []
    for r in rows:
        mean_w = round(float(r["mean_w"]), 1) if r["mean_w"] is not None else None
        itm = compute_itm(float(r["maize_total_per_duck_g"]), mean_w)
        grade = itm_grade(itm) if itm is not None else None
        updates.append((r["id"], int(r["n"]), r["dist"], mean_w, itm, grade, r["state"] == "inspected"))
        if r["state"] == "inspected":
            closes.append((r["id"], r["inspected_at"], "sqal", "close_inspection",
                           json.dumps({"sample_count": int(r["n"]), "grade_distribution": json.loads(r["dist"]),
                                       "mean_liver_weight_g": mean_w, "itm": itm, "itm_grade": grade}),
                           f"inspection closed: {int(r['n'])} samples, ITM {itm} ({grade})"))
    await conn.executemany(
        """UPDATE lots SET sample_count = $2, grade_distribution = CASE WHEN $7::bool THEN $3::jsonb END,
                           mean_liver_weight_g = CASE WHEN $7::bool THEN $4::numeric END,
                           itm = CASE WHEN $7::bool THEN $5::numeric END,
                           itm_grade = CASE WHEN $7::bool THEN $6::text END WHERE id = $1""", updates)
    await conn.copy_records_to_table("lot_events", records=closes, columns=_EVENT_COLS)
    report.events += len(closes)
    await conn.execute(
        """UPDATE devices d SET samples_stored = x.n, last_sample_at = x.last, last_seen = x.last, first_seen = x.first
           FROM (SELECT device_id, sum(samples) AS n, max(last_at) AS last, min(first_at) AS first
                 FROM sqal_sample_hours WHERE device_id = ANY($1::text[]) GROUP BY 1) x WHERE d.id = x.device_id""",
        report.devices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--boards", type=int, default=10)
    ap.add_argument("--rate", type=float, default=1.0, help="readings per second per board")
    ap.add_argument("--hours-per-lot", type=int, default=4)
    ap.add_argument("--end", type=date.fromisoformat, default=None, help="last day generated (default yesterday)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    plan = FleetPlan(days=a.days, boards=a.boards, rate_hz=a.rate, hours_per_lot=a.hours_per_lot, end=a.end,
                     seed=a.seed)
    r = asyncio.run(generate(a.dsn, plan, workers=a.workers, progress=print))
    print(f"{r.readings:,} readings, {r.lots:,} lots, {r.events:,} events in {r.seconds:.0f} s")


if __name__ == "__main__":
    main()


__all__ = ["FleetPlan", "PoolReading", "Report", "chunk", "generate", "lot_windows"]
