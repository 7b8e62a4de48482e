"""The MQTT source client's fast path for QoS 1 PUBLISH packets, on crafted buffers: what it takes,
and everything it must leave to paho (other packets, packets cut at the chunk's end, malformed ones).
End to end against Mosquitto it is checked in test_ingest_acks.py and every ingest test."""

from __future__ import annotations

import struct

import paho.mqtt.client as paho

from gateway.ingest.mqtt_source import _Client


def publish(topic: bytes, mid: int, payload: bytes, flags: int = 0x02) -> bytes:
    """A PUBLISH packet as a broker sends it (QoS from `flags`, plus DUP 0x08 / RETAIN 0x01)."""
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if flags & 0x06 else b"") + payload
    n, rl = len(body), bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        rl.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | flags]) + bytes(rl) + body


def client(buf: bytes, protocol: int = paho.MQTTv311) -> tuple[_Client, list[tuple[bytes, int, bytes]]]:
    c = _Client(paho.CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)
    got: list[tuple[bytes, int, bytes]] = []
    c.on_publishes = got.extend
    c._rbuf, c._rpos = buf, 0
    return c, got


def test_takes_whole_qos1_publishes_in_order_with_any_length() -> None:
    big = bytes(range(256)) * 3  # remaining length on two bytes
    huge = b"x" * 20000  # on three bytes
    buf = (publish(b"sqal/v1/A/sample", 1, b"{}") + publish(b"sqal/v1/B/sample", 65535, big, 0x02 | 0x08)
           + publish(b"t", 7, huge, 0x02 | 0x01) + publish(b"sqal/v1/\xc3\xa9/x", 9, b""))
    c, got = client(buf)
    assert c._fast_publishes() == 4
    assert got == [(b"sqal/v1/A/sample", 1, b"{}"), (b"sqal/v1/B/sample", 65535, big), (b"t", 7, huge),
                   (b"sqal/v1/\xc3\xa9/x", 9, b"")]
    assert c._rpos == len(buf) and c.fast_publishes == 4


def test_stops_at_what_paho_must_handle() -> None:
    one = publish(b"a/b", 1, b"p1")
    cases = {
        "QoS 0 publish": publish(b"a/b", 0, b"q0", 0x00),
        "QoS 2 publish": publish(b"a/b", 2, b"q2", 0x04),
        "PINGRESP": b"\xd0\x00",
        "cut in the payload": publish(b"a/b", 3, b"0123456789")[:-3],
        "cut in the length": bytes([0x32, 0x80]),
        "length over 4 bytes": bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]) + b"\0" * 8,
        "topic longer than the packet": bytes([0x32, 0x05, 0x00, 0x09]) + b"abc",
        "too short for a packet id": bytes([0x32, 0x03, 0x00, 0x01, 0x61]),
    }
    for name, rest in cases.items():
        c, got = client(one + rest)
        assert c._fast_publishes() == 1, name
        assert got == [(b"a/b", 1, b"p1")] and c._rpos == len(one), name  # the rest is left for paho
        assert c._fast_publishes() == 0 and c._rpos == len(one), name


def test_off_for_mqtt5_and_mid_packet() -> None:
    buf = publish(b"a/b", 1, b"p")
    c, got = client(buf, protocol=paho.MQTTv5)  # v5 PUBLISH carries properties: paho's
    assert c._fast_publishes() == 0 and got == []
    c, got = client(buf)
    c._in_packet["command"] = 0x32  # paho is in the middle of a packet
    assert c._fast_publishes() == 0 and got == []
    c, got = client(buf)
    c.on_publishes = None
    assert c._fast_publishes() == 0 and c._rpos == 0
