"""A lean MQTT 3.1.1 QoS 1 publisher for the benchmarks' stand-in devices.

Why not paho here: the bench's publishers stand in for devices, which in production do not share
the gateway's cores, yet on this machine they do. paho spends about 300 us of CPU a message
(PUBLISH built in Python, a MQTTMessageInfo with its Condition, the network thread woken through a
socket pair, per-packet PUBACK handling): at the latency run's 3,300 messages/s the two publisher
processes took 0.7 of the 2 cores the pipeline under test also needs. This client writes a prebuilt
PUBLISH with one sendall() and reads PUBACKs in bulk between sends; it does only what a
publishing device needs (CONNECT, PUBLISH QoS 1, PUBACK, DISCONNECT), and checks every PUBACK.
mosquitto_pub (C) would be as lean, but it takes one process per topic and is not in the
`mosquitto` package CI installs.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Self


class PublishError(RuntimeError):
    pass


def _varint(n: int) -> bytes:
    """MQTT remaining length (1-4 bytes, 7 bits each, low group first)."""
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def connect_packet(client_id: str, keepalive: int = 0, username: str | None = None,
                   password: str | None = None) -> bytes:
    """CONNECT, clean session; keepalive 0 (the bench's runs need no PINGREQ)."""
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _string(client_id.encode())
    if username is not None:
        body += _string(username.encode())
    if password is not None:
        body += _string(password.encode())
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH, QoS 1, no retain, no dup."""
    body_len = 2 + len(topic) + 2 + len(payload)
    return b"".join((b"\x32", _varint(body_len), _string(topic), struct.pack("!H", packet_id), payload))


class LeanPublisher:
    """`with LeanPublisher(host, port, client_id) as p: p.publish(topic, payload); p.wait_acked()`.

    One thread, no background work: each publish() first takes the PUBACKs already arrived (a
    non-blocking read), and blocks for more only when `inflight` messages are unacknowledged. (A
    reader thread woken per PUBACK cost 60-80 us of CPU a message at a paced rate.) Packet ids go
    1..65535 and around; with fewer than 65535 outstanding an id is never reused while in flight.
    Every PUBACK is checked: on one connection the broker answers QoS 1 PUBLISHes in their order
    (MQTT 3.1.1 section 4.6), so an id out of order, or any packet but a PUBACK, is an error."""

    def __init__(self, host: str, port: int, client_id: str, inflight: int = 1000,
                 username: str | None = None, password: str | None = None, timeout: float = 10.0) -> None:
        if not 0 < inflight < 65535:
            raise ValueError("inflight must be between 1 and 65534")
        self.inflight = inflight
        self.timeout = timeout  # connecting, and waiting for room in the in-flight window
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(connect_packet(client_id, username=username, password=password))
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[1] != 2:
            raise PublishError(f"expected CONNACK, got {connack!r}")
        if connack[3] != 0:
            raise PublishError(f"broker refused the connection: CONNACK return code {connack[3]}")
        self._sock.settimeout(None)  # blocking: MSG_DONTWAIT then returns at once (a timeout would poll)
        self.sent = 0
        self.acked = 0
        self._next_id = 1
        self._expect_id = 1
        self._pending = b""  # bytes read and not yet a whole PUBACK

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise PublishError("broker closed the connection")
            buf += chunk
        return buf

    def publish(self, topic: bytes, payload: bytes) -> None:
        self._take_acks(block=False)
        while self.sent - self.acked >= self.inflight:
            self._block_for_acks(self.timeout)
        pid = self._next_id
        self._next_id = pid % 65535 + 1
        self._sock.sendall(publish_packet(topic, pid, payload))
        self.sent += 1

    def _take_acks(self, block: bool) -> None:
        try:
            data = self._sock.recv(65536, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not data:
            raise PublishError(f"broker closed the connection with {self.sent - self.acked} messages unacked")
        buf = self._pending + data
        n = len(buf) // 4
        for k in range(n):
            head, size, pid = struct.unpack_from("!BBH", buf, 4 * k)
            if head != 0x40 or size != 2:
                raise PublishError(f"expected PUBACK, got packet type 0x{head:02x}")
            if pid != self._expect_id:
                raise PublishError(f"PUBACK for packet {pid}, expected {self._expect_id}")
            self._expect_id = pid % 65535 + 1
        self.acked += n
        self._pending = buf[4 * n:]

    def _block_for_acks(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for more PUBACKs (a broker that stops answering is an error,
        not a hang)."""
        self._sock.settimeout(timeout)
        try:
            self._take_acks(block=True)
        except TimeoutError:
            raise PublishError(f"{self.sent - self.acked} of {self.sent} messages not PUBACKed "
                               f"within {timeout} s") from None
        finally:
            self._sock.settimeout(None)

    def wait_acked(self, timeout: float = 300.0) -> None:
        """Until every message sent has been PUBACKed."""
        end = time.monotonic() + timeout
        while self.acked < self.sent:
            self._block_for_acks(max(0.001, end - time.monotonic()))

    def abort(self) -> None:
        """Close the socket without a DISCONNECT: a device whose link drops."""
        self._sock.close()

    def close(self) -> None:
        try:
            self._sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
