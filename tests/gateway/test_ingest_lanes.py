"""Commit lanes: two batches commit at once, each on its own connection, and are still answered
(acknowledged) strictly in receive order. Real PostgreSQL; the first batch is held up by a duplicate
key that another transaction has inserted and not committed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from asyncpg.transaction import Transaction
from sqalfw import codec

from gateway.ingest.envelope import Envelope, Outcome
from gateway.ingest.pipeline import Pipeline, PipelineConfig
from registry.samples import store_samples
from tests.gateway.ingest_support import count, hand_in, metric, sample_bytes, uid, wait_until


@contextlib.asynccontextmanager
async def running_with_key_held(pipe: Pipeline, pool: asyncpg.Pool, dev: str,
                                seq: int) -> AsyncIterator[Transaction]:
    """The pipeline started, and (dev, 1, seq) inserted by another transaction and not committed:
    a batch with that key waits on it until the yielded transaction is rolled back."""
    await pipe.start()
    # The key's span (registry/samples.py, SPAN_SHIFT) committed beforehand: batches then wait on the
    # held key itself, not on the blocker's first insert of the span (which would serialise them).
    await pool.execute("""INSERT INTO sqal_sample_spans (device_id, boot, span, day)
                          VALUES ($1, 1, $2 >> 12, (now() AT TIME ZONE 'UTC')::date)""", dev, seq)
    blocker = await pool.acquire()
    tx = blocker.transaction()
    await tx.start()
    try:
        await store_samples(blocker, [{"device_id": dev, "boot": 1, "seq": seq}])
        yield tx
    finally:
        if blocker.is_in_transaction():
            await tx.rollback()
        await pool.release(blocker)
        await pipe.stop()


@pytest.mark.parametrize("lanes", [2, 1])
async def test_a_later_batch_commits_while_an_earlier_one_waits_answers_stay_in_order(
        db_pool: asyncpg.Pool, lanes: int) -> None:
    a, b = uid(), uid()
    pipe = Pipeline(db_pool, config=PipelineConfig(batch_max=5, flush_s=0.01, workers=0, commit_lanes=lanes))
    # another writer holds (a, 1, 0) uncommitted: the batch with that key waits for it
    async with running_with_key_held(pipe, db_pool, a, 0) as tx:
        answered: list[str] = []
        hand_in(pipe, a, 5, answered)
        async def first_waits() -> bool:
            return pipe.committed_batches == 0 and len(pipe._commits) == 1

        async def b_stored() -> bool:
            return await count(db_pool, b) == 5

        assert await wait_until(first_waits, timeout=10)
        hand_in(pipe, b, 5, answered)
        if lanes == 2:
            # the second batch committed beside the blocked one, but is not answered before it
            assert await wait_until(b_stored, timeout=10)
            assert answered == []
        else:  # one lane: the second batch waits behind the first
            assert not await wait_until(b_stored, timeout=1.5)
        await tx.rollback()  # the blocker gives up its key: the first batch stores all five
        assert await pipe.drain(10)
        assert answered == [f"{a}/{i}/saved" for i in range(5)] + [f"{b}/{i}/saved" for i in range(5)]
        assert await count(db_pool, a) == 5 and await count(db_pool, b) == 5
        assert pipe.depth == 0
        assert metric(pipe.metrics, "sqal_ingest_internal_errors_total", stage="answer") == 0


async def test_lanes_leave_a_pool_connection_to_the_rest(database_url: str) -> None:
    for size, lanes in ((1, 1), (2, 1), (3, 2), (10, 2)):
        pool = await asyncpg.create_pool(database_url, min_size=0, max_size=size)
        try:
            assert Pipeline(pool, config=PipelineConfig(workers=0, commit_lanes=2)).lane_count() == lanes, size
        finally:
            await pool.close()


def seq_envelopes(dev: str, seqs: list[int], answered: list[str]) -> list[Envelope]:
    def done(o: Outcome) -> None:
        answered.append(f"{o.seq}/{o.status}")

    return [Envelope("mqtt", codec.topic(dev, "sample"), sample_bytes(dev, boot=1, seq=s), datetime.now(UTC),
                     done=done) for s in seqs]


async def lock_waiters(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND datname = current_database()"))


async def test_two_lanes_deadlocked_on_keys_in_opposite_orders_store_each_reading_once(db_pool: asyncpg.Pool) -> None:
    """Batch 1 = seq (0, 1, 2), batch 2 = seq (2, 0): batch 1 inserts 0 and waits on 1 (held by a
    blocker), batch 2 inserts 2 and waits on 0 (batch 1's); the blocker gives 1 up, batch 1 goes on
    to 2 (batch 2's): a deadlock. PostgreSQL aborts one (40P01), its batch is retried: every reading
    stored once, answers in receive order."""
    dev = uid()
    pipe = Pipeline(db_pool, config=PipelineConfig(batch_max=3, flush_s=0.01, workers=0, commit_lanes=2))
    async with running_with_key_held(pipe, db_pool, dev, 1) as tx:
        answered: list[str] = []
        pipe.put(seq_envelopes(dev, [0, 1, 2], answered))

        async def waiting(n: int) -> bool:
            return await lock_waiters(db_pool) == n

        assert await wait_until(lambda: waiting(1), timeout=10)  # batch 1 holds 0, waits on 1
        pipe.put(seq_envelopes(dev, [2, 0], answered))
        assert await wait_until(lambda: waiting(2), timeout=10)  # batch 2 holds 2, waits on 0
        await tx.rollback()  # batch 1 takes 1, then waits on 2: deadlock, broken by PostgreSQL
        assert await pipe.drain(30)
        rows = await db_pool.fetch("SELECT seq FROM sqal_samples WHERE device_id = $1 ORDER BY seq", dev)
        assert [r["seq"] for r in rows] == [0, 1, 2]
        assert [a.split("/")[0] for a in answered] == ["0", "1", "2", "2", "0"]  # receive order
        statuses = [a.split("/")[1] for a in answered]
        assert sorted(statuses) == ["duplicate", "duplicate", "saved", "saved", "saved"]
        assert metric(pipe.metrics, "sqal_ingest_db_retries_total") >= 1  # the deadlock's victim was retried
        assert pipe.depth == 0
