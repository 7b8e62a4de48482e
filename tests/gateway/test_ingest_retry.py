"""What a failed commit does: an error about the connection (lost, restarting, a client state broken
by it) retries the same batch; an error about the content isolates the offending item, which alone
becomes a 'storage:' reject, its neighbours stored. Real PostgreSQL; the failures are injected in
front of the batch writer."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from gateway.ingest.pipeline import Pipeline, PipelineConfig, is_transient
from tests.gateway.ingest_support import uid
from tests.gateway.test_ingest_lanes import count, hand_in


def failing_writer(pipe: Pipeline, fail: Any) -> None:
    """Wrap the pipeline's batch writer: `fail(items)` returns an exception to raise, or None."""
    real = pipe._write_batch

    async def write(conn: Any, items: list[Any]) -> Any:
        exc = fail(items)
        if exc is not None:
            raise exc
        return await real(conn, items)

    pipe._write_batch = write  # type: ignore[method-assign]


async def rejects(pool: asyncpg.Pool, dev: str) -> list[str]:
    return [r["reason"] for r in await pool.fetch("SELECT reason FROM ingest_rejects WHERE device_id = $1", dev)]


@pytest.mark.parametrize("error", [asyncpg.InternalClientError, asyncpg.exceptions.ProtocolError])
def test_a_broken_client_state_is_transient(error: type[Exception]) -> None:
    assert is_transient(error("cannot switch to state 15; another operation (2) is in progress"))


async def test_a_client_state_error_retries_the_batch_and_loses_nothing(db_pool: asyncpg.Pool) -> None:
    """asyncpg raised this when PostgreSQL went away mid-call; taken for a content error it turned a
    reading into a reject during a database restart."""
    pipe = Pipeline(db_pool, config=PipelineConfig(batch_max=3, flush_s=0.01, workers=0, mqtt_capacity=10))
    left = 2

    def twice(items: list[Any]) -> Exception | None:
        nonlocal left
        if left:
            left -= 1
            return asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
        return None

    failing_writer(pipe, twice)
    await pipe.start()
    try:
        dev = uid()
        answered: list[str] = []
        hand_in(pipe, dev, 3, answered)
        assert await pipe.drain(20)
        assert answered == [f"{dev}/{i}/saved" for i in range(3)]
        assert await count(db_pool, dev) == 3 and await rejects(db_pool, dev) == []
        assert pipe.metrics.db_retries._value.get() == 2
    finally:
        await pipe.stop()


async def test_a_content_error_isolates_the_item_and_stores_its_neighbours(db_pool: asyncpg.Pool) -> None:
    pipe = Pipeline(db_pool, config=PipelineConfig(batch_max=3, flush_s=0.01, workers=0, mqtt_capacity=10))

    def refuse_seq_1(items: list[Any]) -> Exception | None:
        if any(it.row is not None and it.row["seq"] == 1 for it in items):
            return asyncpg.exceptions.InvalidTextRepresentationError("invalid input syntax for type json")
        return None

    failing_writer(pipe, refuse_seq_1)
    await pipe.start()
    try:
        dev = uid()
        answered: list[str] = []
        hand_in(pipe, dev, 3, answered)
        assert await pipe.drain(20)
        assert answered == [f"{dev}/0/saved", f"{dev}/None/rejected", f"{dev}/2/saved"]
        assert await count(db_pool, dev) == 2
        reason = "storage: InvalidTextRepresentationError: invalid input syntax for type json"
        assert await rejects(db_pool, dev) == [reason]
        assert pipe.metrics.db_retries._value.get() == 0
    finally:
        await pipe.stop()
