# Small asyncio MQTT 3.1.1 client for the SQAL board (MicroPython >= 1.22; also runs on CPython).
#
# Why our own: micropython-lib's umqtt is blocking, and mqtt_as owns the WiFi interface and its
# own task model; the board layer already owns WiFi, so we need only the protocol part.
# The failure contract is written in docs/firmware-transport.md; the short version:
#   - QoS 1 publish() returns True only once the broker PUBACKed it. Unacked messages stay in a
#     bounded in-flight window across connection losses and are re-sent with DUP on reconnect
#     (persistent session, clean_session False), and again after `ack_timeout` on a live link.
#   - A dead broker (nothing received for 1.5 x keepalive although we ping) drops the connection.
#   - run() reconnects forever with exponential backoff + full jitter, only while the board says
#     the link (WiFi) is up and nothing holds the attempt back (e.g. TLS waiting for the clock).
#   - The network comes from the board (open_connection, the DNS cache `resolver`, `log`): the
#     client touches no global, so the emulation needs no patching (docs/firmware.md, board seam).
# Memory is bounded: `max_inflight` stored packets of at most `max_packet` bytes, a fixed list of
# subscriptions, no queues that grow with the outage length (the flash spool holds the backlog).

import asyncio
import socket

from sqalfw.backoff import Backoff
from sqalfw.link import Resolver, keep_connected, open_stream, print_log, ticks_diff, ticks_ms, wait_up


class MQTTError(Exception):
    pass


CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


def _varlen(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _mqstr(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    if len(b) > 65535:
        raise ValueError("mqtt: string of %d bytes is too long" % len(b))
    return len(b).to_bytes(2, "big") + b


def _as_bytes(payload):
    if isinstance(payload, str):
        return payload.encode()
    return bytes(payload)


def _check_topic(topic, filt):
    if not isinstance(topic, str) or not topic:
        raise ValueError("mqtt: topic must be a non-empty str, got %r" % (topic,))
    if not filt and ("+" in topic or "#" in topic):
        raise ValueError("mqtt: wildcards not allowed in a publish topic: %r" % topic)


def _nothing():
    pass


class MQTTClient:
    # in-flight entry fields (a list keeps it cheap on MicroPython)
    _PID, _PKT, _SENT_MS, _EVENT, _GEN = range(5)

    def __init__(self, client_id, server, port=1883, user=None, password=None, keepalive=60,
                 clean_session=False, will=None, birth=None, ssl=None, max_inflight=8,
                 max_packet=4096, ack_timeout=20, connect_timeout=10, backoff=None,
                 is_link_up=None, link_poll_s=1.0, stable_s=10, max_subs=8, open_connection=None,
                 resolver=None, log=None, hold=None, alternates=()):
        if not client_id or len(client_id) > 65535:
            raise ValueError("mqtt: client_id must be non-empty (persistent sessions need it)")
        if not server:
            raise ValueError("mqtt: server (host name or address) is required")
        if not 0 <= keepalive <= 65535:
            raise ValueError("mqtt: keepalive must be 0..65535 s, got %r" % (keepalive,))
        if max_inflight < 1 or max_packet < 64:
            raise ValueError("mqtt: need max_inflight >= 1 and max_packet >= 64")
        for name, msg in (("will", will), ("birth", birth)):
            if msg is not None:
                if len(msg) != 4 or msg[3] not in (0, 1):
                    raise ValueError("mqtt: %s must be (topic, payload, retain, qos 0|1)" % name)
                _check_topic(msg[0], False)
        self.client_id = client_id
        self.server = server
        self.port = int(port)
        # Failover: the other nodes of the broker's cluster, (host, port), same credentials. A
        # failed connection attempt moves to the next one, round the list; a working one is kept.
        # The session (subscriptions, queued QoS 1 messages) is the cluster's, so it follows.
        self.servers = [(server, self.port)] + [(h, int(p)) for h, p in alternates]
        self._server_i = 0
        self.user = user
        self.password = password
        self.keepalive = int(keepalive)
        self.clean_session = clean_session
        self.will = will
        self.birth = birth
        # Called (no arguments) right before each CONNECT: lets the app give the will and the birth of
        # this connection a matching identity (see docs/contract.md, status ordering).
        self.on_connecting = _nothing
        self.ssl = ssl
        self.max_inflight = max_inflight
        self.max_packet = max_packet
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.backoff = backoff if backoff is not None else Backoff(1.0, 60.0)
        self.is_link_up = is_link_up
        self.link_poll_s = link_poll_s
        self.stable_s = stable_s
        self.max_subs = max_subs
        # the board seam: connections, DNS (cached) and the serial log come from the board; the
        # defaults are for tools and tests that run the client alone
        self.log = log or print_log
        self.open_connection = open_connection or asyncio.open_connection
        self.resolver = resolver or Resolver(socket.getaddrinfo, self.log)
        self.hold = hold  # callable: why no connection may be attempted now (None: go ahead)

        self._cb = None
        self._reader = None
        self._writer = None
        self._rtask = None
        self._ktask = None
        self._gen = 0  # connection generation: which connection an entry was last sent on
        self._up = False
        self._running = False
        self._wlock = asyncio.Lock()
        self._upev = asyncio.Event()
        self._down = asyncio.Event()
        self._slot = asyncio.Event()
        self._subev = asyncio.Event()
        self._inflight = []  # oldest first, at most max_inflight entries
        self._subs = []  # [topic, qos, granted or None]
        self._sub_pid = 0
        self._birth_pid = 0
        self._pid = 0
        self._last_rx = self._last_tx = self._last_ping = ticks_ms()
        self.last_error = None
        self.session_present = False
        # counters (telemetry)
        self.sent = 0
        self.acked = 0
        self.retransmitted = 0
        self.connects = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.disconnects = 0
        self.ping_timeouts = 0
        self.pings = 0
        self.pongs = 0
        self.received = 0
        self.oversize = 0
        self.callback_errors = 0

    # ---- public API ----

    def set_callback(self, cb):
        # cb(topic: str, payload: bytes); may be a plain function or an async function
        self._cb = cb

    def isconnected(self):
        return self._up

    def counters(self):
        return {
            "sent": self.sent, "acked": self.acked, "retransmitted": self.retransmitted,
            "connects": self.connects, "reconnects": self.reconnects,
            "connect_failures": self.connect_failures, "disconnects": self.disconnects,
            "ping_timeouts": self.ping_timeouts, "pings": self.pings, "pongs": self.pongs,
            "received": self.received, "oversize": self.oversize,
            "callback_errors": self.callback_errors, "inflight": len(self._inflight),
        }

    async def wait_connected(self, timeout=None):
        return await wait_up(self, timeout)

    def subscribe(self, topic, qos=1):
        # Recorded and (re)sent on every connect; sent now too when connected.
        _check_topic(topic, True)
        if qos not in (0, 1):
            raise ValueError("mqtt: subscribe qos must be 0 or 1, got %r" % (qos,))
        for s in self._subs:
            if s[0] == topic:
                s[1] = qos
                break
        else:
            if len(self._subs) >= self.max_subs:
                raise ValueError("mqtt: more than max_subs=%d subscriptions" % self.max_subs)
            self._subs.append([topic, qos, None])
        self._subev.clear()
        if self._up:
            asyncio.create_task(self._send_subs_safe())

    async def wait_subscribed(self, timeout=None):
        # True once every recorded subscription was SUBACKed on the current connection
        try:
            if timeout is None:
                await self._subev.wait()
            else:
                await asyncio.wait_for(self._subev.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def publish(self, topic, payload, qos=1, retain=False, timeout=None):
        # QoS 1: True once PUBACKed (waits through reconnects); False if `timeout` s passed first,
        # in which case the message is withdrawn (keep it in the spool and try again later).
        # QoS 0: True if written to a live connection, False if not connected.
        _check_topic(topic, False)
        if qos not in (0, 1):
            raise ValueError("mqtt: publish qos must be 0 or 1, got %r" % (qos,))
        pkt = self._publish_packet(topic, _as_bytes(payload), qos, retain)
        if qos == 0:
            if not self._up:
                return False
            try:
                await self._send(pkt)
            except OSError as ex:
                self._drop("send failed: %r" % (ex,))
                return False
            self.sent += 1
            return True
        if timeout is None:
            return await self._publish1(pkt)
        try:
            return await asyncio.wait_for(self._publish1(pkt), timeout)
        except asyncio.TimeoutError:
            return False

    def _next_server(self):
        if len(self.servers) > 1:
            self._server_i = (self._server_i + 1) % len(self.servers)
            self.server, self.port = self.servers[self._server_i]
            self.log("mqtt: trying the next broker, %s:%d" % (self.server, self.port))

    async def connect(self):
        # One connection attempt (DNS through the cache, TCP, optional TLS, CONNECT/CONNACK).
        # Raises OSError, MQTTError or asyncio.TimeoutError with a message naming the step that failed.
        if self._writer is not None:
            return self.session_present
        try:
            r, w = await open_stream(self.open_connection, self.resolver, self.server, self.port, self.ssl,
                                     self.connect_timeout)
        except BaseException:
            self._next_server()
            raise
        self.on_connecting()
        try:
            w.write(self._connect_packet())
            await w.drain()
            hdr = await asyncio.wait_for(r.readexactly(4), self.connect_timeout)
            if hdr[0] != 0x20 or hdr[1] != 2:
                raise MQTTError("mqtt: expected CONNACK, got packet type 0x%02x" % hdr[0])
            if hdr[3]:
                raise MQTTError("mqtt: broker refused connection: rc=%d (%s)"
                                % (hdr[3], CONNACK_REASONS.get(hdr[3], "unknown")))
        except BaseException:
            w.close()
            self._next_server()
            raise
        self.session_present = bool(hdr[2] & 1)
        self._gen += 1
        gen = self._gen
        self._reader, self._writer = r, w
        now = ticks_ms()
        self._last_rx = self._last_tx = self._last_ping = now
        self._down.clear()
        if self.connects:
            self.reconnects += 1
        self.connects += 1
        self._rtask = asyncio.create_task(self._read_loop(r, gen))
        self._ktask = asyncio.create_task(self._keepalive_loop(gen))
        try:
            await self._resend(gen)
            if self._subs:
                await self._send_subs()
            if self.birth is not None:
                t, p, ret, q = self.birth
                # not tracked: the birth is re-published on every connect anyway. Its pid stays
                # reserved until PUBACKed so it cannot ack someone else's message.
                self._birth_pid = 0
                pid = self._next_pid() if q else 0
                self._birth_pid = pid
                await self._send(self._publish_packet(t, _as_bytes(p), q, ret, pid))
        except OSError as ex:
            self._drop("connect: send failed: %r" % (ex,))
            raise
        if gen == self._gen and self._writer is not None:
            self._up = True
            self._upev.set()
        return self.session_present

    async def run(self):
        # Supervision loop (shared with the WebSocket transport): connect, wait for the connection
        # to drop, back off, repeat.
        await keep_connected(self)

    async def disconnect(self):
        # Graceful: publish the will ourselves (a clean DISCONNECT cancels it), then DISCONNECT.
        self._running = False
        if self._writer is not None:
            try:
                if self.will is not None and self.will[2]:
                    t, p = self.will[0], self.will[1]
                    await self._send(self._publish_packet(t, _as_bytes(p), 0, True))
                await self._send(b"\xe0\x00")
            except OSError:
                pass
            self._drop("disconnect requested")
        self._down.set()

    # ---- packets ----

    def _connect_packet(self):
        flags = 0 if not self.clean_session else 0x02
        body = bytearray(b"\x00\x04MQTT\x04\x00")
        body += self.keepalive.to_bytes(2, "big")
        body += _mqstr(self.client_id)
        if self.will is not None:
            t, p, ret, q = self.will
            flags |= 0x04 | (q << 3) | (0x20 if ret else 0)
            body += _mqstr(t)
            body += _mqstr(_as_bytes(p))
        if self.user is not None:
            flags |= 0x80
            body += _mqstr(self.user)
            if self.password is not None:
                flags |= 0x40
                body += _mqstr(self.password)
        body[7] = flags
        return b"\x10" + _varlen(len(body)) + body

    def _publish_packet(self, topic, payload, qos, retain, pid=0):
        t = _mqstr(topic)
        n = len(t) + len(payload) + (2 if qos else 0)
        pkt = bytearray()
        pkt.append(0x30 | (qos << 1) | (1 if retain else 0))
        pkt += _varlen(n)
        if len(pkt) + n > self.max_packet:
            raise ValueError("mqtt: message of %d bytes exceeds max_packet=%d (topic %s)"
                             % (len(pkt) + n, self.max_packet, topic))
        pkt += t
        if qos:
            pkt += pid.to_bytes(2, "big")
        pkt += payload
        return pkt

    def _next_pid(self):
        used = [e[0] for e in self._inflight]
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in used and self._pid != self._sub_pid and self._pid != self._birth_pid:
                return self._pid

    # ---- internals ----

    async def _send(self, pkt):
        w = self._writer
        if w is None:
            raise OSError("mqtt: not connected")
        async with self._wlock:
            w.write(pkt)
            await w.drain()
        self._last_tx = ticks_ms()

    async def _transmit(self, e):
        # first transmission or a retransmission (DUP set); a send error drops the connection
        # and leaves the entry in flight for the next connection
        if e[2] is not None:
            e[1][0] |= 0x08
            self.retransmitted += 1
        else:
            self.sent += 1
        e[2] = ticks_ms()
        e[4] = self._gen
        try:
            await self._send(e[1])
        except OSError as ex:
            self._drop("send failed: %r" % (ex,))

    async def _publish1(self, pkt):
        while len(self._inflight) >= self.max_inflight:
            self._slot.clear()
            await self._slot.wait()
        pid = self._next_pid()
        # pid sits right after the topic in the variable header
        i = 1
        while pkt[i] & 0x80:
            i += 1
        i += 1
        tlen = (pkt[i] << 8) | pkt[i + 1]
        i += 2 + tlen
        pkt[i] = pid >> 8
        pkt[i + 1] = pid & 0xFF
        e = [pid, pkt, None, asyncio.Event(), 0]
        self._inflight.append(e)
        try:
            if self._up:
                await self._transmit(e)
            await e[3].wait()
            return True
        finally:
            # acked entries are already gone; a cancelled/timed-out one is withdrawn here
            if e in self._inflight:
                self._inflight.remove(e)
                self._slot.set()

    async def _resend(self, gen):
        # after (re)connect: everything unacked, oldest first; new publishes wait for _up
        while self._writer is not None and gen == self._gen:
            for e in self._inflight:
                if e[4] != gen:
                    break
            else:
                return
            await self._transmit(e)

    async def _send_subs(self):
        body = bytearray()
        self._subev.clear()
        self._sub_pid = 0
        self._sub_pid = self._next_pid()
        body += self._sub_pid.to_bytes(2, "big")
        for s in self._subs:
            s[2] = None
            body += _mqstr(s[0])
            body.append(s[1])
        await self._send(b"\x82" + _varlen(len(body)) + body)

    async def _send_subs_safe(self):
        try:
            await self._send_subs()
        except OSError as ex:
            self._drop("subscribe send failed: %r" % (ex,))

    def _drop(self, reason):
        if self._writer is None:
            return
        self.last_error = reason
        self._up = False
        self._upev.clear()
        w = self._writer
        self._writer = None
        self._reader = None
        self.disconnects += 1
        try:
            w.close()
        except Exception:
            pass
        cur = asyncio.current_task()
        for t in (self._rtask, self._ktask):
            if t is not None and t is not cur:
                t.cancel()
        self._rtask = self._ktask = None
        self._down.set()
        self._slot.set()

    async def _read_loop(self, r, gen):
        try:
            while True:
                b0 = (await r.readexactly(1))[0]
                n = 0
                shift = 0
                while True:
                    b = (await r.readexactly(1))[0]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                    if shift > 21:
                        raise MQTTError("mqtt: malformed remaining length")
                if n > self.max_packet:
                    await self._skip_oversize(r, b0, n)
                else:
                    body = await r.readexactly(n) if n else b""
                    self._last_rx = ticks_ms()
                    await self._handle(b0, body)
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            if gen == self._gen:
                self._drop("read: %r" % (ex,))

    async def _skip_oversize(self, r, b0, n):
        # Bounded memory: discard a too-big packet in small chunks. A QoS 1 PUBLISH is still
        # PUBACKed, otherwise a persistent session would redeliver it forever.
        if b0 >> 4 != 3:
            raise MQTTError("mqtt: %d-byte packet type %d exceeds max_packet" % (n, b0 >> 4))
        self.oversize += 1
        qos = (b0 >> 1) & 3
        tl = await r.readexactly(2)
        skip = (tl[0] << 8) | tl[1]
        n -= 2
        while skip:
            k = skip if skip < 128 else 128
            await r.readexactly(k)
            skip -= k
            n -= k
        pid = None
        if qos:
            p = await r.readexactly(2)
            pid = p
            n -= 2
        while n:
            k = n if n < 128 else 128
            await r.readexactly(k)
            n -= k
        self._last_rx = ticks_ms()
        if pid is not None:
            await self._send(b"\x40\x02" + pid)

    async def _handle(self, b0, body):
        kind = b0 >> 4
        if kind == 3:  # PUBLISH
            qos = (b0 >> 1) & 3
            if qos == 2:
                raise MQTTError("mqtt: QoS 2 PUBLISH received (we subscribe at QoS <= 1)")
            tlen = (body[0] << 8) | body[1]
            topic = bytes(body[2:2 + tlen]).decode()
            i = 2 + tlen
            pid = None
            if qos:
                pid = bytes(body[i:i + 2])
                i += 2
            self.received += 1
            if self._cb is not None:
                try:
                    res = self._cb(topic, bytes(body[i:]))
                    if hasattr(res, "send"):
                        await res
                except Exception as ex:
                    # the app's bug must not kill the link; the message counts as delivered
                    self.callback_errors += 1
                    self.last_error = "callback: %r" % (ex,)
                    self.log("mqtt: message on %s not handled: %r" % (topic, ex))
            if pid is not None:
                await self._send(b"\x40\x02" + pid)
        elif kind == 4:  # PUBACK
            pid = (body[0] << 8) | body[1]
            if pid == self._birth_pid:
                self._birth_pid = 0
            for e in self._inflight:
                if e[0] == pid:
                    self._inflight.remove(e)
                    self.acked += 1
                    e[3].set()
                    self._slot.set()
                    break
        elif kind == 9:  # SUBACK
            pid = (body[0] << 8) | body[1]
            if pid == self._sub_pid:
                codes = body[2:]
                for s, c in zip(self._subs, codes):
                    s[2] = c
                    if c == 0x80:
                        self.last_error = "mqtt: subscription to %s refused" % s[0]
                self._sub_pid = 0
                self._subev.set()
        elif kind == 13:  # PINGRESP
            self.pongs += 1
        else:
            raise MQTTError("mqtt: unexpected packet type %d" % kind)

    async def _keepalive_loop(self, gen):
        ka = self.keepalive * 1000
        # an eighth of the keepalive (1 s up to 8 s, 3.75 s at 30 s; a quarter below 4 s): a ping
        # still goes out well before the broker's 1.5 x keepalive, and every wake-up costs CPU
        tick = 1.0
        if self.keepalive and self.keepalive < 4:
            tick = self.keepalive / 4
        elif self.keepalive > 8:
            tick = min(4.0, self.keepalive / 8)
        try:
            while gen == self._gen and self._writer is not None:
                await asyncio.sleep(tick)
                now = ticks_ms()
                if ka:
                    if ticks_diff(now, self._last_rx) > ka * 3 // 2:
                        self.ping_timeouts += 1
                        self._drop("no traffic from broker for %d ms (keepalive %d s)"
                                   % (ticks_diff(now, self._last_rx), self.keepalive))
                        return
                    idle = ticks_diff(now, self._last_rx) >= ka // 2 or ticks_diff(now, self._last_tx) >= ka // 2
                    if idle and ticks_diff(now, self._last_ping) >= ka // 2:
                        self._last_ping = now
                        self.pings += 1
                        await self._send(b"\xc0\x00")
                if self.ack_timeout:
                    for e in self._inflight:
                        if e[4] == gen and e[2] is not None and ticks_diff(now, e[2]) > self.ack_timeout * 1000:
                            await self._transmit(e)
                            break  # the list may change while we await; one per tick is plenty
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            if gen == self._gen:
                self._drop("keepalive: %r" % (ex,))
