"""MQTT source: paho-mqtt 2.x in its own network thread, acknowledging each message only once it
is committed.

- Persistent session: `clean_session=False` with a stable client id, so QoS 1 readings published
  while the gateway is down are queued by the broker and delivered when it comes back.
- `manual_ack=True`: paho does not PUBACK by itself. The pipeline calls back after COMMIT and the
  PUBACK goes out then, in receive order (MQTT 3.1.1 section 4.6).
- Acks belong to a connection: message ids are per connection, so an ack for a message received on
  a connection that has since dropped is NOT sent (it could acknowledge another message with the
  same id on the new connection). The broker redelivers such a message; the dedupe key absorbs it.
  A generation counter, bumped under a lock on every connect and disconnect, tells them apart.
- Backpressure: the paho thread takes a pipeline slot before handing a message over and blocks
  when there is none; the socket is then not read, TCP fills, the broker keeps the rest queued.
  While blocked paho sends no PINGREQ: a block longer than 1.5 x keepalive makes the broker drop the
  connection; unacked messages are then redelivered on reconnect (no loss, duplicates absorbed).
- Acks go out per batch: `done` only queues the message id; after the batch's answers (a pipeline
  listener) all of them go to paho as ONE outgoing buffer of PUBACK packets, in receive order. paho's
  public `ack()` wakes its network thread through a socket pair and writes one packet per call: two
  system calls and a thread wake-up per message.
  If this paho lacks the internal hook (`_packet_queue`), acks fall back to `ack()` one by one.
- Reads are buffered (`_Client`): paho reads each packet with three or four recv() calls (command
  byte, each length byte, body) and one select() per packet; here one recv() takes what the socket
  has (up to 64 KiB, about 100 readings) and the packets in it are handled in one go (the paho
  thread's CPU went from 0.09 to 0.03-0.07 ms a reading; docs/ingest.md, "Benchmark").
- Shared subscriptions: with `shared_group`, every filter is prefixed `$share/<group>/`.
- TLS (`mqtts://`): the broker's certificate and host name are checked against `ca_file` or the
  system's CAs (`tls_context`); a failed connect is logged once per cause and kept in `last_error`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import struct
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho

from gateway.ingest.envelope import Envelope, Outcome
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.rejects import truncate
from sqalfw import codec

log = logging.getLogger(__name__)

KINDS = ("sample", "status", "telemetry", "cmd/result")


class MqttUrlError(ValueError):
    pass


_RECV_CHUNK = 65536


class _Client(paho.Client):
    """paho's client with buffered socket reads (paho 2.x internals: `_sock_recv`, `loop_read`).

    Each `loop_read` (paho calls it when select() says the socket is readable) takes ONE chunk of
    what the socket has, handles every packet in it, and completes a packet cut at the chunk's end
    with exact reads as paho does; it then returns to paho's loop (writes, keepalive, select) with
    nothing left buffered, so select() never sleeps on bytes already read. The buffer belongs to
    one socket: bytes of a dropped connection are never served to the next (paho replaces `_sock`
    on reconnect). Backpressure still reaches the broker: while `on_message` blocks, nothing is read."""

    _rsock: Any = None
    last_connect_error: BaseException | None = None  # why the last (re)connect failed (paho drops it)
    _rbuf: bytes = b""
    _rpos: int = 0
    _rfill = False  # a chunk may be read (once per loop_read)
    chunk_reads = 0  # chunks read (tests check reads are buffered)

    def reconnect(self) -> paho.MQTTErrorCode:
        # paho's network thread catches a failed connect (refused, unreachable, a TLS certificate
        # not trusted) and only calls on_connect_fail, without the exception: keep it for the log.
        try:
            rc = super().reconnect()
        except Exception as exc:
            self.last_connect_error = exc
            raise
        self.last_connect_error = None
        return rc

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rsock is not self._sock:  # a new connection (or none): drop what the old one left
            self._rsock, self._rbuf, self._rpos = self._sock, b"", 0
        if self._rpos >= len(self._rbuf):
            if not self._rfill:
                return super()._sock_recv(bufsize)
            self._rfill = False
            data = super()._sock_recv(_RECV_CHUNK)  # raises BlockingIOError when there is nothing
            if isinstance(self._sock, ssl.SSLSocket):
                data = self._more_records(data)
            self.chunk_reads += 1
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = end = min(len(self._rbuf), start + bufsize)
        return self._rbuf[start:end]

    def _more_records(self, data: bytes) -> bytes:
        """TLS: one recv() gives one TLS record's bytes, and a broker sends each packet as its own
        record: read on (the socket is non-blocking) until nothing is left or the chunk is full, so
        a chunk holds many packets as it does over TCP."""
        parts, n = [data], len(data)
        while data and n < _RECV_CHUNK:
            try:
                data = super()._sock_recv(_RECV_CHUNK - n)
            except BlockingIOError:
                break
            parts.append(data)  # b"" at EOF: the next read reports it
            n += len(data)
        return b"".join(parts)

    # Receiver of the QoS 1 PUBLISH packets `_fast_publishes` takes: [(topic bytes, packet id, payload)].
    on_publishes: Callable[[list[tuple[bytes, int, bytes]]], None] | None = None
    fast_publishes = 0  # packets taken by the fast path (tests check it is used)

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        # paho reads the chunk and handles its first packet; the QoS 1 PUBLISH packets that follow
        # whole in the chunk go to `on_publishes` in one call; any other packet (CONNACK, SUBACK,
        # PINGRESP, QoS 0 or 2, MQTT 5, a packet cut at the chunk's end, a malformed one) is paho's.
        self._rfill = True
        try:
            rc = super().loop_read(max_packets)
            while rc == paho.MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None \
                    and self._rsock is self._sock and self._rpos < len(self._rbuf):
                if not self._fast_publishes():
                    rc = super().loop_read(max_packets)
        finally:
            self._rfill = False
        return rc

    def _fast_publishes(self) -> int:
        """Take the whole QoS 1 PUBLISH packets (MQTT 3.1/3.1.1 section 3.3) at the head of the
        buffer; returns how many. paho's own path costs about 40 us a packet (decode_publish, an
        MQTTMessage with its Condition, the topic matcher, three mutexes, a debug log call); here a
        few slices. Stops at anything else, leaving it to paho, which then reports protocol errors."""
        receiver = self.on_publishes
        if receiver is None or self._protocol == paho.MQTTv5 or self._in_packet["command"] != 0:
            return 0
        buf, pos, end = self._rbuf, self._rpos, len(self._rbuf)
        out: list[tuple[bytes, int, bytes]] = []
        while pos < end and buf[pos] & 0xF6 == 0x32:  # PUBLISH, QoS 1, any DUP and RETAIN
            i, length, shift, whole = pos + 1, 0, 0, False
            while i < end and shift <= 21:  # remaining length: 1 to 4 bytes, 7 bits each, low first
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    whole = True
                    break
            if not whole or i + length > end or length < 4:
                break  # cut at the chunk's end (paho completes it) or malformed (paho says so)
            topic_len = buf[i] << 8 | buf[i + 1]
            if topic_len + 4 > length:
                break
            t_end = i + 2 + topic_len
            out.append((buf[i + 2:t_end], buf[t_end] << 8 | buf[t_end + 1], buf[t_end + 2:i + length]))
            pos = i + length
        if not out:
            return 0
        self._rpos = pos
        self.fast_publishes += len(out)
        with self._msgtime_mutex:  # what paho's packet read does for each packet (keepalive)
            self._last_bytes_received = paho.time_func()
        receiver(out)
        return len(out)


@dataclass(frozen=True)
class MqttConfig:
    url: str  # mqtt://[user:password@]host[:port]  or mqtts://... (TLS)
    client_id: str = "sqal-gateway"
    shared_group: str | None = None
    keepalive: int = 30
    # The gateway's own broker login when the URL carries none (the embedded broker with device
    # authentication, or Mosquitto with the generated files: CredentialStore.gateway_credentials()).
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line
    # mqtts://: the CA bundle that signed the broker's certificate (unset: the system's CAs), and a
    # client certificate and key for brokers that authenticate clients by certificate
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def filters(self) -> list[str]:
        prefix = f"$share/{self.shared_group}/" if self.shared_group else ""
        return [f"{prefix}sqal/v1/+/{k}" for k in KINDS]


def parse_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """-> (host, port, tls, username, password)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
        raise MqttUrlError(f"MQTT URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise MqttUrlError(f"MQTT URL {url!r}: no host")
    tls = parts.scheme in ("mqtts", "ssl")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise MqttUrlError(f"MQTT URL {url!r}: bad port") from exc
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return parts.hostname, port, tls, user, password


class MqttTlsError(ValueError):
    pass


def tls_context(ca_file: str | None = None, cert_file: str | None = None,
                key_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name: against `ca_file`
    (a PEM bundle, for a private CA) or the system's CAs; with a client certificate when `cert_file`
    is set (`key_file`: its key, when not in the same file). A file that cannot be used is an error
    naming it, at start, not a silent failure to connect later."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise MqttTlsError(f"MQTT TLS: cannot load the CA file {ca_file!r} (SQAL_MQTT_CA_FILE): {exc}") from exc
    if cert_file is not None:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttTlsError(f"MQTT TLS: cannot load the client certificate {cert_file!r} / key {key_file!r} "
                               f"(SQAL_MQTT_CERT_FILE, SQAL_MQTT_KEY_FILE): {exc}") from exc
    elif key_file is not None:
        raise MqttTlsError("MQTT TLS: SQAL_MQTT_KEY_FILE is set without SQAL_MQTT_CERT_FILE")
    return ctx


def apply_tls(client: paho.Client, url: str, tls: bool, ca_file: str | None, cert_file: str | None,
              key_file: str | None) -> None:
    """TLS on `client` for an mqtts:// URL; TLS files given for a plain mqtt:// URL are an error
    (the connection would silently go unencrypted)."""
    if tls:
        client.tls_set_context(tls_context(ca_file, cert_file, key_file))
    elif ca_file or cert_file or key_file:
        raise MqttTlsError(f"MQTT TLS files are set but the broker URL {redact(url)!r} is not mqtts://")


def tls_files(settings: Any) -> dict[str, str | None]:
    """ca_file, cert_file and key_file from the gateway settings (SQAL_MQTT_CA_FILE, ...), as the
    MQTT clients take them."""
    out: dict[str, str | None] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        v = getattr(settings, f"mqtt_{name}", None)
        out[name] = str(v) if v else None
    return out


def redact(url: str) -> str:
    """The URL without its password (for logs and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"{parts.username}:***@{netloc}").geturl()


class MqttSource:
    def __init__(self, config: MqttConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.metrics = pipeline.metrics
        self.host, self.port, tls, user, password = parse_url(config.url)
        self._lock = threading.Lock()
        self._gen = 0
        self._stopping = threading.Event()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connects = 0
        self._acks: list[tuple[int, int]] = []  # (generation, mid) of committed QoS 1 messages, not yet sent
        self.ack_writes = 0  # batched PUBACK buffers handed to paho (tests check the batch path is used)
        # paho 2.x internal: queue one prepared buffer for the network thread (one wake-up, one write).
        self._queue_packet = getattr(paho.Client, "_packet_queue", None)
        pipeline.add_listener(self._flush_acks)
        c = self.client = _Client(paho.CallbackAPIVersion.VERSION2, client_id=config.client_id,
                                      clean_session=False, manual_ack=True)
        if user is None and config.username is not None:
            user, password = config.username, config.password
        if user is not None:
            c.username_pw_set(user, password)
        apply_tls(c, config.url, tls, config.ca_file, config.cert_file, config.key_file)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        self.last_error: str | None = None  # why the broker connection is down, for the status page
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_publishes = self._on_publishes

    # ---- lifecycle (event loop side) ----

    async def start(self, wait_s: float = 0.0) -> None:
        """Connect in the background (paho retries until the broker answers); optionally wait for the
        subscription to be acknowledged."""
        self.client.connect_async(self.host, self.port, keepalive=self.config.keepalive)
        self.client.loop_start()
        if wait_s > 0:
            ok = await asyncio.to_thread(self.subscribed.wait, wait_s)
            if not ok:
                log.warning("MQTT: not subscribed after %.1fs on %s:%d (still trying)", wait_s, self.host, self.port)

    async def stop(self, drain_s: float = 10.0) -> None:
        """Stop handing messages in (those not handed in stay unacked: the broker redelivers them),
        let the pipeline commit and acknowledge what it has, then disconnect."""
        self._stopping.set()
        await self.pipeline.drain(drain_s)
        with self._lock:
            self._gen += 1
        self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)

    # ---- paho thread callbacks ----

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        exc = self.client.last_connect_error
        why = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"
        if isinstance(exc, ssl.SSLCertVerificationError):
            why += " (a broker certificate from a private CA needs SQAL_MQTT_CA_FILE)"
        if why != self.last_error:  # once per cause, not once per retry
            log.warning("MQTT connect to %s:%d failed: %s; retrying", self.host, self.port, why)
        self.last_error = why

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        if rc.is_failure:
            why = f"refused by the broker: {rc}"
            if why != self.last_error:
                log.warning("MQTT connect to %s:%d %s", self.host, self.port, why)
            self.last_error = why
            return
        self.last_error = None
        with self._lock:
            self._gen += 1
        self.connects += 1
        self.connected.set()
        log.info("MQTT connected to %s:%d as %s (session present: %s)", self.host, self.port,
                 self.config.client_id, getattr(flags, "session_present", "?"))
        client.subscribe([(f, 1) for f in self.config.filters()])

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        bad = [rc for rc in rcs if rc.is_failure]
        if bad:
            log.error("MQTT subscription refused by the broker: %s (filters %s)", bad, self.config.filters())
        else:
            self.subscribed.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        with self._lock:
            self._gen += 1
        self.connected.clear()
        if not self._stopping.is_set():
            self.last_error = f"disconnected: {rc}"
            log.warning("MQTT disconnected from %s:%d (%s); reconnecting", self.host, self.port, rc)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        """paho's path: the first packet of each chunk read, and any packet the fast path leaves."""
        self._take([(msg._topic, msg.mid, bytes(msg.payload))], msg.qos)

    def _on_publishes(self, msgs: list[tuple[bytes, int, bytes]]) -> None:
        """The client's fast path: the QoS 1 PUBLISH packets of a chunk, in order."""
        self._take(msgs, 1)

    def _take(self, msgs: list[tuple[bytes, int, bytes]], qos: int) -> None:
        """Hand messages (topic bytes, packet id, payload) to the pipeline, in order, once it has a slot
        for each; blocks while it has none (backpressure: the socket is not read, nothing dropped).
        Stopping drops what is not handed in yet: never acknowledged, so the broker redelivers it."""
        if self._stopping.is_set():
            return
        gen = self._gen
        received_at = datetime.now(timezone.utc)
        envs = []
        for topic_b, mid, payload in msgs:
            try:
                topic = topic_b.decode()
            except UnicodeDecodeError:
                topic = repr(topic_b)[:256]
            size = len(payload)
            pre = None
            if size > codec.MAX_MESSAGE_BYTES:
                # Keep only the head of an oversize payload: a 1 MB message must not sit in the queue.
                try:  # the codec's own size check (it runs first, O(1)) gives the reason
                    codec.decode_sample(payload)
                except codec.ContractError as exc:
                    pre = str(exc)
                else:  # unreachable while every kind shares the 1 KiB limit
                    pre = "size: payload is %d bytes" % size
                payload = truncate(payload, self.pipeline.config.payload_limit)
            envs.append(Envelope("mqtt", topic, payload, received_at, size=size, pre_reject=pre,
                                 done=functools.partial(self._ack, gen, mid, qos)))
        slots, i = self.pipeline.slot_mqtt, 0
        while i < len(envs):
            k = slots.take(len(envs) - i, timeout=0.5)
            if k == 0:
                if self._stopping.is_set():
                    return
                continue
            self.pipeline.put_threadsafe(envs[i:i + k])
            i += k

    # ---- event loop side ----

    def _ack(self, gen: int, mid: int, qos: int, outcome: Outcome) -> None:
        """After COMMIT, in receive order: queue the PUBACK; `_flush_acks` sends the batch's acks."""
        if qos == 0:
            return
        if qos == 1:
            self._acks.append((gen, mid))
            return
        with self._lock:  # QoS 2 is never subscribed to; kept correct anyway, one at a time
            if gen != self._gen:
                self.metrics.acks_skipped.inc()
                return
            self.client.ack(mid, qos)

    def _flush_acks(self, items: Any = None, outcomes: Any = None) -> None:
        """Pipeline listener (after each batch's answers): send the queued PUBACKs of the current
        connection, in order; those of a connection that has since dropped are skipped (the broker
        redelivers them). Under the lock, so a reconnect cannot come between the check and the send."""
        acks, self._acks = self._acks, []
        if not acks:
            return
        with self._lock:
            gen = self._gen
            mids = [mid for g, mid in acks if g == gen]
            if len(mids) < len(acks):
                self.metrics.acks_skipped.inc(len(acks) - len(mids))
            if not mids:
                return
            if self._queue_packet is None:
                for mid in mids:
                    self.client.ack(mid, 1)
                return
            # PUBACK (MQTT 3.1.1 section 3.4; also valid in 5.0 with the reason code left out): 0x40,
            # remaining length 2, packet id. The same bytes paho's own ack() queues, concatenated.
            buf = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
            self._queue_packet(self.client, paho.PUBACK, buf, 0, 1)
            self.ack_writes += 1


_PUBACK = struct.Struct("!BBH")
