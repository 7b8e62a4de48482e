"""Answering a committed batch: whatever fails in the ingest's own code after the commit (a bug in
the outcomes, a callback, a listener), every message of the batch is still answered -- the answer
is what gives a source its room back (the engine's source acknowledges and frees its room in it), so
one not made would shrink the intake for good -- and the failure is counted.
Real PostgreSQL; the grading runs in a thread (workers=0)."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.ingest.envelope import Outcome
from gateway.ingest.pipeline import Pipeline, PipelineConfig
from tests.gateway.ingest_support import count, envelopes, hand_in, metric, uid


def internal_errors(pipe: Pipeline, stage: str) -> float:
    return metric(pipe.metrics, "sqal_ingest_internal_errors_total", stage=stage)


async def test_a_bug_in_the_outcomes_still_answers_the_committed_batch(db_pool: asyncpg.Pool) -> None:
    pipe = Pipeline(db_pool, config=PipelineConfig(batch_max=5, flush_s=0.01, workers=0))
    real = pipe._outcomes
    calls = 0

    def outcomes_failing_once(*a: Any) -> dict[int, Outcome]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a bug")
        return real(*a)

    pipe._outcomes = outcomes_failing_once  # type: ignore[method-assign,assignment]
    await pipe.start()
    try:
        a, b = uid(), uid()
        answered: list[str] = []
        hand_in(pipe, a, 5, answered)
        assert await pipe.drain(10)
        hand_in(pipe, b, 5, answered)
        assert await pipe.drain(10)
        # the first batch is committed and answered (acked) without its details, the next one normally
        assert answered == [f"{a}/None/committed"] * 5 + [f"{b}/{i}/saved" for i in range(5)]
        assert (await count(db_pool, a), await count(db_pool, b)) == (5, 5)
        assert pipe.depth == 0
        assert internal_errors(pipe, "outcomes") == 1 and internal_errors(pipe, "answer") == 0
    finally:
        await pipe.stop()


async def test_failing_callbacks_and_listeners_lose_no_answer(db_pool: asyncpg.Pool) -> None:
    pipe = Pipeline(db_pool, config=PipelineConfig(batch_max=5, flush_s=0.01, workers=0))

    def broken_listener(items: list[Any], outcomes: dict[int, Outcome]) -> None:
        raise RuntimeError("dashboard bug")

    seen: list[int] = []
    pipe.add_listener(broken_listener)
    pipe.add_listener(lambda items, outcomes: seen.append(len(items)))  # runs after the broken one
    await pipe.start()
    try:
        dev = uid()
        answered: list[str] = []
        envs = envelopes(dev, 5, answered)
        sent = envs[2].done
        assert sent is not None

        def client_gone(o: Outcome) -> None:
            raise ConnectionError("client gone")

        envs[2].done = client_gone
        pipe.put(envs)
        assert await pipe.drain(10)
        assert answered == [f"{dev}/{i}/saved" for i in (0, 1, 3, 4)]
        assert seen == [5]
        assert pipe.depth == 0
        assert internal_errors(pipe, "listener") == 1
    finally:
        await pipe.stop()
