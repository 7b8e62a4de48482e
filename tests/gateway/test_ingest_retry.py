"""What a failed commit does: an error about the connection (lost, restarting, a client state broken
by it) retries the same batch; an error about the content isolates the offending item, which alone
becomes a 'storage:' reject, its neighbours stored. Real PostgreSQL; the failures are injected in
front of the batch writer."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from gateway.ingest.pipeline import (
    UNEXPLAINED_RETRIES,
    Pipeline,
    PipelineConfig,
    is_transient,
    refuses_content,
)
from registry.errors import InvalidInput
from tests.gateway.ingest_support import count, hand_in, metric, uid


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


def test_what_refuses_the_content() -> None:
    assert refuses_content(asyncpg.exceptions.InvalidTextRepresentationError("bad json"))  # 22P02
    assert refuses_content(asyncpg.exceptions.CheckViolationError("check"))  # 23514
    assert refuses_content(InvalidInput("sample row 3: boot and seq must be integers"))
    assert not refuses_content(asyncpg.exceptions.AdminShutdownError("shutting down"))  # 57P01: transient
    assert not refuses_content(asyncpg.exceptions.DeadlockDetectedError("deadlock"))  # 40P01: transient
    assert not refuses_content(RuntimeError("a bug"))


async def three_readings(pool: asyncpg.Pool, fail: Any, **config: Any) -> tuple[str, list[str], float]:
    """Hand one device's readings 0, 1, 2 (one batch) to a pipeline whose writer fails as `fail`
    says; -> (device id, answers in order, commit retries)."""
    pipe = Pipeline(pool, config=PipelineConfig(batch_max=3, flush_s=0.01, workers=0, **config))
    failing_writer(pipe, fail)
    await pipe.start()
    try:
        dev = uid()
        answered: list[str] = []
        hand_in(pipe, dev, 3, answered)
        assert await pipe.drain(20)
        return dev, answered, metric(pipe.metrics, "sqal_ingest_db_retries_total")
    finally:
        await pipe.stop()


def holds_seq_1(items: list[Any]) -> bool:
    return any(it.row is not None and it.row["seq"] == 1 for it in items)


async def test_a_client_state_error_retries_the_batch_and_loses_nothing(db_pool: asyncpg.Pool) -> None:
    """asyncpg raised this when PostgreSQL went away mid-call; taken for a content error it turned a
    reading into a reject during a database restart."""
    left = 2

    def twice(items: list[Any]) -> Exception | None:
        nonlocal left
        if left:
            left -= 1
            return asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress")
        return None

    dev, answered, retries = await three_readings(db_pool, twice)
    assert answered == [f"{dev}/{i}/saved" for i in range(3)]
    assert await count(db_pool, dev) == 3 and await rejects(db_pool, dev) == []
    assert retries == 2


async def test_a_content_error_isolates_the_item_and_stores_its_neighbours(db_pool: asyncpg.Pool) -> None:
    dev, answered, retries = await three_readings(db_pool, lambda items: asyncpg.exceptions.InvalidTextRepresentationError(
        "invalid input syntax for type json") if holds_seq_1(items) else None)
    assert answered == [f"{dev}/0/saved", f"{dev}/None/rejected", f"{dev}/2/saved"]
    assert await count(db_pool, dev) == 2
    reason = "storage: InvalidTextRepresentationError: invalid input syntax for type json"
    assert await rejects(db_pool, dev) == [reason]
    assert retries == 0


async def test_an_unexplained_error_is_retried_before_its_item_is_blamed(db_pool: asyncpg.Pool) -> None:
    """Neither transient nor a refusal of the content (a bug, an unknown client state): the batch is
    tried again a few times, then split; the item that keeps failing is tried a few times alone, then
    becomes a reject; its neighbours are stored."""
    dev, answered, retries = await three_readings(
        db_pool, lambda items: RuntimeError("a bug") if holds_seq_1(items) else None, retry_max_s=0.05)
    assert answered == [f"{dev}/0/saved", f"{dev}/None/rejected", f"{dev}/2/saved"]
    assert await rejects(db_pool, dev) == ["storage: RuntimeError: a bug"]
    assert retries == 2 * UNEXPLAINED_RETRIES  # the batch's, then the item's
