"""A durable JetStream pull consumer read through core NATS: JetStream's wire API for pull consumers,
with nats-py's public core API only (subscribe, publish).

Why not nats-py's `fetch`: it waits for each message of a batch with `next_msg()`, which makes a task
(named by a fresh uuid4) and a `wait_for` per message: 42-47 us of CPU a message, against about 10 us
for the same consumer pulled this way (bench/results.md, round 8).

The protocol (nats-server's server/consumer.go, processNextMsgRequest and processWaiting; ADR-13 and
ADR-37 of nats-io/nats-architecture-and-design):

- One subscription on a private inbox, `<inbox>.*`. A pull request is a plain publish to
  `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with the reply `<inbox>.<n>` (n counts the
  requests) and the body `{"batch": b, "expires": ns, "idle_heartbeat": ns}`. The server keeps the
  request until it has sent b messages or it expires.
- The consumer's messages arrive on that subscription with their stream subject and, as reply, the
  subject that acknowledges them, `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
  seq>.<time>.<pending>` (with a domain and an account hash after `$JS.ACK.` in the newer form).
  The server spreads its messages over every waiting request of the consumer, round robin, so a
  message cannot be told to a request: what is kept is the total asked and not yet delivered
  (`pending`), as ADR-37's `consume()` does.
- Statuses arrive on the reply subject of the request they are about, without a reply of their own,
  with a `Status` header (and `Description`):

  100 Idle Heartbeat  the request is alive and nothing came for `idle_heartbeat` (also when the
                      consumer is at its max_ack_pending: the server holds the request, sends
                      heartbeats, and then a 408; it sends no 409 for that). Nothing to do.
  408 Request Timeout the request expired; `Nats-Pending-Messages` says how many of it were not
                      delivered: taken off `pending`, and a new request goes out when there is room.
                      Any status carrying `Nats-Pending-Messages` (408 Interest Expired, 409 Message
                      Size Exceeds MaxBytes, 409 Batch Completed) ends its request the same way.
  400, 409 Exceeded MaxRequestBatch/MaxRequestExpires/MaxRequestMaxBytes/MaxWaiting, 409 Consumer
  is push based, 503 (no responders: no consumer, or no JetStream leader for it yet), 423
                      the request was refused on arrival, nothing of it delivered: its whole batch
                      is taken off `pending`, the problem reported, and the next request waits
                      (0.5 s, doubling up to 5 s). A refused batch size is lowered to the consumer's
                      MaxRequestBatch. Three 503 in a row, and the consumer is re-created
                      (`recover`): nothing may delete it (gateway/nats/streams.py).
  409 Consumer Deleted
                      every request is gone: a resync (below), a pause, and `recover`.
  409 Leadership Change, 404 and anything else
                      the server dropped requests without saying how many of them were delivered:
                      a resync.

- A resync forgets every outstanding request: a new inbox is subscribed (`pending` 0) and the old
  one drained (UNSUB, a round trip, and what it had already received is still handed over), so the
  server drops the old requests (they lost their interest) and the count is exact again. Also done
  after a reconnection (the requests died with the old connection, or live on without our knowing)
  and when nothing at all came for 3 heartbeat intervals while requests are outstanding (the server
  lost them; a request refused on max_waiting gets no answer when it asked for heartbeats).

Flow control: a request asks for at most `batch`, and for no more than `room()` minus what this
consumer has asked for and not yet handed over; a new one goes out once less than half a batch is
outstanding. Messages are handed over in bursts: those that arrive together (one read of the
socket) in one `deliver` call. The caller acknowledges each by publishing to its reply subject, when
it wants (nothing here acknowledges).

Stop: no more requests, then the inbox is drained: UNSUB, a round trip, and the messages that came
before it are handed over. A few may still be lost to the stop: the server records a message as
delivered (ack pending) before its internal send queue sends it, so one whose request lost its
interest in between goes nowhere (server/consumer.go, deliverMsg: trackPending, then outq.send). The
engine hands those out again after the consumer's ack_wait; at most what was asked for and not yet
delivered at the stop (a batch).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = logging.getLogger(__name__)

NEXT_SUBJECT = "$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
ACK_PREFIX = "$JS.ACK."
STATUS = "Status"
DESCRIPTION = "Description"
PENDING_MESSAGES = "Nats-Pending-Messages"

# statuses refusing a request on arrival: nothing of it was delivered
_REFUSED_409 = ("Exceeded MaxRequestBatch", "Exceeded MaxRequestExpires", "Exceeded MaxRequestMaxBytes",
                "Exceeded MaxWaiting", "Consumer is push based")
_MAX_BATCH = re.compile(r"Exceeded MaxRequestBatch of (\d+)")
UNAVAILABLE_BEFORE_RECOVER = 3  # 503s in a row before the consumer is re-created


@dataclass(frozen=True)
class PullSettings:
    batch: int = 500              # messages a request asks for, at most
    expires_s: float = 5.0        # a request's life at the server
    heartbeat_s: float = 1.0      # the server's idle heartbeat on a waiting request (at most expires / 2)
    missed_heartbeats: int = 3    # silence (in heartbeats) while requests are outstanding before a resync
    retry_pause_s: float = 0.5    # after a refused request, doubled at each refusal in a row
    retry_pause_max_s: float = 5.0
    drain_timeout_s: float = 5.0  # the stop's round trip, at most

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError("batch must be at least 1")
        if self.heartbeat_s * 2 > self.expires_s:
            # the server refuses such a request (400 Bad Request - heartbeat value too large)
            raise ValueError("heartbeat_s must be at most half of expires_s")


def delivered_count(reply: str) -> int:
    """How many times the engine has handed this message out (1: the first time), from its ack
    subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<...>` (9 tokens) or, with a domain and an
    account hash, `$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<...>` (12 tokens, 11
    from servers before 2.9). Raises ValueError for anything else."""
    if reply.startswith(ACK_PREFIX):
        dots = reply.count(".")
        if dots == 8:
            return int(reply.split(".", 5)[4])
        if dots >= 10:
            return int(reply.split(".", 7)[6])
    raise ValueError(f"not a JetStream ack subject: {reply!r}")


class PullConsumer:
    """Reads one durable pull consumer of one stream; see the module's docstring.

    `deliver(msgs)` is called on the event loop with each burst of messages (never a status), in
    arrival order. `room()` is how many more messages the caller can take in now (its capacity minus
    what it holds); this consumer never asks for more than that minus what it has asked for and not
    yet handed over. `recover()` re-creates the consumer (called after it was deleted, or kept
    answering 503). `on_problem(text)` is told what went wrong (a refusal, a missed heartbeat...).
    """

    def __init__(self, nc: NatsClient, stream: str, consumer: str, deliver: Callable[[list[Msg]], None],
                 room: Callable[[], int], settings: PullSettings | None = None, *,
                 recover: Callable[[], Awaitable[None]] | None = None,
                 on_problem: Callable[[str], None] | None = None) -> None:
        self.nc = nc
        self.stream, self.consumer = stream, consumer
        self.settings = s = settings or PullSettings()
        self._deliver = deliver
        self._room = room
        self._recover = recover
        self._on_problem = on_problem or (lambda text: log.warning("%s", text))
        self._next_subject = NEXT_SUBJECT.format(stream=stream, consumer=consumer)
        self._request_tail = b',"expires":%d,"idle_heartbeat":%d}' % (int(s.expires_s * 1e9), int(s.heartbeat_s * 1e9))
        self.batch = s.batch          # lowered when the consumer's MaxRequestBatch is smaller
        self.pending = 0              # asked for by the live requests, not yet delivered
        self._held: list[Msg] = []    # delivered, not yet handed over (this burst)
        # reply subject -> (batch, monotonic time sent) of the requests that may still be outstanding (one
        # fully delivered ends without a word: forgotten once `pending` is 0 or it is past its expiry)
        self._requests: dict[str, tuple[int, float]] = {}
        self._inbox = ""
        self._sub: Subscription | None = None
        self._gen = 0                 # the inbox's generation: a resync starts a new one
        self._seq = 0
        self._last_heard = 0.0        # monotonic: the last message or status of this generation
        self._pause_until = 0.0
        self._pause = s.retry_pause_s
        self._unavailable = 0         # 503s in a row
        self._resync_why: str | None = None
        self._recover_needed = False
        self._flush_scheduled = False
        self._wake = asyncio.Event()
        self._running = False
        self._tasks: list[asyncio.Task[None]] = []
        self._retiring: set[asyncio.Task[None]] = set()
        # what happened, for tests and diagnostics
        self.requests = 0
        self.delivered = 0
        self.heartbeats = 0
        self.resyncs = 0
        self.recoveries = 0
        self.statuses: collections.Counter[str] = collections.Counter()

    # ---- life ----

    async def start(self) -> None:
        """Subscribe the inbox and start asking (errors of the subscription raise here)."""
        self._running = True
        await self._subscribe()
        self._tasks = [asyncio.create_task(self._request_loop(), name=f"nats-pull-{self.stream}"),
                       asyncio.create_task(self._watchdog(), name=f"nats-pull-watch-{self.stream}")]
        self._wake.set()

    def wake(self) -> None:
        """The caller has more room: ask again if a request is due (cheap; call it freely)."""
        self._wake.set()

    def reconnected(self) -> None:
        """The connection came back: the requests may have died with the old one."""
        self._resync_why = "reconnected"
        self._wake.set()

    @property
    def outstanding(self) -> int:
        """Asked for and not yet handed over."""
        return self.pending + len(self._held)

    async def stop(self) -> None:
        """No more requests; drain the inbox (what arrives before the server drops our requests is
        handed over); then nothing more comes."""
        await self._stop_tasks()
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._retire(sub)
        for t in list(self._retiring):
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._flush()
        self.pending = 0
        self._requests.clear()

    def abandon(self) -> None:
        """The connection is closed for good: stop without a word to the server. What arrived is
        still handed over (its acks can go through another connection)."""
        self._running = False
        for t in (*self._tasks, *self._retiring):
            t.cancel()
        self._tasks = []
        self._sub = None
        self._flush()
        self.pending = 0
        self._requests.clear()

    async def _stop_tasks(self) -> None:
        self._running = False
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    # ---- the inbox ----

    async def _subscribe(self) -> None:
        self._gen += 1
        self._inbox = self.nc.new_inbox()
        self._requests.clear()
        self.pending = 0
        self._sub = await self.nc.subscribe(self._inbox + ".*", cb=self._callback(self._gen))

    async def _resync(self, why: str) -> None:
        """Forget every outstanding request: a new inbox, the old one drained in the background."""
        self.resyncs += 1
        log.info("message engine: %s/%s: pull requests forgotten (%s): %d asked and not delivered",
                 self.stream, self.consumer, why, self.pending)
        old = self._sub
        await self._subscribe()
        if old is not None:
            t = asyncio.create_task(self._retire(old), name=f"nats-pull-retire-{self.stream}")
            self._retiring.add(t)
            t.add_done_callback(self._retiring.discard)

    async def _retire(self, sub: Subscription) -> None:
        """Drain a subscription (UNSUB, a round trip, its queue processed), or drop it when that
        cannot be done (connection down)."""
        drained = False
        if self.nc.is_connected:
            with contextlib.suppress(Exception):  # the connection lost meanwhile: dropped below
                await asyncio.wait_for(sub.drain(), self.settings.drain_timeout_s)
                drained = True
        if not drained:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _callback(self, gen: int) -> Callable[[Msg], Awaitable[None]]:
        async def on_msg(m: Msg) -> None:
            if m.reply:  # a message of the stream (its ack subject as reply)
                if gen == self._gen:
                    self._last_heard = time.monotonic()
                    if self.pending > 1:
                        self.pending -= 1
                    else:  # every request delivered in full
                        self.pending = 0
                        self._requests.clear()
                    if self.pending <= self.batch // 2:
                        self._wake.set()
                self._held.append(m)
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    asyncio.get_running_loop().call_soon(self._flush)
            elif gen == self._gen:
                self._last_heard = time.monotonic()
                self._status(m)
            # else: a status of a request forgotten by a resync

        return on_msg

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._held:
            msgs, self._held = self._held, []
            self.delivered += len(msgs)
            self._pause = self.settings.retry_pause_s
            self._deliver(msgs)
            if self.pending <= self.batch // 2:
                # what was held counted as outstanding: the request loop may have looked before
                # this hand-over and found nothing due
                self._wake.set()

    # ---- statuses ----

    def _status(self, m: Msg) -> None:
        h = m.headers or {}
        code = h.get(STATUS, "")
        desc = h.get(DESCRIPTION, "").strip()
        if code == "100":  # Idle Heartbeat (or a flow control request, which pull consumers do not send)
            self.heartbeats += 1
            return
        self.statuses[f"{code} {desc}".strip()] += 1
        batch = self._requests.pop(m.subject, (None, 0.0))[0]
        left = h.get(PENDING_MESSAGES)
        if left is not None and left.strip().isdigit():
            # the request ended (expired, max bytes...): this much of it was not delivered
            self.pending = max(0, self.pending - int(left))
            if code != "408":
                self._on_problem(f"message engine: {self.stream}/{self.consumer}: pull request ended: {code} {desc}")
            self._wake.set()
            return
        if code == "503" or code == "400" or code == "423" or (code == "409" and desc.startswith(_REFUSED_409)):
            # refused on arrival: nothing of it was delivered
            if batch is not None:
                self.pending = max(0, self.pending - batch)
            if code == "503":
                self._unavailable += 1
                what = "no responders (the consumer is missing, or has no leader yet)"
                if self._unavailable >= UNAVAILABLE_BEFORE_RECOVER:
                    self._recover_needed = True
                    self._unavailable = 0
            else:
                what = f"{code} {desc}"
                if (cap := _MAX_BATCH.search(desc)) and int(cap.group(1)) >= 1:
                    self.batch = min(self.batch, int(cap.group(1)))
            self._on_problem(f"message engine: {self.stream}/{self.consumer}: pull request refused: {what}")
            self._back_off()
            return
        if code == "409" and desc == "Consumer Deleted":
            self._on_problem(f"message engine: {self.stream}/{self.consumer}: the consumer was deleted; "
                             "creating it again")
            self._recover_needed = True
            self._back_off()
        self._resync_why = f"{code} {desc}".strip()  # 409 Leadership Change, 404, anything unforeseen
        self._wake.set()

    def _back_off(self) -> None:
        self._pause_until = time.monotonic() + self._pause
        self._pause = min(self._pause * 2, self.settings.retry_pause_max_s)
        self._wake.set()

    # ---- requests ----

    def _want(self) -> int:
        """How many to ask for now (0: none): up to a batch outstanding, asked again once less than
        half of it is, and never more than the caller's room."""
        out = self.pending + len(self._held)
        if out > self.batch // 2:
            return 0
        return max(0, min(self.batch - out, self._room() - out))

    async def _request_loop(self) -> None:
        while self._running:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._resync_why is not None:
                    why, self._resync_why = self._resync_why, None
                    await self._resync(why)
                if self._recover_needed and self._recover is not None:
                    self._recover_needed = False
                    self.recoveries += 1
                    await self._recover()
                    # a consumer just created: the back-off of the refusals that led here is stale
                    self._pause = self.settings.retry_pause_s
                    self._pause_until = min(self._pause_until, time.monotonic() + self._pause)
                if (pause := self._pause_until - time.monotonic()) > 0:
                    await asyncio.sleep(pause)
                    self._wake.set()
                    continue
                if not self.nc.is_connected:
                    continue  # reconnected() wakes us
                n = self._want()
                if n > 0:
                    await self._request(n)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - connection lost, recover failed: try again after a pause
                self._on_problem(f"message engine: {self.stream}/{self.consumer}: {type(exc).__name__}: {exc}")
                self._back_off()

    async def _request(self, n: int) -> None:
        self._seq += 1
        reply = f"{self._inbox}.{self._seq}"
        now = time.monotonic()
        if self.pending == 0:
            self._last_heard = now  # the silence is counted from the first request outstanding
        self._requests[reply] = (n, now)
        self.pending += n
        self.requests += 1
        await self.nc.publish(self._next_subject, b'{"batch":%d' % n + self._request_tail, reply=reply)

    async def _watchdog(self) -> None:
        """Requests outstanding and nothing at all for a few heartbeat intervals: the server lost
        them (or refused one without a word): resync."""
        s = self.settings
        silence = s.heartbeat_s * s.missed_heartbeats
        while self._running:
            await asyncio.sleep(s.heartbeat_s)
            now = time.monotonic()
            old = now - s.expires_s - silence  # a request sent before is dead at the server
            for reply in [r for r, (_, sent) in self._requests.items() if sent < old]:
                del self._requests[reply]
            if (self.pending > 0 and self.nc.is_connected and self._resync_why is None
                    and now - self._last_heard > silence):
                self._on_problem(f"message engine: {self.stream}/{self.consumer}: nothing for {silence:.0f} s "
                                 f"(no heartbeat) with {self.pending} messages asked for")
                self._resync_why = "missed heartbeats"
                self._wake.set()
