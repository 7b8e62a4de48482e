"""The writers' staging tables: kept from batch to batch (no truncation at commit) and vacuumed every
TIDY_EVERY batches, so they stay a few batches large; a vacuum that fails costs the writer
connection, never the batch it follows. Real PostgreSQL; grading in a thread (workers=0)."""

from __future__ import annotations

import asyncpg
import pytest

from gateway.ingest import pipeline as pipeline_mod
from gateway.ingest.pipeline import TIDY_EVERY, Pipeline, PipelineConfig
from tests.gateway.ingest_support import count, hand_in, metric, uid
from tests.registry.helpers import stage_pages

BATCH = 20


def one_lane() -> PipelineConfig:
    return PipelineConfig(batch_max=BATCH, flush_s=0.01, workers=0, commit_lanes=1)


async def writer_stage_pages(pipe: Pipeline) -> int:
    (writer,) = pipe._writers  # one lane: one idle writer after a drain
    return await stage_pages(writer)


async def test_the_staging_table_stays_a_few_batches_large(db_pool: asyncpg.Pool) -> None:
    pipe = Pipeline(db_pool, config=one_lane())
    await pipe.start()
    try:
        dev, answered, pages = uid(), list[str](), list[int]()
        for b in range(3 * TIDY_EVERY):
            hand_in(pipe, dev, BATCH, answered)  # seq 0..19 again: the first batch is new, the rest duplicates
            assert await pipe.drain(10)
            pages.append(await writer_stage_pages(pipe))
        assert answered[:BATCH] == [f"{dev}/{i}/saved" for i in range(BATCH)]
        assert answered[BATCH:] == [f"{dev}/{i}/duplicate" for i in range(BATCH)] * (3 * TIDY_EVERY - 1)
        assert await count(db_pool, dev) == BATCH
        first = pages[0]
        assert first >= 1
        # vacuumed every TIDY_EVERY batches: its pages are reused (without, it grows a batch each time)
        assert max(pages) <= (TIDY_EVERY + 1) * first, pages
    finally:
        await pipe.stop()


async def test_a_failed_vacuum_replaces_the_writer_and_loses_nothing(db_pool: asyncpg.Pool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline_mod.tidy_session
    calls = 0

    async def tidy_failing_once(conn: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionResetError("connection lost during VACUUM")
        await real(conn)

    monkeypatch.setattr(pipeline_mod, "tidy_session", tidy_failing_once)
    pipe = Pipeline(db_pool, config=one_lane())
    await pipe.start()
    try:
        devs, answered, writers = [uid() for _ in range(2 * TIDY_EVERY)], list[str](), list[int]()
        for dev in devs:
            hand_in(pipe, dev, BATCH, answered)
            assert await pipe.drain(10)
            writers.append(len(pipe._writers))  # idle writers kept
        assert answered == [f"{dev}/{i}/saved" for dev in devs for i in range(BATCH)]
        assert [await count(db_pool, dev) for dev in devs] == [BATCH] * len(devs)
        assert calls == 2  # after batches TIDY_EVERY and 2 * TIDY_EVERY
        # the writer that failed its vacuum went back to the pool; the next batch took another
        assert writers == [1] * (TIDY_EVERY - 1) + [0] + [1] * TIDY_EVERY
        assert metric(pipe.metrics, "sqal_ingest_db_retries_total") == 0  # the committed batch was not retried
    finally:
        await pipe.stop()
