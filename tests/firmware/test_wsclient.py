"""sqalfw.wsclient and sqalfw.ws_transport on the real MicroPython interpreter, against the real
gateway (`sqal serve`: uvicorn + the ingest pipeline + a real PostgreSQL) and, for the protocol
corners the gateway never produces (server pings, fragments, oversize frames, a bad handshake), a
`websockets` library server."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Self

import websockets
from sqalfw import wsclient

from tests.fixtures.gateway import GatewayProcess, stored_keys
from tests.fixtures.micropython import MicroPythonRunner
from tests.fixtures.mqtt import free_port
from tests.gateway.ingest_support import sample


def uid() -> str:
    return f"ESP32_WS_{uuid.uuid4().hex[:8].upper()}"


def run_mp(micropython_run: MicroPythonRunner, body: str, **kw: Any) -> list[Any]:
    """Run an asyncio script on MicroPython; every line it prints starting with 'R ' is a JSON result."""
    code = "import asyncio, json\nfrom sqalfw import urls, wsclient\n" + body + "\nasyncio.run(main())\n"
    out = micropython_run(code, **kw)
    return [json.loads(line[2:]) for line in out.stdout.splitlines() if line.startswith("R ")]


# ---- pure functions, identical on both interpreters ----

PURE = """
print("R " + json.dumps([wsclient.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==").decode(),
                         list(wsclient.mask(b"\\x00\\x00Hello", b"\\x37\\xfa\\x21\\x3d")),
                         list(wsclient.frame(1, b"Hello", b"\\x37\\xfa\\x21\\x3d")),
                         list(wsclient.frame(2, bytes(300), b"abcd")[:8]),
                         urls.parse_ws_url("ws://gw:8000/ws/sensors/"),
                         urls.parse_ws_url("wss://[::1]/x")]))
print("R " + json.dumps(urls.parse_ws_url("ws://DEV_01:s3cret@gw/ws/sensors/DEV_01")))
for bad in ("http://gw/", "ws://", "ws://gw:0/", "ws://u@gw/", "ws://gw/a b", "ws://[::1/"):
    try:
        urls.parse_ws_url(bad)
        print("R " + json.dumps([bad, None]))
    except ValueError as e:
        print("R " + json.dumps([bad, str(e)]))
async def main():
    pass
"""


def test_pure_functions_match_rfc_on_both_interpreters(micropython_run: MicroPythonRunner) -> None:
    mp = run_mp(micropython_run, PURE)
    # RFC 6455 section 1.3 (accept) and 5.7 (masked "Hello" with key 37 fa 21 3d)
    assert mp[0][0] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert bytes(mp[0][2]) == bytes.fromhex("818537fa213d7f9f4d5158")
    assert bytes(mp[0][3][:4]) == bytes([0x82, 0xFE, 0x01, 0x2C])  # 126: 16-bit length 300, mask bit
    assert mp[0][4] == [False, "gw", 8000, "/ws/sensors/", None, None]
    assert mp[0][5] == [True, "::1", 443, "/x", None, None]
    assert mp[1] == [False, "gw", 80, "/ws/sensors/DEV_01", "DEV_01", "s3cret"]
    assert [m[1] for m in mp[2:]] == ["scheme must be ws:// or wss://", "missing host", "port must be 1..65535",
                                      "credentials must be user:password",
                                      "spaces or control characters in the path", "unclosed [ in host"]
    # CPython (the gateway side imports nothing of this, but host tools may) agrees byte for byte
    assert wsclient.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==").decode() == mp[0][0]
    assert list(wsclient.mask(b"\x00\x00Hello", b"\x37\xfa\x21\x3d")) == mp[0][1]
    assert wsclient.mask(bytes(wsclient.mask(b"\x00\x00Hello", b"k3y!")), b"k3y!") == b"\x00\x00Hello"


# ---- against the real gateway ----

CLIENT = """
URL = %(url)r
SAMPLE = %(sample)r
BIN = bytes(%(bin)r)
async def main():
    ws = await wsclient.connect(URL, max_frame=4096)
    print("R " + await ws.recv())
    await ws.send_text(json.dumps({"type": "hello", "device_id": %(dev)r, "fw": "t", "boot": 1}))
    print("R " + await ws.recv())
    await ws.send_text('{"type":"sensor_data","data":' + SAMPLE + '}')
    print("R " + await ws.recv())
    await ws.send_binary(BIN)
    print("R " + await ws.recv())
    await ws.send_text('{"type":"heartbeat","uptime":3}')
    print("R " + await ws.recv())
    await ws.ping(b"p1")
    await ws.send_text('{"type":"sensor_data","data":{"v":1}}')
    print("R " + await ws.recv())
    print("R " + json.dumps({"pongs": ws.pongs}))
    await ws.close()
    print("R " + json.dumps({"closed": ws.closed}))
"""


async def test_client_speaks_the_gateway_protocol(gateway: GatewayProcess, database_url: str,
                                                 micropython_run: MicroPythonRunner) -> None:
    from sqalfw import codec

    dev = uid()
    s = sample(dev, boot=1, seq=0)
    res = run_mp(micropython_run, CLIENT % {"url": gateway.ws_base + dev, "sample": json.dumps(s), "dev": dev,
                                            "bin": list(codec.encode_sample_bin(s))})
    established, hello, a1, a2, hb, err, pongs, closed = res
    assert established["type"] == "connection_established" and established["device_id"] == dev
    assert hello["type"] == "hello_ack" and hello["device_id"] == dev
    assert a1["type"] == "ack" and a1["status"] == "saved" and (a1["boot"], a1["seq"]) == (1, 0)
    assert a2["status"] == "duplicate" and a2["sample_id"] == a1["sample_id"]  # binary frame, same key
    assert hb["type"] == "heartbeat_ack"
    assert err["type"] == "error" and err["reason"]
    assert pongs["pongs"] == 1  # uvicorn answered our control ping
    assert closed["closed"] is True
    assert await stored_keys(database_url, dev) == [(1, 0)]


HANDSHAKE_FAIL = """
async def main():
    for url in %(urls)r:
        try:
            await wsclient.connect(url, timeout=5)
            print("R " + json.dumps([url, "connected"]))
        except wsclient.WSError as e:
            print("R " + json.dumps([url, str(e)]))
        except OSError as e:
            print("R " + json.dumps([url, "OSError"]))
"""


def test_handshake_refusals_are_named(gateway: GatewayProcess, micropython_run: MicroPythonRunner) -> None:
    dead = free_port()
    urls = [f"ws://127.0.0.1:{gateway.port}/health", f"ws://127.0.0.1:{dead}/ws/sensors/X"]
    got = dict(tuple(r) for r in run_mp(micropython_run, HANDSHAKE_FAIL % {"urls": urls}))
    assert got[urls[0]].startswith("ws: handshake: server answered") and "expected 101" in got[urls[0]]
    assert got[urls[1]] == "OSError"


# ---- protocol corners, against the websockets library's server ----


class LibServer:
    """A `websockets` server in a thread; `handler(ws)` decides what it does to the client."""

    def __init__(self, handler: Callable[[Any], Any]) -> None:
        self.port = free_port()
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop_fut: asyncio.Future[None] | None = None
        self.events: list[Any] = []

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.stop_fut = self.loop.create_future()
            async with websockets.serve(self.handler, "127.0.0.1", self.port, max_size=2**20):
                self.ready.set()
                await self.stop_fut

        self.loop.run_until_complete(main())

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop_fut is not None
        self.loop.call_soon_threadsafe(self.stop_fut.set_result, None)
        self.thread.join(10)


CORNERS = """
async def main():
    ws = await wsclient.connect("ws://127.0.0.1:%(port)d/", max_frame=1024)
    await ws.send_text("hello é")
    print("R " + json.dumps(await ws.recv()))       # echo, sent fragmented by the server
    b = await ws.recv()                             # binary, after a server ping we must pong
    print("R " + json.dumps(list(b)))
    try:
        await ws.recv()                             # 5000 bytes > max_frame
        print("R " + json.dumps("read it"))
    except wsclient.WSError as e:
        print("R " + json.dumps(str(e)))
    ws2 = await wsclient.connect("ws://127.0.0.1:%(port)d/close", max_frame=1024, user="ESP32_A_01", password="pw:1")
    try:
        await ws2.recv()
    except wsclient.WSClosed as e:
        print("R " + json.dumps([e.code, ws2.closed]))
"""


def test_fragments_pings_oversize_and_close(micropython_run: MicroPythonRunner) -> None:
    async def handler(ws: Any) -> None:
        if ws.request.path == "/close":
            server.events.append(("auth", ws.request.headers.get("Authorization")))
            await ws.close(4001, "go away")
            return
        text = await ws.recv()
        await ws.send([text[:3], text[3:]])  # an iterable: sent as a fragmented message
        pong = await ws.ping(b"are you there")
        await ws.send(bytes([1, 2, 3]))
        await asyncio.wait_for(pong, 5)  # the client answered our ping
        server.events.append(("pong", True))
        await ws.send(b"x" * 5000)
        try:
            await ws.recv()
        except websockets.ConnectionClosed:
            pass

    with LibServer(handler) as server:
        res = run_mp(micropython_run, CORNERS % {"port": server.port})
    assert res[0] == "hello é"
    assert res[1] == [1, 2, 3]
    assert res[2] == "ws: frame of 5000 bytes over max_frame=1024"
    assert res[3] == [4001, True]
    assert ("pong", True) in server.events
    assert ("auth", "Basic " + base64.b64encode(b"ESP32_A_01:pw:1").decode()) in server.events


def test_bad_accept_key_is_refused(micropython_run: MicroPythonRunner) -> None:
    """A server that answers 101 with the wrong Sec-WebSocket-Accept (a proxy that did not really
    upgrade, or a confused server) is refused at the handshake."""
    port = free_port()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(1024)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
            time.sleep(0.5)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        got = run_mp(micropython_run, HANDSHAKE_FAIL % {"urls": [f"ws://127.0.0.1:{port}/"]})
    finally:
        t.join(5)
        srv.close()
    assert got == [[f"ws://127.0.0.1:{port}/", "ws: handshake: Sec-WebSocket-Accept does not match our key"]]


# ---- the transport: ack semantics that decide what leaves the spool ----

TRANSPORT = """
from sqalfw.ws_transport import WSTransport
from sqalfw.backoff import Backoff
async def main():
    t = WSTransport(%(url)r, %(dev)r, 1, "t", keepalive=5, backoff=Backoff(0.1, 0.5, 1))
    task = asyncio.create_task(t.run())
    assert await t.wait_connected(10), t.last_error
    good = %(good)r.encode()
    print("R " + json.dumps(await t.send_sample(good, 10)))
    print("R " + json.dumps(await t.send_sample(good, 10)))                     # same key again
    print("R " + json.dumps(await t.send_sample(%(bad)r.encode(), 10)))         # the contract refuses it
    print("R " + json.dumps(await t.publish("sqal/v1/%(dev)s/telemetry", b'{"v":1}', 0)))
    print("R " + json.dumps(await t.publish("sqal/v1/%(dev)s/status", b'{"v":1}', 1, True, 5)))
    print("R " + json.dumps(await t.publish("sqal/v1/%(dev)s/sample", %(good2)r.encode(), 1, False, 10)))
    await asyncio.sleep(0.3)
    print("R " + json.dumps(t.counters()))
    print("R " + json.dumps(t.last_reject))
    await t.disconnect()
    task.cancel()
"""


async def test_transport_acks_duplicates_and_rejects(gateway: GatewayProcess, database_url: str,
                                                    micropython_run: MicroPythonRunner) -> None:
    dev = uid()
    bad = sample(dev, seq=1)
    bad["spec"]["F2"] = 1.5
    res = run_mp(micropython_run, TRANSPORT % {
        "url": gateway.ws_base, "dev": dev, "good": json.dumps(sample(dev, seq=0)), "bad": json.dumps(bad),
        "good2": json.dumps(sample(dev, seq=2))})
    assert res[:6] == ["saved", "duplicate", "rejected", True, True, True]
    c = res[6]
    assert (c["sent"], c["acked"], c["duplicates"], c["rejected"], c["heartbeats"]) == (4, 3, 1, 1, 1)
    assert c["pending"] == 0 and c["connects"] == 1
    assert res[7] == "spec.F2: expected int, got float"
    assert await stored_keys(database_url, dev) == [(1, 0), (1, 2)]


WRONG_PATH = """
from sqalfw.ws_transport import WSTransport
from sqalfw.backoff import Backoff
async def main():
    t = WSTransport(%(url)r, %(dev)r, 1, "t", backoff=Backoff(0.05, 0.1, 1))
    task = asyncio.create_task(t.run())
    print("R " + json.dumps(await t.wait_connected(2)))
    print("R " + json.dumps(await t.send_sample(b'{}', 1)))
    print("R " + json.dumps([t.connect_failures > 0, t.last_error]))
    task.cancel()
"""


def test_hello_refused_sends_nothing(gateway: GatewayProcess, micropython_run: MicroPythonRunner) -> None:
    """A ws_url naming another device: the gateway refuses the hello, so no sample is sent (none
    is rejected and dropped): the device keeps them in its spool and keeps retrying."""
    dev = uid()
    res = run_mp(micropython_run, WRONG_PATH % {"url": gateway.ws_base + "ESP32_SOMEONE_ELSE", "dev": dev})
    assert res[0] is False and res[1] is None
    assert res[2][0] is True and "hello refused" in res[2][1] and "ESP32_SOMEONE_ELSE" in res[2][1]
