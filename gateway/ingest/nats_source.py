"""The ingest's source of board messages: JetStream's durable pull consumers (gateway/nats/streams.py).

Each replica pulls messages from the shared durable consumers (each message goes to one replica)
through core NATS (gateway/nats/pull.py: one inbox subscription per consumer, pull requests
published to `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`, the engine's statuses handled there),
hands each burst to the pipeline and acknowledges each message, by a publish to its reply subject,
once its batch is committed and answered (`done`, in receive order). A replica that dies with
messages in hand never acknowledges them: the engine hands them out again after `ack_wait`, and the
dedupe key makes the second copy a duplicate.

Backpressure: a pull request asks for no more than the room left (`capacity` minus what this replica
holds, fetched and not yet acknowledged, minus what that consumer has asked for and not yet
received), and `max_ack_pending` on the consumer bounds what all replicas hold; beyond that the
messages wait in the stream, on disk. (The two consumers, boards' messages and telemetry, each
count the other's held messages but not its outstanding requests, as the fetches did: together they
can exceed `capacity` by at most one request.)

Only nats-py's public API is used. The connection reconnects by itself (to any server of the list);
the pull consumers then forget their requests and ask again; a connection closed for good is
replaced by a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from sqalfw import codec
from sqalfw.urls import hide_password as redact

from gateway.ingest.envelope import Envelope, Outcome
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.rejects import truncate
from gateway.nats import streams, subjects
from gateway.nats.pull import PullConsumer, PullSettings, delivered_count

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.5     # before connecting again after the connection was closed for good (doubled up to 10 s)
RECOVER_TIMEOUT_S = 30.0  # re-creating a deleted consumer: how long JetStream may take to answer


@dataclass(frozen=True)
class NatsConfig:
    servers: list[str]
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None     # tls:// servers: the CA bundle that signed theirs
    cert_file: str | None = None   # a client certificate, for servers that verify clients
    key_file: str | None = None
    limits: streams.StreamLimits = field(default_factory=streams.StreamLimits)
    fetch_batch: int = 500         # messages a pull request asks for, at most
    capacity: int = 5000           # fetched and not yet acknowledged, in this replica
    name: str = "sqal-gateway"
    pull: PullSettings | None = None  # the pull requests' expiry, heartbeat... (None: PullSettings's, batch fetch_batch)


class NatsTlsError(ValueError):
    """TLS to the message engine cannot work: a file that cannot be used, or the engine's certificate
    not trusted / ours refused. Raised at start (not retried: waiting does not mend it)."""


def tls_context(cfg: NatsConfig) -> ssl.SSLContext | None:
    """A client TLS context that verifies the servers' certificates and names: against `ca_file` (a
    private CA) or the system's CAs; with a client certificate when `cert_file` is set. A file that
    cannot be used is an error naming it and its setting."""
    if not (cfg.ca_file or cfg.cert_file or cfg.key_file or any(s.startswith("tls://") for s in cfg.servers)):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise NatsTlsError(f"message engine TLS: cannot load the CA file {cfg.ca_file!r} (SQAL_NATS_CA_FILE): "
                           f"{exc}") from exc
    if cfg.cert_file:
        try:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise NatsTlsError(f"message engine TLS: cannot load the client certificate {cfg.cert_file!r} / key "
                               f"{cfg.key_file!r} (SQAL_NATS_CERT_FILE, SQAL_NATS_KEY_FILE): {exc}") from exc
    elif cfg.key_file:
        raise NatsTlsError("message engine TLS: SQAL_NATS_KEY_FILE is set without SQAL_NATS_CERT_FILE")
    return ctx


def _tls_refusal(servers: list[str], exc: ssl.SSLError) -> NatsTlsError:
    where = ", ".join(redact(s) for s in servers)
    if isinstance(exc, ssl.SSLCertVerificationError):
        hint = ("the engine's certificate is not trusted: set SQAL_NATS_CA_FILE to the CA that signed it "
                "(unset: the system's CAs), and use the name it was issued for")
    else:
        hint = ("the TLS handshake failed; an engine that verifies clients wants a certificate signed by its CA "
                "(SQAL_NATS_CERT_FILE, SQAL_NATS_KEY_FILE)")
    return NatsTlsError(f"message engine {where}: {type(exc).__name__}: {exc}: {hint}")


def url_credentials(servers: list[str]) -> tuple[str | None, str | None]:
    """(user, password) of the first server URL that carries them; several different ones are an
    error (one gateway has one identity on the engine)."""
    found = {(unquote(p.username), unquote(p.password or "")) for p in map(urlsplit, servers) if p.username}
    if len(found) > 1:
        raise ValueError("SQAL_NATS_URL: the servers carry different credentials; give the gateway's on each, "
                         "the same")
    return next(iter(found), (None, None))


def strip_credentials(url: str) -> str:
    p = urlsplit(url)
    return p._replace(netloc=p.netloc.rpartition("@")[2]).geturl()


def message_topic(stream_subject: str) -> str:
    """The MQTT topic a board published on, from the subject of its message in either stream:
    subjects.subject_to_topic(streams.message_subject(...)), with a fast path for the subjects of
    every ordinary topic (no '/' in the subject: each '.' is a level separator), which otherwise
    took a few us a message in a Python loop over the characters."""
    subject = streams.message_subject(stream_subject)
    if "/" in subject:
        return subjects.subject_to_topic(subject)
    return subject.replace(".", "/")


class NatsSource:
    def __init__(self, cfg: NatsConfig, pipeline: Pipeline) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.nc: NatsClient | None = None
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.last_error: str | None = None
        self.in_flight = 0           # fetched, not yet acknowledged
        self.redelivered = 0
        self.pulls: list[PullConsumer] = []  # one per stream, on the current connection
        self._acks: collections.deque[str] = collections.deque()  # reply subjects to acknowledge
        self._ack_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []  # the ack loop and the connection watch
        self._fetching = True
        self._closing = False
        self._lost = asyncio.Event()  # the connection was closed for good (not by us)

    # ---- lifecycle ----

    async def start(self) -> None:
        """Connect (errors that waiting does not mend, such as TLS, raise here), then run."""
        await self._connect()
        self._tasks = [asyncio.create_task(self._ack_loop(), name="nats-ack"),
                       asyncio.create_task(self._watch(), name="nats-watch")]

    async def _watch(self) -> None:
        """nats-py reconnects by itself after a lost link, but closes the connection for good on
        some errors (an authorization violation: credentials refused once during an engine's
        restart or a reload). Then a new connection is made, retried until one works."""
        pause = RETRY_PAUSE_S
        while True:
            await self._lost.wait()
            self._lost.clear()
            if self._closing:
                return
            log.warning("ingest: the message engine closed the connection (%s); connecting again", self.last_error)
            self._abandon_pulls()
            while not self._closing:
                try:
                    await self._connect()
                    pause = RETRY_PAUSE_S
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - engine away or still refusing: try again
                    await self._on_error(exc)
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 10.0)

    def _abandon_pulls(self) -> None:
        for p in self.pulls:
            p.abandon()  # what they received is still handed over; its acks go through the next connection
        self.pulls = []

    async def _on_closed(self) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if not self._closing:
            self._lost.set()

    async def _connect(self) -> None:
        cfg = self.cfg
        tls = tls_context(cfg)
        # The first connection is retried until an engine answers (one may be starting), except when
        # TLS fails: nats-py would retry that forever too, and the start would never end nor say why.
        nc = self.nc = NatsClient()
        # Credentials given once for every server: nats-py uses a URL's own only for that URL, not
        # for the servers the cluster tells it about, where it would log in as nobody (the boards'
        # user where the engine maps anonymous clients to it) and lose its JetStream rights.
        user, password = cfg.user, cfg.password
        if user is None:
            user, password = url_credentials(cfg.servers)
        refused: asyncio.Future[ssl.SSLError] = asyncio.get_running_loop().create_future()

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, ssl.SSLError) and not self.connected.is_set() and not refused.done():
                refused.set_result(exc)
            await self._on_error(exc)

        connecting = asyncio.ensure_future(nc.connect(
            [strip_credentials(u) for u in cfg.servers], user=user, password=password, tls=tls, name=cfg.name,
            max_reconnect_attempts=-1, reconnect_time_wait=1, connect_timeout=5,
            error_cb=on_error, disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed))
        waiting: list[asyncio.Future[Any]] = [connecting, refused]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            with contextlib.suppress(Exception):
                await nc.close()
            raise _tls_refusal(cfg.servers, refused.result())
        refused.cancel()
        connecting.result()
        self.connected.set()
        js = nc.jetstream()
        await streams.ensure(js, cfg.limits)

        async def recover() -> None:  # a consumer deleted (or missing): created again, as at start
            await streams.ensure(nc.jetstream(), cfg.limits, timeout=RECOVER_TIMEOUT_S)

        settings = cfg.pull or PullSettings(batch=cfg.fetch_batch)
        pulls = [PullConsumer(nc, name, streams.DURABLE, self._hand_over, self._room, settings,
                              recover=recover, on_problem=self._on_problem)
                 for name in (streams.STREAMS if self._fetching else ())]
        try:
            for p in pulls:
                await p.start()
        except BaseException:
            for p in pulls:
                p.abandon()
            raise
        self.pulls = pulls
        self.subscribed.set()
        log.info("ingest: reading the boards' messages from %s (streams %s, %s; consumer %s)",
                 ", ".join(redact(s) for s in cfg.servers), *streams.STREAMS, streams.DURABLE)

    async def stop_fetching(self) -> None:
        """No more pull requests; what arrives before the engine drops ours is still handed over,
        and what is in the pipeline still gets committed and acknowledged."""
        self._fetching = False
        pulls, self.pulls = self.pulls, []
        for p in pulls:
            await p.stop()

    async def close(self) -> None:
        """After the pipeline drained: send the last acks, then close the connection."""
        await self.stop_fetching()
        await self._flush_acks()
        self._closing = True  # from here a disconnection is ours
        self._lost.set()  # ends the watch
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self.nc is not None:
            # flush (a PING/PONG round trip: the server has every ack), then close. Not drain():
            # nats-py's drain waited for each of its pull subscriptions' queues to be marked done,
            # which its fetch did not always do, and then the stop hung for the whole drain timeout,
            # 30 s (tests/gateway/test_nats_source.py); the inbox subscriptions are drained by
            # stop_fetching.
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.connected.clear()
        self.subscribed.clear()

    # ---- connection callbacks ----

    async def _on_error(self, exc: Exception) -> None:
        self._on_problem(f"{type(exc).__name__}: {exc}")

    def _on_problem(self, why: str) -> None:
        if why != self.last_error:  # once per cause, not once per retry
            log.warning("ingest: message engine: %s", why)
        self.last_error = why

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        if not self._closing:
            log.warning("ingest: disconnected from the message engine; reconnecting")

    async def _on_reconnected(self) -> None:
        self.connected.set()
        self.last_error = None
        for p in self.pulls:
            p.reconnected()
        log.info("ingest: reconnected to the message engine (%s)", self.nc.connected_url if self.nc else "?")

    # ---- receiving ----

    def _room(self) -> int:
        """Messages this replica can still take in."""
        return self.cfg.capacity - self.in_flight

    def _hand_over(self, msgs: list[Msg]) -> None:
        received_at = datetime.now(UTC)
        envs = []
        redelivered = 0
        for m in msgs:
            payload, size, pre = m.data, len(m.data), None
            if size > codec.MAX_MESSAGE_BYTES:
                # only the head of an oversize payload is kept (for the reject row); the codec's own
                # size check, which runs first, gives the reason
                try:
                    codec.decode_sample(payload)
                except codec.ContractError as exc:
                    pre = str(exc)
                else:
                    pre = f"size: payload is {size} bytes"
                payload = truncate(payload, self.pipeline.config.payload_limit)
            if delivered_count(m.reply) > 1:
                redelivered += 1
            envs.append(Envelope("mqtt", message_topic(m.subject), payload, received_at, size=size, pre_reject=pre,
                                 done=self._done_for(m.reply)))
        self.in_flight += len(envs)
        if redelivered:
            self.redelivered += redelivered
            self.metrics.redelivered.inc(redelivered)
        self.pipeline.put(envs)

    def _done_for(self, reply: str) -> Any:
        def done(outcome: Outcome) -> None:
            self._acks.append(reply)
            self.in_flight -= 1
            for p in self.pulls:
                p.wake()
            self._ack_ready.set()

        return done

    # ---- acknowledging ----

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        """Each acknowledgement is a publish to the message's reply subject (buffered and flushed by
        the client), on the current connection: a message received on a connection since replaced
        is acknowledged through its successor."""
        acks = self._acks
        while acks:
            reply = acks.popleft()
            nc = self.nc
            try:
                if nc is None:
                    raise ConnectionError("no connection")
                await nc.publish(reply)
            except Exception as exc:  # noqa: BLE001 - connection lost: the engine redelivers it later
                await self._on_error(exc)
