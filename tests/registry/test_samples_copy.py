"""store_samples sends its rows as COPY text (`encode_row`, made ahead in the ingest's workers): every
column must come out exactly as asyncpg's binary COPY of the same values stored it (the path before
round 3 of issue 5), escaping and float32 rounding included."""

from __future__ import annotations

import math
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from registry import partitions, samples
from tests.registry.helpers import stage_pages

DEV = "ESP32_DEMO_CP_01"

# Strings COPY text format must escape (tab, newline, CR, backslash), quotes and braces for the text[]
# literal, non-ASCII, and reals on and around float32 half-way points, plus the non-finite ones.
NASTY = "tab\there, nl\nhere, cr\rhere, back\\slash \\N \"quoted\" {brace,comma} é ☃"
HALFWAY = 1.0 + 2.0 ** -24  # exactly half-way between two float32s: a double's text could round differently
REALS = [0.1, 0.828, 863.753, HALFWAY, 1.0 + 3 * 2.0 ** -25, 3.4028234e38, 1e-45, -0.0, 123456789.123,
         float("nan"), float("inf"), float("-inf"), 7, True]


def rows() -> list[dict[str, Any]]:
    t = datetime(2026, 11, 27, 5, 34, 4, 406192, tzinfo=UTC)
    out: list[dict[str, Any]] = []
    for i, x in enumerate(REALS):
        out.append({
            "device_id": DEV, "boot": 3, "seq": i, "lot_id": None if i % 2 else f"LOT_UNKNOWN {NASTY}",
            "measured_at": None if i % 3 == 0 else t + timedelta(microseconds=i),
            "received_at": (t + timedelta(seconds=i)).astimezone(timezone(timedelta(hours=-5, minutes=-30))),
            "clock_synced": i % 4 != 0, "score": x, "grade": NASTY if i == 1 else "A",
            "device_score": None if i % 2 else -x, "device_grade": None if i % 2 else "B\\",
            "weight_g": x, "volume_cm3": None, "alerts": [NASTY, "warning:oxidation", ""] if i % 2 else [],
            "features": {"k": NASTY, "x": [1, 2.5, None]} if i % 2 else samples.JsonText('{"a":"\\\\t\\"q\\"\\u00e9"}'),
            "raw": {"v": 1, "seq": i, "s": "\\"},
        })
    out.append({"device_id": DEV, "boot": 3, "seq": 100, "received_at": datetime(2026, 11, 27, 6, 0, 0)})  # naive: local time
    return out


COLUMNS = ("device_id, boot, seq, requested_lot_id, measured_at, received_at, clock_synced, score, grade, "
           "device_score, device_grade, weight_g, volume_cm3, alerts, features_z, "
           "(SELECT payload FROM sqal_sample_raw r WHERE r.id = sqal_samples.id) AS raw")


@pytest.fixture(autouse=True)
async def _partitions(db_pool: asyncpg.Pool) -> None:
    """The rows are dated 2026-11-27: the partitions of those days (the gateway makes today's)."""
    await partitions.ensure(db_pool, date(2026, 11, 1), date(2026, 12, 31))


def comparable(r: asyncpg.Record) -> tuple[Any, ...]:
    return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r.values())


async def binary_store(conn: asyncpg.Connection, rs: list[dict[str, Any]]) -> None:
    """What store_samples did before: one binary COPY of Python values into the temp table."""
    now = datetime.now(UTC)


    def num(v: Any) -> float | None:
        return None if v is None else float(v)

    records = [(i, r["device_id"], r["boot"], r["seq"], r.get("lot_id"), r.get("measured_at"),
                r.get("received_at") or now, bool(r.get("clock_synced", True)), num(r.get("score")), r.get("grade"),
                num(r.get("device_score")), r.get("device_grade"), num(r.get("weight_g")), num(r.get("volume_cm3")),
                list(r.get("alerts") or []), samples.features_blob(r.get("features")), samples.raw_blob(r.get("raw")))
               for i, r in enumerate(rs)]
    async with conn.transaction():
        await conn.execute(samples._TEMP)
        staging, store, spans = samples._VIA_ONE_OFF
        await conn.copy_records_to_table(staging, records=records, columns=samples._COLUMNS)
        await conn.execute(spans)
        await conn.fetch(store)


async def test_text_copy_stores_what_binary_copy_stored(db_pool: asyncpg.Pool) -> None:
    rs = rows()
    res = await samples.store_samples(db_pool, rs)
    assert res.new == [True] * len(rs)
    text_rows = await db_pool.fetch(f"SELECT {COLUMNS} FROM sqal_samples ORDER BY seq")
    await db_pool.execute("DELETE FROM sqal_samples")
    async with db_pool.acquire() as conn:
        await binary_store(conn, rs)
    binary_rows = await db_pool.fetch(f"SELECT {COLUMNS} FROM sqal_samples ORDER BY seq")
    assert len(text_rows) == len(binary_rows) == len(rs)
    for t, b in zip(text_rows, binary_rows):
        assert comparable(t) == comparable(b), (t, b)
    # and the values are what was sent (float32 rounding for `real`; -0.0 kept)
    by_seq = {r["seq"]: r for r in text_rows}
    for i, x in enumerate(REALS):
        got = by_seq[i]["score"]
        want = struct.unpack("<f", struct.pack("<f", float(x)))[0]
        assert (math.isnan(got) and math.isnan(want)) or (got == want and math.copysign(1, got) == math.copysign(1, want))
    assert by_seq[1]["alerts"] == [NASTY, "warning:oxidation", ""] and by_seq[1]["grade"] == NASTY
    assert by_seq[0]["requested_lot_id"] == f"LOT_UNKNOWN {NASTY}"


async def test_encoded_rows_are_stored_as_sent(db_pool: asyncpg.Pool) -> None:
    rs = rows()[:4]
    pre = [{"device_id": r["device_id"], "boot": r["boot"], "seq": r["seq"], samples.ENCODED: samples.encode_row(r)}
           for r in rs]
    res = await samples.store_samples(db_pool, pre + [rs[0]])  # the repeat of a key is a duplicate either way
    assert res.new == [True, True, True, True, False]
    assert len(await db_pool.fetch("SELECT 1 FROM sqal_samples")) == 4


def test_encode_row_refuses_what_store_samples_refuses() -> None:
    with pytest.raises(samples.InvalidInput, match="row 5.*seq"):
        samples.encode_row({"device_id": DEV, "boot": 1}, i=5)
    with pytest.raises(samples.InvalidInput, match="alerts"):
        samples.encode_row({"device_id": DEV, "boot": 1, "seq": 1, "alerts": "critical"})
    with pytest.raises(ValueError, match=r"^score: 1e\+39 .*float32"):  # names the column
        samples.encode_row({"device_id": DEV, "boot": 1, "seq": 1, "score": 1e39})
    with pytest.raises(ValueError, match=r"^weight_g: -1e\+300 .*float32"):
        samples.encode_row({"device_id": DEV, "boot": 1, "seq": 1, "weight_g": -1e300})
    with pytest.raises(TypeError, match="datetime"):
        samples.encode_row({"device_id": DEV, "boot": 1, "seq": 1, "measured_at": "2026-11-27"})


async def test_two_stores_in_one_transaction_each_see_only_their_rows(db_pool: asyncpg.Pool) -> None:
    """The store statement empties the staging table itself (a CTE of the same snapshot): the second
    batch of a transaction must not see, or store again, the first one's rows."""
    rs = rows()[:6]
    async with db_pool.acquire() as conn:
        await samples.prepare_session(conn)
        async with conn.transaction():
            with pytest.raises(RuntimeError, match="outside a transaction"):
                await samples.prepare_session(conn)
        async with conn.transaction():
            first = await samples.store_samples(conn, rs[:3], session_ready=True)
            assert await conn.fetchval(f"SELECT count(*) FROM {samples.STAGE}") == 0
            second = await samples.store_samples(conn, rs[3:], session_ready=True)
        assert first.new == [True] * 3 and second.new == [True] * 3
        assert sorted(first.lot_ids + second.lot_ids, key=str) == sorted(
            [r[0] for r in await conn.fetch("SELECT lot_id FROM sqal_samples")], key=str)
    assert await db_pool.fetchval("SELECT count(*) FROM sqal_samples") == 6


def padded(boot: int, n: int) -> list[dict[str, Any]]:
    """n rows of about 1.5 KB (a real sample's COPY line is 1.5 KB)."""
    return [{"device_id": DEV, "boot": boot, "seq": i, "features": {"pad": "f" * 700}, "raw": {"pad": "r" * 600}}
            for i in range(n)]


async def test_prepared_session_staging_keeps_its_pages_and_tidy_bounds_it(db_pool: asyncpg.Pool) -> None:
    """A prepared session's staging table is not truncated at commit (that ftruncate and the file's
    re-extension cost a writer 16-18 % of its time in the bench), and tidy_session makes its pages
    reusable: 12 batches with a tidy every 3 keep it about 3 batches large; without, it grows by
    a batch's size each time."""
    async with db_pool.acquire() as tidy, db_pool.acquire() as untidy:
        for conn in (tidy, untidy):
            await samples.prepare_session(conn)
        async with tidy.transaction():
            with pytest.raises(RuntimeError, match="outside a transaction"):
                await samples.tidy_session(tidy)
        sizes: dict[str, list[int]] = {"tidy": [], "untidy": []}
        for b in range(12):
            for name, conn in (("tidy", tidy), ("untidy", untidy)):
                boot = 2 * b + (name == "tidy")
                async with conn.transaction():
                    res = await samples.store_samples(conn, padded(boot, 200), session_ready=True)
                assert res.new == [True] * 200
                assert await conn.fetchval(f"SELECT count(*) FROM {samples.STAGE}") == 0
                if name == "tidy" and b % 3 == 2:
                    await samples.tidy_session(conn)
                sizes[name].append(await stage_pages(conn))
        one_batch = sizes["untidy"][0]
        assert one_batch >= 20  # pages kept after the commit (ON COMMIT DELETE ROWS leaves 0)
        assert sizes["untidy"][-1] >= 11 * one_batch  # no tidy: a batch's worth of new pages each time
        assert max(sizes["tidy"]) <= 4 * one_batch, sizes["tidy"]  # tidied every 3: reused, not grown
    assert await db_pool.fetchval("SELECT count(*) FROM sqal_samples") == 2 * 12 * 200


async def test_prepared_session_rolled_back_batch_leaves_nothing_behind(db_pool: asyncpg.Pool) -> None:
    """Staged rows of a batch whose transaction rolls back are dead, not left for the next batch."""
    async with db_pool.acquire() as conn:
        await samples.prepare_session(conn)
        with pytest.raises(RuntimeError, match="after its COPY"):
            async with conn.transaction():
                await conn.copy_records_to_table(samples.STAGE, records=[(0, DEV, 9, 1)],
                                                 columns=samples._COLUMNS[:4])
                raise RuntimeError("the batch fails after its COPY, before the store statement")
        async with conn.transaction():
            res = await samples.store_samples(conn, padded(10, 3), session_ready=True)
        assert res.new == [True] * 3
        assert [tuple(r) for r in await conn.fetch("SELECT boot, seq FROM sqal_samples ORDER BY seq")] == [
            (10, 0), (10, 1), (10, 2)]
