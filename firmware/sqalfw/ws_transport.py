# The WebSocket transport: the alternative to MQTT, straight to the gateway's /ws/sensors/{id}
# (docs/contract.md section 8; failure semantics in docs/firmware-transport.md).
#
# It offers the part of MQTTClient's interface the app uses (run, publish, isconnected, disconnect,
# counters, birth/will attributes), so the app's drain, telemetry and supervisor run unchanged:
#   publish(<id>/sample, rec)     -> {"type":"sensor_data","data":rec}; True once the gateway
#                                    answered "saved"/"duplicate" (stored), or an "error" (rejected
#                                    for good: counted, logged, and popped -- see rejected below)
#   publish(<id>/telemetry, t)    -> {"type":"heartbeat","rejected":n,"telemetry":t} (fire and forget)
#   publish(anything else)        -> True, nothing sent: status and command results have no
#                                    WebSocket message (commands are MQTT-only)
# The gateway answers every message with exactly one message, in order, so answers are matched to
# requests first-in first-out.
import asyncio
import json

from sqalfw import wsclient
from sqalfw.backoff import Backoff
from sqalfw.link import Resolver, keep_connected, print_log, ticks_diff, ticks_ms, wait_up
from sqalfw.urls import parse_ws_url

MAX_ABANDONED = 3  # requests that timed out while still awaiting their answer; more = dead link
SAMPLE_PREFIX = b'{"type":"sensor_data","data":'


def device_path(path, device_id):
    # ws_url may name the endpoint (".../ws/sensors/") or the device's own path; "" or "/" means
    # the gateway's default endpoint
    if path in ("", "/"):
        return "/ws/sensors/" + device_id
    if path.endswith("/"):
        return path + device_id
    return path


class WSTransport:
    def __init__(self, url, device_id, boot, fw, keepalive=30, ssl=None, backoff=None, is_link_up=None,
                 connect_timeout=10, link_poll_s=1.0, stable_s=10, max_frame=4096, user=None, password=None,
                 open_connection=None, resolver=None, log=None, hold=None):
        _tls, host, port, path, u, p = parse_ws_url(url)  # TLS is the ssl context the app gives
        # credentials for the gateway's device authentication: from the URL, else as given
        self.user, self.password = (u, p) if u is not None else (user, password)
        self.url = url
        self.server = host
        self.port = port
        self.path = device_path(path, device_id)
        self.device_id = device_id
        self.boot = boot
        self.fw = fw
        self.keepalive = int(keepalive)
        self.ssl = ssl
        self.backoff = backoff if backoff is not None else Backoff(1.0, 60.0)
        self.is_link_up = is_link_up
        self.connect_timeout = connect_timeout
        self.link_poll_s = link_poll_s
        self.stable_s = stable_s
        self.max_frame = max_frame
        # the board seam, as for MQTTClient: connections, DNS (cached) and the serial log
        self.log = log or print_log
        self.open_connection = open_connection or asyncio.open_connection
        if resolver is None:
            import socket
            resolver = Resolver(socket.getaddrinfo, self.log)
        self.resolver = resolver
        self.hold = hold  # callable: why no connection may be attempted now (None: go ahead)
        # MQTT-only, kept so that the app may set them: (topic, payload, retain, qos) or None
        self.will = None  # type: tuple | None
        self.birth = None  # type: tuple | None
        self._ws = None
        self._gen = 0
        self._up = False
        self._running = False
        self._upev = asyncio.Event()
        self._down = asyncio.Event()
        self._pending = []   # FIFO of [event or None, answer, abandoned]
        self._abandoned = 0
        self._rtask = None
        self._ktask = None
        self._last_rx = self._last_ping = ticks_ms()
        self._unacked = None  # the last sample sent and not yet answered (retransmit counter)
        self.last_error = None
        self.last_reject = None
        # counters (same names as MQTTClient where the meaning is the same)
        self.sent = 0            # samples sent (first transmissions)
        self.acked = 0           # samples answered saved or duplicate
        self.duplicates = 0      # of which duplicate
        self.rejected = 0        # samples answered with an error: dropped for good
        self.retransmitted = 0   # a sample sent again after no answer (link lost, timeout)
        self.connects = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.disconnects = 0
        self.ping_timeouts = 0
        self.heartbeats = 0

    # ---- interface shared with MQTTClient ----

    def set_callback(self, cb):
        pass  # nothing arrives unasked on this transport

    def subscribe(self, topic, qos=1):
        pass  # commands are MQTT-only

    def isconnected(self):
        return self._up

    async def wait_connected(self, timeout=None):
        return await wait_up(self, timeout)

    def counters(self):
        return {
            "sent": self.sent, "acked": self.acked, "duplicates": self.duplicates, "rejected": self.rejected,
            "retransmitted": self.retransmitted, "connects": self.connects, "reconnects": self.reconnects,
            "connect_failures": self.connect_failures, "disconnects": self.disconnects,
            "ping_timeouts": self.ping_timeouts, "heartbeats": self.heartbeats, "pending": len(self._pending),
        }

    async def publish(self, topic, payload, qos=1, retain=False, timeout=None):
        if topic.endswith("/sample"):
            st = await self.send_sample(payload, timeout)
            return st is not None
        if topic.endswith("/telemetry"):
            return await self.heartbeat(payload)
        return True

    # ---- the WebSocket protocol ----

    async def send_sample(self, rec, timeout=None):
        """Send one encoded (JSON) sample; wait for its answer.

        Returns "saved", "duplicate", "rejected" (the gateway refused it: it would be refused
        forever, so the caller drops it), or None (not connected, link lost, or no answer within
        `timeout` s: keep it and send it again later; the gateway dedupes)."""
        if not self._up:
            return None
        rec = bytes(rec)
        if self._unacked == rec:
            self.retransmitted += 1
        else:
            self.sent += 1
        self._unacked = rec
        msg = SAMPLE_PREFIX + rec + b"}"
        ans = await self._request(msg, timeout)
        if ans is None:
            return None
        self._unacked = None
        t = ans.get("type")
        if t == "ack" and ans.get("status") in ("saved", "duplicate"):
            self.acked += 1
            if ans["status"] == "duplicate":
                self.duplicates += 1
            return ans["status"]
        self.rejected += 1
        self.last_reject = str(ans.get("reason", ans))[:200]
        self.log("gateway rejected a sample, dropped: " + self.last_reject)
        return "rejected"

    async def heartbeat(self, telemetry=None):
        # fire and forget: the heartbeat_ack is consumed by the reader, nobody waits for it
        if not self._up:
            return False
        msg = ('{"type":"heartbeat","rejected":%d' % self.rejected).encode()
        if telemetry:
            msg += b',"telemetry":' + bytes(telemetry)
        msg += b"}"
        try:
            await self._send(msg, None)
        except (OSError, wsclient.WSError) as e:
            self._drop("heartbeat: %r" % (e,))
            return False
        self.heartbeats += 1
        return True

    async def _send(self, msg, ev):
        # the pending entry goes in before the frame, so an instant answer finds it
        ws = self._ws
        if ws is None:
            raise OSError("ws: not connected")
        ent = [ev, None, False]  # waiter, answer, abandoned
        self._pending.append(ent)
        try:
            await ws.send_text(msg)
        except BaseException:
            if ent in self._pending:
                self._pending.remove(ent)
            raise
        return ent

    async def _request(self, msg, timeout):
        ws = self._ws
        if ws is None:
            return None
        ev = asyncio.Event()
        gen = self._gen
        try:
            ent = await self._send(msg, ev)
        except (OSError, wsclient.WSError) as e:
            self._drop("send: %r" % (e,))
            return None
        try:
            if timeout is None:
                await ev.wait()
            else:
                await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        if ent[1] is not None and gen == self._gen:
            return ent[1]
        if gen == self._gen and ent in self._pending:
            # still due: its answer will come and be thrown away; too many of those = dead gateway
            ent[0] = None
            ent[2] = True
            self._abandoned += 1
            if self._abandoned > MAX_ABANDONED:
                self._drop("%d requests without an answer" % self._abandoned)
        return None

    async def connect(self):
        # one attempt: TCP (TLS), upgrade, connection_established, hello/hello_ack
        if self._ws is not None:
            return
        ws = await wsclient.connect(self.url, self.ssl, self.connect_timeout, self.max_frame, self.path,
                                    self.user, self.password, self.open_connection, self.resolver)
        try:
            m = _json(await asyncio.wait_for(ws.recv(), self.connect_timeout))
            if m.get("type") != "connection_established":
                raise wsclient.WSError("ws: gateway greeted with %r" % (m,))
            await ws.send_text(json.dumps({"type": "hello", "device_id": self.device_id, "fw": self.fw,
                                           "boot": self.boot}))
            m = _json(await asyncio.wait_for(ws.recv(), self.connect_timeout))
            if m.get("type") != "hello_ack":
                raise wsclient.WSError("ws: hello refused: %s" % m.get("reason", m))
        except BaseException:
            ws.abort()
            raise
        self._gen += 1
        gen = self._gen
        self._ws = ws
        self._pending = []
        self._abandoned = 0
        self._last_rx = self._last_ping = ticks_ms()
        self._down.clear()
        if self.connects:
            self.reconnects += 1
        self.connects += 1
        self._rtask = asyncio.create_task(self._read_loop(ws, gen))
        self._ktask = asyncio.create_task(self._keepalive_loop(ws, gen))
        self._up = True
        self._upev.set()

    async def run(self):
        # the supervision loop MQTTClient.run uses too
        await keep_connected(self)

    async def disconnect(self):
        self._running = False
        ws = self._ws
        if ws is not None:
            await ws.close(1000, "bye")
            self._drop("disconnect requested")
        self._down.set()

    def _drop(self, reason):
        ws = self._ws
        if ws is None:
            return
        self.last_error = reason
        self._up = False
        self._upev.clear()
        self._ws = None
        self.disconnects += 1
        ws.abort()
        cur = asyncio.current_task()
        for t in (self._rtask, self._ktask):
            if t is not None and t is not cur:
                t.cancel()
        self._rtask = self._ktask = None
        for ent in self._pending:  # nobody will answer these now: wake the waiters (answer None)
            if ent[0] is not None:
                ent[0].set()
        self._pending = []
        self._down.set()

    async def _read_loop(self, ws, gen):
        try:
            while True:
                msg = await ws.recv()
                self._last_rx = ticks_ms()
                if not isinstance(msg, str):
                    continue  # the gateway sends JSON text only
                try:
                    ans = json.loads(msg)
                except ValueError:
                    ans = None
                if not isinstance(ans, dict):
                    ans = {"type": "error", "reason": "gateway: answer is not a JSON object"}
                if not self._pending:
                    continue  # unsolicited: nothing to match it to
                ent = self._pending.pop(0)
                ent[1] = ans
                if ent[0] is not None:
                    ent[0].set()
                elif ent[2]:
                    self._abandoned -= 1
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            if gen == self._gen:
                self._drop("read: %r" % (ex,))

    async def _keepalive_loop(self, ws, gen):
        # WebSocket pings while idle; a gateway silent for 1.5 x keepalive is dead: drop the link
        ka = self.keepalive * 1000
        if not ka:
            return
        try:
            while gen == self._gen and self._ws is ws:
                await asyncio.sleep(1)
                now = ticks_ms()
                # the reader also counts pongs; any frame received proves the peer alive
                if ws.pongs:
                    self._last_rx = now
                    ws.pongs = 0
                if ticks_diff(now, self._last_rx) > ka * 3 // 2:
                    self.ping_timeouts += 1
                    self._drop("no traffic from gateway for %d ms (keepalive %d s)"
                               % (ticks_diff(now, self._last_rx), self.keepalive))
                    return
                if ticks_diff(now, self._last_rx) >= ka // 2 and ticks_diff(now, self._last_ping) >= ka // 2:
                    self._last_ping = now
                    await ws.ping()
        except asyncio.CancelledError:
            raise
        except Exception as ex:
            if gen == self._gen:
                self._drop("keepalive: %r" % (ex,))


def _json(frame):
    """A frame's JSON document (a text frame, or a binary one holding UTF-8)."""
    return json.loads(frame if isinstance(frame, str) else bytes(frame).decode())
