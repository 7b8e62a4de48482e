"""SQAL samples, stored in batches.

`store_samples` is the ingest hot path: one COPY into a session temp table, a statement that gives
the batch's new spans their day (the partition of all their readings: dedupe across partitions,
docs/registry.md "Readings at scale"), then one statement that links every row to its lot, inserts
with ON CONFLICT (device_id, boot, seq, day) DO NOTHING, writes the new readings' raw payloads,
adds them to their hour rows (registry/sample_hours.py) and writes an aggregated `sqal_samples`
event for each lot whose hour row was new or last evented a minute ago or more. Linking, in SQL:

1. the row names a lot (explicit `lot_id`) that exists -> link_kind 'explicit';
   it names an unknown lot -> kept unlinked, requested_lot_id kept, link_issue 'unknown_lot'
   (no fallback to the assignment: the device said something else, a human must look);
2. else the device's assignment whose [valid_from, valid_to) covers the row's measured_at
   (received_at when the device clock is not synced) -> 'assignment' (late readings included);
3. else kept unlinked, link_issue 'no_assignment'.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqalfw import codec

from registry import blobs
from registry.base import Executor, _conn, as_dict
from registry.errors import InvalidInput, LotNotFound
from registry.sample_hours import lot_sample_count

_COLUMNS = ("ord", "device_id", "boot", "seq", "lot_id", "measured_at", "received_at", "clock_synced", "score",
            "grade", "device_score", "device_grade", "weight_g", "volume_cm3", "alerts", "features", "raw")

_STAGING_COLUMNS = """(
    ord integer, device_id text, boot bigint, seq bigint, lot_id text, measured_at timestamptz,
    received_at timestamptz, clock_synced boolean, score real, grade text, device_score real,
    device_grade text, weight_g real, volume_cm3 real, alerts text[], features bytea, raw bytea
)"""
# Staging of a one-off call: emptied at every commit (the table is made on first use, in the caller's
# transaction or its own).
_ONE_OFF = "sqal_samples_in"
_TEMP = f"CREATE TEMP TABLE IF NOT EXISTS {_ONE_OFF} " + _STAGING_COLUMNS + " ON COMMIT DELETE ROWS"
# Staging of a prepared session (the ingest's writers): no truncation at commit. ON COMMIT DELETE
# ROWS truncates the table's file at every COMMIT, and the next batch extends it again: measured in
# the bench, that ftruncate was 16-18 % of a writer backend's time, inside the part of the
# transaction that holds the ingest's device lock (docs/ingest.md, "Round 6"). The store statement
# deletes the rows it read (a rolled-back batch's rows are dead anyway), and `tidy_session`
# vacuums the dead rows without giving the pages back, so the next batches reuse them.
STAGE = "sqal_samples_stage"
_STAGE = f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} " + _STAGING_COLUMNS

SPAN_SHIFT = 12  # a span is 4096 consecutive seqs of one boot of one device (migration 006)
EVENT_EVERY_S = 60  # a lot's `sqal_samples` event: at most one per device and hour row a minute

# The spans of the batch's readings that are new get the day of their first receipt. A statement of
# its own, before the store: a span another writer is inserting is waited for (ON CONFLICT), and the
# next statement's snapshot sees it, so both writers put the span's readings in the same partition.
_SPANS = """
INSERT INTO sqal_sample_spans (device_id, boot, span, day)
SELECT device_id, boot, seq >> 12, min((received_at AT TIME ZONE 'UTC')::date) FROM {staging} GROUP BY 1, 2, 3
ON CONFLICT DO NOTHING
"""

_STORE = """
WITH src AS (
    SELECT DISTINCT ON (i.device_id, i.boot, i.seq) i.*, sp.day,
           CASE WHEN i.clock_synced AND i.measured_at IS NOT NULL THEN i.measured_at ELSE i.received_at END AS link_at
    FROM {staging} i
    JOIN sqal_sample_spans sp ON sp.device_id = i.device_id AND sp.boot = i.boot AND sp.span = i.seq >> 12
    ORDER BY i.device_id, i.boot, i.seq, i.ord
), linked AS (
    SELECT s.*, l.id AS known_lot, a.lot_id AS assigned_lot
    FROM src s
    LEFT JOIN lots l ON l.id = s.lot_id
    LEFT JOIN LATERAL (
        SELECT d.lot_id FROM device_assignments d
        WHERE s.lot_id IS NULL AND d.device_id = s.device_id
          AND d.valid_from <= s.link_at AND (d.valid_to IS NULL OR s.link_at < d.valid_to)
        ORDER BY d.valid_from DESC LIMIT 1
    ) a ON true
), ins AS (
    INSERT INTO sqal_samples (day, device_id, boot, seq, lot_id, link_kind, requested_lot_id, link_issue,
                              measured_at, received_at, clock_synced, score, grade, device_score, device_grade,
                              weight_g, volume_cm3, alerts, features_z)
    SELECT day, device_id, boot, seq,
           COALESCE(known_lot, assigned_lot),
           CASE WHEN known_lot IS NOT NULL THEN 'explicit' WHEN assigned_lot IS NOT NULL THEN 'assignment' ELSE 'none' END,
           lot_id,
           CASE WHEN lot_id IS NOT NULL AND known_lot IS NULL THEN 'unknown_lot'
                WHEN lot_id IS NULL AND assigned_lot IS NULL THEN 'no_assignment' END,
           measured_at, received_at, clock_synced, score, grade, device_score, device_grade,
           weight_g, volume_cm3, COALESCE(alerts, '{}'), features
    FROM linked ORDER BY ord
    ON CONFLICT (device_id, boot, seq, day) DO NOTHING
    RETURNING id, device_id, boot, seq, lot_id, link_kind, link_issue, requested_lot_id, grade, score, weight_g,
              measured_at, received_at,
              CASE WHEN clock_synced AND measured_at IS NOT NULL THEN measured_at ELSE received_at END AS at
), raw AS (
    INSERT INTO sqal_sample_raw (id, day, payload)
    SELECT ins.id, (ins.received_at AT TIME ZONE 'UTC')::date, l.raw
    FROM ins JOIN linked l ON l.device_id = ins.device_id AND l.boot = ins.boot AND l.seq = ins.seq
    WHERE l.raw IS NOT NULL
), emptied AS (
    DELETE FROM {staging}  -- same snapshot: src above still reads every row (saves a round trip)
), g AS (  -- the new readings per hour row and grade, then per hour row (registry/sample_hours.py)
    SELECT date_trunc('hour', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour, device_id, lot_id, requested_lot_id,
           COALESCE(grade, 'none') AS grade, count(*) AS n, count(score) AS score_n, sum(score::float8) AS score_sum,
           sum(score::float8 * score) AS score_sumsq, min(score) AS score_min, max(score) AS score_max,
           count(*) FILTER (WHERE weight_g > 0) AS weight_n,
           sum(weight_g::float8) FILTER (WHERE weight_g > 0) AS weight_sum,
           sum(weight_g::float8 * weight_g) FILTER (WHERE weight_g > 0) AS weight_sumsq,
           min(weight_g) FILTER (WHERE weight_g > 0) AS weight_min, max(weight_g) FILTER (WHERE weight_g > 0) AS weight_max,
           min(at) AS first_at, max(at) AS last_at, max(received_at) AS last_received_at
    FROM ins GROUP BY 1, 2, 3, 4, 5
), hours AS (
    -- rows locked in key order: two writers updating the same rows wait for each other, never deadlock
    INSERT INTO sqal_sample_hours AS h (hour, device_id, lot_id, requested_lot_id, samples, grades, score_n,
                                        score_sum, score_sumsq, score_min, score_max, weight_n, weight_sum,
                                        weight_sumsq, weight_min, weight_max, first_at, last_at, last_received_at,
                                        evented_at)
    SELECT hour, device_id, lot_id, requested_lot_id, sum(n), jsonb_object_agg(grade, n), sum(score_n),
           sum(score_sum), sum(score_sumsq), min(score_min), max(score_max), sum(weight_n), sum(weight_sum),
           sum(weight_sumsq), min(weight_min), max(weight_max), min(first_at), max(last_at), max(last_received_at),
           now()
    FROM g GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (hour, device_id, lot_id, requested_lot_id) DO UPDATE SET
        samples = h.samples + EXCLUDED.samples,
        grades = sqal_add_counts(h.grades, EXCLUDED.grades),
        score_n = h.score_n + EXCLUDED.score_n,
        score_sum = COALESCE(h.score_sum + EXCLUDED.score_sum, h.score_sum, EXCLUDED.score_sum),
        score_sumsq = COALESCE(h.score_sumsq + EXCLUDED.score_sumsq, h.score_sumsq, EXCLUDED.score_sumsq),
        score_min = LEAST(h.score_min, EXCLUDED.score_min),
        score_max = GREATEST(h.score_max, EXCLUDED.score_max),
        weight_n = h.weight_n + EXCLUDED.weight_n,
        weight_sum = COALESCE(h.weight_sum + EXCLUDED.weight_sum, h.weight_sum, EXCLUDED.weight_sum),
        weight_sumsq = COALESCE(h.weight_sumsq + EXCLUDED.weight_sumsq, h.weight_sumsq, EXCLUDED.weight_sumsq),
        weight_min = LEAST(h.weight_min, EXCLUDED.weight_min),
        weight_max = GREATEST(h.weight_max, EXCLUDED.weight_max),
        first_at = LEAST(h.first_at, EXCLUDED.first_at),
        last_at = GREATEST(h.last_at, EXCLUDED.last_at),
        last_received_at = GREATEST(h.last_received_at, EXCLUDED.last_received_at),
        evented_at = CASE WHEN h.evented_at IS NULL OR h.evented_at <= now() - make_interval(secs => {event_every})
                          THEN now() ELSE h.evented_at END
    RETURNING lot_id, evented_at = now() AS emit
), ev AS (
    -- one `sqal_samples` event per lot of the batch whose hour row was new or last evented a minute
    -- ago or more: the event log records the readings' arrival without a row per batch (at 1 reading/s
    -- per device a batch per reading); the counts are the batch's, the lot's totals are in the hours
    INSERT INTO lot_events (lot_id, stage, type, data, description)
    SELECT lot_id, 'sqal', 'sqal_samples',
           jsonb_build_object(
               'count', count(*),
               'devices', to_jsonb(array_agg(DISTINCT device_id)),
               'grades', (SELECT jsonb_object_agg(g, n) FROM (
                              SELECT COALESCE(i2.grade, 'none') AS g, count(*) AS n FROM ins i2
                              WHERE i2.lot_id = ins.lot_id GROUP BY 1) gg),
               'mean_score', round(avg(score)::numeric, 3),
               'mean_weight_g', round(avg(weight_g)::numeric, 1),
               'first_measured_at', min(COALESCE(measured_at, received_at)),
               'last_measured_at', max(COALESCE(measured_at, received_at))),
           count(*) || ' SQAL sample(s) from ' || string_agg(DISTINCT device_id, ', ')
    FROM ins WHERE lot_id IS NOT NULL AND lot_id IN (SELECT lot_id FROM hours WHERE emit)
    GROUP BY lot_id
    RETURNING lot_id
)
SELECT device_id, boot, seq, lot_id, link_kind, link_issue FROM ins
""".replace("{event_every}", str(EVENT_EVERY_S))
# (staging table, store statement reading it): a one-off call's, a prepared session's
_VIA_ONE_OFF = (_ONE_OFF, _STORE.replace("{staging}", _ONE_OFF), _SPANS.replace("{staging}", _ONE_OFF))
_VIA_SESSION = (STAGE, _STORE.replace("{staging}", STAGE), _SPANS.replace("{staging}", STAGE))


class JsonText(str):
    """JSON already encoded by the caller: packed as a blob without being encoded again (any str is
    taken as JSON text; other values are encoded with json.dumps). The ingest hands bytes instead:
    blobs its workers packed (gateway/ingest/grading.py)."""

    __slots__ = ()


@dataclass
class StoreResult:
    """Per input row, in input order: `new[i]` False means (device_id, boot, seq) was already stored
    (or repeated earlier in the same batch) and nothing was written for it."""

    new: list[bool] = field(default_factory=list)
    lot_ids: list[str | None] = field(default_factory=list)  # lot each new row was linked to (None for duplicates)
    link_kinds: list[str | None] = field(default_factory=list)
    link_issues: list[str | None] = field(default_factory=list)

    @property
    def new_count(self) -> int:
        return sum(self.new)

    @property
    def duplicate_count(self) -> int:
        return len(self.new) - self.new_count


_F4 = struct.Struct("<f")
_COPY_ESCAPE = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_NULL = "\\N"
ENCODED = "copy_line"
"""Key of a row that carries its own `encode_row` line (the ingest encodes rows in its grading workers,
off the event loop): `store_samples` then reads only `device_id`, `boot` and `seq` besides it."""


def _text(s: str) -> str:
    """A value in COPY text format. JSON text has no raw tab, newline or CR (they are escaped inside
    strings) and rarely a backslash, so the scan usually finds nothing to replace."""
    if "\\" in s or "\n" in s or "\r" in s or "\t" in s:
        return s.translate(_COPY_ESCAPE)
    return s


_pack_f4, _unpack_f4 = _F4.pack, _F4.unpack


def _real(x: Any, column: str) -> str:
    """A `real`, rounded to float32 here as the binary COPY did (C cast, nearest): the text of that
    float32 reads back as exactly it (the text of the double could round differently when the
    double sits on a float32 half-way point)."""
    if x is None:
        return _NULL
    try:
        v = _unpack_f4(_pack_f4(x if type(x) is float else float(x)))[0]
    except OverflowError as exc:
        raise ValueError(f"{column}: {x!r} is out of the range of a real (float32)") from exc
    if v - v != 0.0:  # nan, inf, -inf
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return f"{v:.9g}"  # 9 significant digits name one float32 exactly (PostgreSQL reads it with strtof)


def _time(t: Any) -> str:
    if not isinstance(t, datetime):
        raise TypeError(f"expected a datetime.datetime instance, got {type(t).__name__!r}")
    if t.tzinfo is None:  # naive = local time, as asyncpg's binary encoder read it
        t = t.astimezone(UTC)
    return t.isoformat()


def _opt_text(v: Any) -> str:
    return _NULL if v is None else _text(v)


def _bytea(blob: bytes) -> str:
    return "\\\\x" + blob.hex()  # COPY text: the backslash of bytea's hex form doubled


def features_blob(v: Any) -> bytes | None:
    """`features` as stored (registry/blobs.py): a blob given as bytes is kept, JSON text is packed,
    anything else is encoded with json.dumps first."""
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    return blobs.pack_features(v if isinstance(v, str) else json.dumps(v, default=str))


def raw_blob(v: Any) -> bytes | None:
    """`raw` as stored: a blob given as bytes is kept; a contract sample (a dict, or its JSON text) is
    packed in its binary form; anything else is kept as its JSON text."""
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    obj = v
    if isinstance(v, str):
        try:
            obj = json.loads(v)
        except ValueError:
            return blobs.pack_raw(v.encode())
    try:
        return blobs.pack_raw(codec.encode_sample_bin(obj))
    except Exception:  # noqa: BLE001 -- not a contract sample (tests, old callers): its JSON as it is
        return blobs.pack_raw((v if isinstance(v, str) else json.dumps(v, default=str)).encode())


def _blob(b: bytes | None) -> str:
    return _NULL if b is None else _bytea(b)


def encode_row(r: Mapping[str, Any], now: datetime | None = None, i: int = 0) -> bytes:
    """One sample row as a line of PostgreSQL COPY text format: the columns after `ord`, each validated
    and converted as the binary COPY did (ints, float32 reals, timestamps, a text[] of alerts).
    `features` and `raw` are stored as blobs (registry/blobs.py): bytes are taken as blobs already made
    (the ingest's workers pack them), anything else is packed here (`features_blob`, `raw_blob`).
    Raises InvalidInput (naming row `i`) for a row store_samples would refuse."""
    try:
        device_id, boot, seq = str(r["device_id"]), int(r["boot"]), int(r["seq"])
    except KeyError as exc:
        raise InvalidInput(f"sample row {i}: missing required field {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"sample row {i}: boot and seq must be integers ({exc})") from exc
    get = r.get
    alerts = get("alerts") or []
    if alerts:
        if not isinstance(alerts, (list, tuple)) or not all(isinstance(a, str) for a in alerts):
            raise InvalidInput(f"sample row {i} ({device_id}/{boot}/{seq}): alerts must be a list of strings")
        # text[] literal: every element quoted, its backslashes and quotes escaped (then COPY's own escaping)
        quoted = ['"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"' for a in alerts]
        arr = _text("{" + ",".join(quoted) + "}")
    else:
        arr = "{}"
    ma = get("measured_at")
    return "\t".join((
        _text(device_id), str(boot), str(seq), _opt_text(get("lot_id")), _NULL if ma is None else _time(ma),
        _time(get("received_at") or now or datetime.now(UTC)), "t" if get("clock_synced", True) else "f",
        _real(get("score"), "score"), _opt_text(get("grade")), _real(get("device_score"), "device_score"),
        _opt_text(get("device_grade")), _real(get("weight_g"), "weight_g"), _real(get("volume_cm3"), "volume_cm3"),
        arr, _blob(features_blob(get("features"))), _blob(raw_blob(get("raw"))),
    )).encode() + b"\n"


async def prepare_session(conn: asyncpg.Connection) -> None:
    """Create this session's staging table now, outside any transaction (so no rollback can undo it):
    a caller that did this passes `session_ready=True` to store_samples, which then skips the
    CREATE ... IF NOT EXISTS (one round trip a batch; the ingest's writer keeps one connection) and
    stages in a table that is not truncated at each commit: call `tidy_session` every few batches."""
    if conn.is_in_transaction():
        raise RuntimeError("prepare_session: call it outside a transaction (a rollback would drop the table)")
    await conn.execute(_STAGE)


async def tidy_session(conn: asyncpg.Connection) -> None:
    """Vacuum the dead rows of a prepared session's staging table, keeping its pages for the next
    batches (no truncation: freeing and re-extending the file each time is what the staging table
    of a prepared session avoids). Outside a transaction (VACUUM cannot run in one). Without it the
    table grows by a batch's size at every batch; with it every few batches, it stays that many
    batches large (tests/registry/test_samples_copy.py)."""
    if conn.is_in_transaction():
        raise RuntimeError("tidy_session: call it outside a transaction (VACUUM cannot run in one)")
    await conn.execute(f"VACUUM (TRUNCATE false) {STAGE}")


async def store_samples(db: Executor, rows: Sequence[Mapping[str, Any]], *,
                        session_ready: bool = False) -> StoreResult:
    """Store a batch of samples (dicts with device_id, boot, seq and optional lot_id, measured_at,
    received_at, clock_synced, score, grade, device_score, device_grade, weight_g, volume_cm3,
    alerts, features, raw; `features` and `raw` may be `JsonText`, already encoded; or a row with its
    `ENCODED` line from `encode_row`). Returns which rows were new and the lot each new row got.

    The rows go to PostgreSQL as one COPY in text format: a row encoded ahead (by the ingest's
    workers) costs the caller only its line number. Round trips: the COPY and one statement (plus
    the staging table's CREATE unless `session_ready`, see prepare_session; and BEGIN/COMMIT when
    the caller has no transaction open -- inside the caller's, no savepoint is added)."""
    if not rows:
        return StoreResult()
    now = datetime.now(UTC)
    parts: list[bytes] = []
    keys: list[tuple[str, int, int]] = []
    for i, r in enumerate(rows):
        line = r.get(ENCODED)
        if line is None:
            line = encode_row(r, now, i)
        parts.append(b"%d\t" % i)
        parts.append(line)
        keys.append((str(r["device_id"]), int(r["boot"]), int(r["seq"])))
    data = memoryview(b"".join(parts))  # a buffer, not bytes: asyncpg would take bytes for a file path
    async with _conn(db) as conn:  # noqa: SIM117 - whether to open a transaction depends on the connection
        async with contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction():
            if not session_ready:
                await conn.execute(_TEMP)
            staging, store, spans = _VIA_SESSION if session_ready else _VIA_ONE_OFF
            await conn.copy_to_table(staging, source=data, columns=_COLUMNS, format="text")
            await conn.execute(spans)
            inserted = await conn.fetch(store)  # also empties the staging table (the caller's transaction goes on)
    # by position: device_id, boot, seq, lot_id, link_kind, link_issue (the SELECT of _STORE)
    by_key = {(r[0], r[1], r[2]): r for r in inserted}
    result = StoreResult()
    new, lots, kinds, issues = result.new, result.lot_ids, result.link_kinds, result.link_issues
    for key in keys:
        hit = by_key.pop(key, None)  # pop: a repeat of the key later in the batch is a duplicate
        if hit is None:
            new.append(False)
            lots.append(None)
            kinds.append(None)
            issues.append(None)
        else:
            new.append(True)
            lots.append(hit[3])
            kinds.append(hit[4])
            issues.append(hit[5])
    return result


_SUMMARY = ("id, device_id, boot, seq, link_kind, measured_at, received_at, clock_synced, score, grade, "
            "device_score, device_grade, weight_g, volume_cm3, alerts")


async def lot_samples(db: Executor, lot_id: str, *, limit: int = 100, offset: int = 0,
                      grade: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(how many samples the lot has, with `grade` if given; one page of them, without the raw
    payload and features), in measurement order (receive time when the clock was not trusted).
    The count comes from the hour rows and includes readings the retention policy has dropped
    (SQAL_RETENTION_SAMPLES_DAYS); the pages list the readings still kept."""
    async with _conn(db) as conn:
        if await conn.fetchval("SELECT 1 FROM lots WHERE id = $1", lot_id) is None:
            raise LotNotFound(lot_id)
        total = await lot_sample_count(conn, lot_id, grade)  # the lot's hour rows, not a count of its readings
        rows = await conn.fetch(
            f"""SELECT {_SUMMARY} FROM sqal_samples WHERE lot_id = $1 AND ($2::text IS NULL OR grade = $2)
                ORDER BY COALESCE(measured_at, received_at), device_id, boot, seq LIMIT $3 OFFSET $4""",
            lot_id, grade, limit, offset)
    return total, [d for d in map(as_dict, rows) if d is not None]
