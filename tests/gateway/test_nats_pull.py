"""gateway/nats/pull.py against a real nats-server (JetStream): the core-NATS pull of a durable
consumer and the statuses the engine sends on its inbox.

- a request that expires with nothing to deliver (408 Request Timeout, with the count of what it did
  not deliver) is asked again, and the next message arrives;
- idle heartbeats (100) keep the requests alive; silence with requests outstanding (a request the
  server dropped without a word: refused on max_waiting while asking for heartbeats) makes a resync;
- at max_ack_pending the engine holds the request, sends heartbeats and then a 408: no spin, no
  resync, the rest comes as messages are acknowledged. (nats-server sends no 409 for max ack
  pending: checked in its server/consumer.go, 2.2 to 2.15; the 409s it does send are tested below);
- 409 Consumer Deleted: every request forgotten, the consumer created again, the pull goes on;
- 409 Exceeded MaxRequestBatch: the refused request is not counted, the batch lowered to the limit;
- 503 (no responders: no such consumer) three times: the consumer is created;
- the caller's room bounds what is asked; a stop drains the inbox (what the engine sent but its
  send queue lost to the UNSUB is handed out again after ack_wait); a restart of the engine is survived; the delivered count read from the ack subject.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from gateway.nats.pull import PullConsumer, PullSettings, delivered_count
from tests.fixtures.mqtt import NatsBroker

FAST = PullSettings(batch=10, expires_s=1.0, heartbeat_s=0.25)


class Bench:
    """A stream of its own on the test engine, a connection, and what a pull delivered."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        tag = uuid.uuid4().hex[:8]
        self.stream, self.subject, self.durable = f"PT_{tag}", f"pt.{tag}", "c"
        self.got: list[Msg] = []
        self.problems: list[str] = []

    async def create(self, **consumer: Any) -> None:
        await self.js.add_stream(StreamConfig(name=self.stream, subjects=[self.subject]))
        await self.consumer(**consumer)

    async def consumer(self, **extra: Any) -> None:
        """The durable consumer, through JetStream's API (fields nats-py's ConsumerConfig lacks, such
        as max_batch, go in as they are)."""
        cfg = {"durable_name": self.durable, "ack_policy": "explicit", "ack_wait": 30_000_000_000, **extra}
        r = await self.nc.request(f"$JS.API.CONSUMER.CREATE.{self.stream}.{self.durable}",
                                  json.dumps({"stream_name": self.stream, "config": cfg}).encode(), timeout=5)
        assert "error" not in json.loads(r.data), r.data

    async def publish(self, n: int) -> None:
        for i in range(n):
            await self.js.publish(self.subject, b"%d" % i)

    def pull(self, settings: PullSettings = FAST, room: Callable[[], int] = lambda: 1000,
             recover: Callable[[], Any] | None = None) -> PullConsumer:
        return PullConsumer(self.nc, self.stream, self.durable, self.got.extend, room, settings,
                            recover=recover, on_problem=self.problems.append)

    async def ack_all(self) -> None:
        for m in self.got:
            if not m.is_acked:
                await m.ack()

        await self.nc.flush()

    async def ack_pending(self) -> int:
        return int((await self.js.consumer_info(self.stream, self.durable)).num_ack_pending)

    async def nothing_pending(self) -> bool:
        return await self.ack_pending() == 0


@pytest.fixture
async def bench(nats_broker: NatsBroker) -> AsyncIterator[Bench]:
    nc = await nats.connect(nats_broker.nats_url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    try:
        yield Bench(nc)
    finally:
        await nc.close()


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def wait_until(pred: Callable[[], Any], timeout: float) -> Any:
    """Until `pred()` (a plain or an async function) is true; its last value."""
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if inspect.isawaitable(got):
            got = await got
        if got or time.monotonic() > end:
            return got
        await asyncio.sleep(0.02)


async def test_a_pull_that_expires_with_no_message_is_asked_again(bench: Bench) -> None:
    await bench.create()
    p = bench.pull()
    await p.start()
    try:
        await settle(2.6)  # a request lives 1 s: two or three have expired
        assert p.statuses["408 Request Timeout"] >= 2, p.statuses
        assert p.requests == p.statuses["408 Request Timeout"] + 1  # each expiry asked again, once
        assert p.pending == FAST.batch and p.resyncs == 0 and not bench.problems
        assert bench.got == []
        await bench.publish(3)
        assert await wait_until(lambda: len(bench.got) == 3, timeout=5), len(bench.got)
        assert [m.data for m in bench.got] == [b"0", b"1", b"2"]
        assert p.pending == FAST.batch - 3
    finally:
        await p.stop()


async def test_heartbeats_keep_the_requests_alive(bench: Bench) -> None:
    await bench.create()
    p = bench.pull(PullSettings(batch=10, expires_s=2.0, heartbeat_s=0.25))
    await p.start()
    try:
        await settle(1.6)  # no message: a heartbeat every 0.25 s, the request not expired yet
        assert p.heartbeats >= 3, p.heartbeats
        assert p.resyncs == 0 and p.requests == 1 and not p.statuses and not bench.problems, (p.resyncs, p.statuses)
        await bench.publish(1)
        assert await wait_until(lambda: len(bench.got) == 1, timeout=5)
    finally:
        await p.stop()


async def test_silence_with_requests_outstanding_makes_a_resync(bench: Bench) -> None:
    await bench.create(max_waiting=1)
    # another client takes the consumer's one waiting slot for 3 s: our requests, which ask for
    # heartbeats, are then dropped by the server without an answer
    other = bench.nc.new_inbox()
    await bench.nc.subscribe(other)
    await bench.nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{bench.stream}.{bench.durable}",
                           b'{"batch":1,"expires":3000000000}', reply=other)
    await bench.nc.flush()
    await settle(0.3)
    p = bench.pull(PullSettings(batch=10, expires_s=2.0, heartbeat_s=0.25))
    await p.start()
    try:
        assert await wait_until(lambda: p.resyncs >= 1, timeout=3), (p.statuses, p.heartbeats)
        assert any("no heartbeat" in t for t in bench.problems), bench.problems
        # once that slot is free again, ours is taken and delivers
        await settle(3.0)
        await bench.publish(2)
        assert await wait_until(lambda: len(bench.got) == 2, timeout=5), (len(bench.got), p.statuses, p.resyncs)
    finally:
        await p.stop()


async def test_at_max_ack_pending_the_engine_holds_the_request(bench: Bench) -> None:
    await bench.create(max_ack_pending=3)
    await bench.publish(10)
    p = bench.pull()
    await p.start()
    try:
        await settle(2.6)
        assert len(bench.got) == 3  # the consumer's limit; the request waits for acks
        assert p.heartbeats >= 3 and p.statuses["408 Request Timeout"] >= 2, (p.heartbeats, p.statuses)
        # each 408's Nats-Pending-Messages gave back what its request did not deliver: one request
        # of a full batch outstanding again
        assert p.pending == FAST.batch, p.pending
        assert p.resyncs == 0 and not bench.problems, bench.problems
        assert p.requests <= p.statuses["408 Request Timeout"] + 2  # no spin: a request per expiry
        assert not [s for s in p.statuses if s.startswith("409")]
        for _ in range(10):
            await bench.ack_all()
            if len(bench.got) == 10:
                break
            await settle(0.2)
        await bench.ack_all()
        assert [int(m.data) for m in bench.got] == list(range(10))
        assert await wait_until(bench.nothing_pending, timeout=5)
    finally:
        await p.stop()


async def test_a_deleted_consumer_is_created_again(bench: Bench) -> None:
    await bench.create()
    recovered: list[float] = []

    async def recover() -> None:
        recovered.append(time.monotonic())
        await bench.consumer()

    p = bench.pull(recover=recover)
    await p.start()
    try:
        await settle(0.3)
        await bench.js.delete_consumer(bench.stream, bench.durable)
        assert await wait_until(lambda: recovered, timeout=5)
        assert p.statuses["409 Consumer Deleted"] >= 1 and p.resyncs >= 1, p.statuses
        assert any("deleted" in t for t in bench.problems), bench.problems
        await bench.publish(4)
        # a loaded server may answer 503 for a moment after the re-creation (no responder yet): three
        # of them and the consumer is created once more, after at most a few seconds of back-off
        assert await wait_until(lambda: len(bench.got) == 4, timeout=20), (len(bench.got), p.statuses)
    finally:
        await p.stop()


async def test_a_request_over_max_batch_is_refused_and_the_batch_lowered(bench: Bench) -> None:
    await bench.create(max_batch=4)
    p = bench.pull()
    await p.start()
    try:
        assert await wait_until(lambda: p.batch == 4, timeout=5), p.statuses
        assert p.statuses["409 Exceeded MaxRequestBatch of 4"] == 1
        assert any("refused" in t and "MaxRequestBatch" in t for t in bench.problems), bench.problems
        await bench.publish(10)
        assert await wait_until(lambda: len(bench.got) == 10, timeout=10), (len(bench.got), p.statuses)
        assert p.pending <= 4 and p.resyncs == 0
    finally:
        await p.stop()


async def test_no_responders_three_times_and_the_consumer_is_created(bench: Bench) -> None:
    await bench.create()
    await bench.js.delete_consumer(bench.stream, bench.durable)

    async def recover() -> None:
        await bench.consumer()

    p = bench.pull(PullSettings(batch=10, expires_s=1.0, heartbeat_s=0.25, retry_pause_s=0.05), recover=recover)
    await p.start()
    try:
        assert await wait_until(lambda: p.recoveries == 1, timeout=5), p.statuses
        assert sum(n for s, n in p.statuses.items() if s.startswith("503")) == 3, p.statuses
        assert p.pending in (0, 10)  # the refused requests not counted
        await bench.publish(5)
        assert await wait_until(lambda: len(bench.got) == 5, timeout=10), (len(bench.got), p.statuses)
    finally:
        await p.stop()


async def test_the_callers_room_bounds_what_is_asked(bench: Bench) -> None:
    await bench.create()
    await bench.publish(30)
    room = 5
    p = bench.pull(room=lambda: room - len(bench.got) + sum(m.is_acked for m in bench.got))
    await p.start()
    try:
        await settle(1.5)  # an expiry included
        assert len(bench.got) == 5 and p.outstanding == 0, (len(bench.got), p.pending)
        assert await bench.ack_pending() == 5
        room = 30
        p.wake()
        assert await wait_until(lambda: len(bench.got) == 30, timeout=5), len(bench.got)
        assert [int(m.data) for m in bench.got] == list(range(30))
    finally:
        await p.stop()


async def test_a_stop_hands_over_what_came_and_the_engine_redelivers_the_rest(bench: Bench) -> None:
    """Messages keep coming while the pull stops: what reached the inbox is handed over, nothing comes
    after the stop, and what the engine counted as delivered without it arriving (its send queue
    raced the UNSUB: at most the batch outstanding) is handed out again after ack_wait, once."""
    await bench.create(ack_wait=2_000_000_000)
    settings = PullSettings(batch=50, expires_s=1.0, heartbeat_s=0.25)
    p = bench.pull(settings)
    await p.start()
    stop = asyncio.Event()

    async def publisher() -> None:
        i = 0
        while not stop.is_set():
            await bench.nc.publish(bench.subject, b"%d" % i)
            i += 1
            if i % 20 == 0:
                await asyncio.sleep(0.001)

    pub = asyncio.create_task(publisher())
    try:
        assert await wait_until(lambda: len(bench.got) >= 200, timeout=10)
        await p.stop()
        stop.set()
        await pub
        n = len(bench.got)
        await settle(0.5)
        assert len(bench.got) == n  # nothing after the stop
        handed = [m.metadata.sequence.stream for m in bench.got]
        assert len(set(handed)) == n and all(delivered_count(m.reply) == 1 for m in bench.got)
        stranded = await bench.ack_pending() - n  # nothing acknowledged yet
        assert 0 <= stranded <= settings.batch
        await bench.ack_all()
        again = bench.pull(settings)
        await again.start()

        def redelivered() -> list[Msg]:
            return [m for m in bench.got[n:] if delivered_count(m.reply) >= 2]

        try:
            # the published rest comes at once; the stranded ones after ack_wait (2 s)
            assert await wait_until(lambda: len(redelivered()) >= stranded, timeout=10)
            await settle(0.5)
        finally:
            await again.stop()
        late = [m.metadata.sequence.stream for m in bench.got[n:]]
        assert len(redelivered()) == stranded and len(set(late)) == len(late)
        assert not set(handed) & set(late)  # acknowledged: never again
        await bench.ack_all()
        assert await wait_until(bench.nothing_pending, timeout=5)
    finally:
        stop.set()
        await p.stop()


async def test_a_restart_of_the_engine_is_survived(bench: Bench, nats_broker: NatsBroker) -> None:
    await bench.create()
    p = bench.pull()
    await p.start()
    try:
        await bench.publish(3)
        assert await wait_until(lambda: len(bench.got) == 3, timeout=5)
        await bench.ack_all()
        await asyncio.to_thread(nats_broker.restart)
        assert await wait_until(lambda: bench.nc.is_connected, timeout=20)
        p.reconnected()  # what the source's reconnected callback does
        assert await wait_until(lambda: p.resyncs >= 1, timeout=5)

        async def published() -> bool:
            try:
                await bench.publish(3)
                return True
            except Exception:  # noqa: BLE001 - JetStream still starting after the restart
                return False

        assert await wait_until(published, timeout=20)
        assert await wait_until(lambda: len(bench.got) == 6, timeout=10), (len(bench.got), p.statuses)
        assert [int(m.data) for m in bench.got] == [0, 1, 2, 0, 1, 2]
    finally:
        await p.stop()


async def test_the_delivered_count_is_read_from_the_ack_subject(bench: Bench) -> None:
    await bench.create(ack_wait=500_000_000)  # 0.5 s: an unacknowledged message comes back
    await bench.publish(1)
    p = bench.pull()
    await p.start()
    try:
        assert await wait_until(lambda: len(bench.got) >= 2, timeout=10)
        assert [delivered_count(m.reply) for m in bench.got[:2]] == [1, 2]
        assert [m.metadata.num_delivered for m in bench.got[:2]] == [1, 2]  # nats-py's own reading
    finally:
        await p.stop()
    assert delivered_count("$JS.ACK.S.c.7.11.9.1796529544194064843.0") == 7
    assert delivered_count("$JS.ACK.dom.ACCHASH.S.c.3.11.9.1796529544194064843.0.RAND") == 3
    assert delivered_count("$JS.ACK.dom.ACCHASH.S.c.4.11.9.1796529544194064843.0") == 4
    for bad in ("_INBOX.x.1", "$JS.ACK.S.c", "$JS.API.S.c.7.11.9.1.0"):
        with pytest.raises(ValueError):
            delivered_count(bad)


def test_a_heartbeat_longer_than_half_the_expiry_is_refused() -> None:
    with pytest.raises(ValueError):
        PullSettings(expires_s=1.0, heartbeat_s=0.6)
    with pytest.raises(ValueError):
        PullSettings(batch=0)
