# Minimal RFC 6455 WebSocket client over asyncio streams (MicroPython >= 1.22; also CPython).
#
# Why our own: micropython-lib's websocket modules are blocking or server-side, and the board needs
# only a client that speaks to the SQAL gateway: one HTTP upgrade with the Sec-WebSocket-Accept
# check, masked client frames (text, binary), ping/pong, close, and a hard bound on what it will
# read (max_frame). Messages fragmented by the server are reassembled within that bound.
# The connection is opened through the board's open_connection and its DNS cache (the transport
# passes them; alone it uses asyncio's and a fresh lookup), so the emulated link cut applies.
import asyncio
import binascii
import hashlib
import os

from sqalfw.link import Resolver, open_stream
from sqalfw.urls import parse_ws_url

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
MAX_HEADER_LINES = 32
MAX_LINE = 1024


class WSError(Exception):
    pass


class WSClosed(WSError):
    # the peer closed (close frame) or the stream ended; `code` as sent by the peer, else None
    def __init__(self, msg, code=None):
        super().__init__(msg)
        self.code = code


def accept_key(key):
    # the value the server must answer in Sec-WebSocket-Accept for our Sec-WebSocket-Key
    return binascii.b2a_base64(hashlib.sha1(key + GUID).digest())[:-1]  # strip the newline


def mask(payload, key):
    # XOR with the 4-byte key, done as one big-int XOR: ~7x faster than a byte loop on MicroPython
    n = len(payload)
    if not n:
        return b""
    k = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def frame(opcode, payload, key=None):
    # one final (FIN) client frame; key: 4 mask bytes (random when None)
    n = len(payload)
    hdr = bytearray()
    hdr.append(0x80 | opcode)
    if n < 126:
        hdr.append(0x80 | n)
    elif n < 65536:
        hdr.append(0x80 | 126)
        hdr += n.to_bytes(2, "big")
    else:
        hdr.append(0x80 | 127)
        hdr += n.to_bytes(8, "big")
    if key is None:
        key = os.urandom(4)
    hdr += key
    return bytes(hdr) + mask(payload, key)


async def connect(url, ssl=None, timeout=10, max_frame=4096, path=None, user=None, password=None,
                  open_connection=None, resolver=None):
    """Open the TCP (TLS) connection and do the HTTP upgrade. Returns a WSClient.

    `path` overrides the URL's; `user`/`password` are used when the URL has none. `open_connection`
    and `resolver` (sqalfw.link.Resolver) are the board's; by default asyncio's and a plain lookup.
    Raises OSError, asyncio.TimeoutError, or WSError naming the handshake step that failed."""
    tls, host, port, upath, u, p = parse_ws_url(url)
    if path is not None:
        upath = path
    if u is not None:
        user, password = u, p
    if tls and ssl is None:
        raise WSError("ws: wss:// needs an ssl context")
    if resolver is None:
        import socket
        resolver = Resolver(socket.getaddrinfo)
    r, w = await open_stream(open_connection or asyncio.open_connection, resolver, host, port,
                             ssl if tls else None, timeout)
    try:
        auth = None
        if user is not None:
            auth = binascii.b2a_base64(("%s:%s" % (user, password or "")).encode())[:-1].decode()
        await asyncio.wait_for(_handshake(r, w, host, port, upath, auth), timeout)
    except BaseException:
        w.close()
        raise
    return WSClient(r, w, max_frame)


async def _handshake(r, w, host, port, path, auth=None):
    key = binascii.b2a_base64(os.urandom(16))[:-1]
    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n") % (path, host, port, key.decode())
    if auth is not None:
        req += "Authorization: Basic " + auth + "\r\n"
    w.write((req + "\r\n").encode())
    await w.drain()
    line = await r.readline()
    if not line:
        raise WSClosed("ws: handshake: connection closed before the HTTP status line")
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[1] != b"101":
        raise WSError("ws: handshake: server answered %r, expected 101 Switching Protocols"
                      % bytes(line[:80]).strip())
    got = {}
    for _ in range(MAX_HEADER_LINES + 1):
        line = await r.readline()
        if not line:
            raise WSClosed("ws: handshake: connection closed inside the HTTP headers")
        if len(line) > MAX_LINE:
            raise WSError("ws: handshake: header line over %d bytes" % MAX_LINE)
        line = line.strip()
        if not line:
            break
        if b":" in line:
            k, v = line.split(b":", 1)
            got[k.strip().lower()] = v.strip()
    else:
        raise WSError("ws: handshake: more than %d header lines" % MAX_HEADER_LINES)
    if got.get(b"upgrade", b"").lower() != b"websocket":
        raise WSError("ws: handshake: missing 'Upgrade: websocket' in the answer")
    if got.get(b"sec-websocket-accept") != accept_key(key):
        raise WSError("ws: handshake: Sec-WebSocket-Accept does not match our key")


class WSClient:
    """One open WebSocket. send_* may be called from several tasks (a lock orders the frames);
    recv() from one task only. Answers the server's pings itself."""

    def __init__(self, reader, writer, max_frame=4096):
        self._r = reader
        self._w = writer
        self.max_frame = max_frame
        self._lock = asyncio.Lock()
        self.closed = False
        self.close_sent = False
        self.pings = 0
        self.pongs = 0

    async def _write(self, data):
        if self.closed:
            raise WSClosed("ws: connection is closed")
        async with self._lock:
            self._w.write(data)
            await self._w.drain()

    async def send_text(self, text):
        await self._write(frame(TEXT, text.encode() if isinstance(text, str) else text))

    async def send_binary(self, data):
        await self._write(frame(BINARY, data))

    async def ping(self, data=b""):
        self.pings += 1
        await self._write(frame(PING, data))

    async def recv(self):
        """Next data message: str (text) or bytes (binary). Control frames are handled here.

        Raises WSClosed when the peer closes, WSError on a protocol violation (the connection
        should then be dropped), OSError when the stream fails."""
        buf = None
        kind = None
        while True:
            fin, op, data = await self._frame()
            if op >= 8:  # control frames may arrive between fragments
                if op == PING:
                    await self._write(frame(PONG, data))
                elif op == PONG:
                    self.pongs += 1
                elif op == CLOSE:
                    code = (data[0] << 8) | data[1] if len(data) >= 2 else None
                    if not self.close_sent:
                        try:
                            await self._write(frame(CLOSE, data[:2]))
                        except OSError:
                            pass
                        self.close_sent = True
                    self.closed = True
                    raise WSClosed("ws: closed by peer (code %s)" % code, code)
                else:
                    raise WSError("ws: unknown control opcode %d" % op)
                continue
            if op == CONT:
                if buf is None:
                    raise WSError("ws: continuation frame without a first fragment")
                if len(buf) + len(data) > self.max_frame:
                    raise WSError("ws: message over max_frame=%d bytes" % self.max_frame)
                buf += data
            elif op in (TEXT, BINARY):
                if buf is not None:
                    raise WSError("ws: new message inside a fragmented one")
                kind = op
                if fin:
                    return data.decode() if op == TEXT else bytes(data)
                buf = bytearray(data)
                continue
            else:
                raise WSError("ws: unknown opcode %d" % op)
            if fin:
                return bytes(buf).decode() if kind == TEXT else bytes(buf)

    async def _frame(self):
        r = self._r
        try:
            h = await r.readexactly(2)
        except EOFError:
            self.closed = True
            raise WSClosed("ws: connection closed by peer (no close frame)")
        fin = h[0] & 0x80
        op = h[0] & 0x0F
        if h[0] & 0x70:
            raise WSError("ws: reserved bits set (no extension was negotiated)")
        if h[1] & 0x80:
            raise WSError("ws: masked frame from the server (RFC 6455 5.1)")
        n = h[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await r.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await r.readexactly(8), "big")
        if op >= 8 and (n > 125 or not fin):
            raise WSError("ws: control frame longer than 125 bytes or fragmented")
        if n > self.max_frame:
            # a bound on memory: refuse rather than read it (the connection is then unusable)
            raise WSError("ws: frame of %d bytes over max_frame=%d" % (n, self.max_frame))
        data = await r.readexactly(n) if n else b""
        return fin, op, data

    async def close(self, code=1000, reason=""):
        # polite close: send our close frame (once) and shut the stream; no wait for the echo
        if not self.closed and not self.close_sent:
            try:
                await self._write(frame(CLOSE, code.to_bytes(2, "big") + reason.encode()[:120]))
            except Exception:
                pass
            self.close_sent = True
        self.abort()

    def abort(self):
        self.closed = True
        try:
            self._w.close()
        except Exception:
            pass
