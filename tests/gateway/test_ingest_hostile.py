"""Hostile input at the message engine and at the ingest. Every hostile message either is stored (a
valid reading in an odd wrapping), or leaves exactly one stored reject with its reason; its valid
neighbours are stored; the metrics count each once; the gateway stays up, its memory flat.

What the engine (nats-server 2.15, its MQTT listener) refuses itself never reaches the gateway --
observed, and checked against its log in `test_what_the_engine_refuses_never_reaches_the_gateway`:
a topic with a NUL byte, invalid UTF-8, a space or another whitespace character, or an MQTT wildcard
(+, #), and a payload over its max_payload (64 KiB). It closes the board's connection without a
PUBACK (the board keeps the reading and, publishing it again, is refused again: a board bug that
only the board can fix). A truncated packet is never a message at all. What it lets through -- NATS
wildcard characters (*, >), dots, empty levels, NUL and invalid UTF-8 inside payloads, sizes under
64 KiB the contract refuses -- is the ingest's to judge, as are subjects that no MQTT topic maps to,
which only a NATS client can publish (a NUL byte in a subject level: its reject row's topic is stored
with the NUL escaped, PostgreSQL text cannot hold one).

Not covered, a known limit: a subject with invalid UTF-8, published by a NATS client, stops nats-py's
reader (it decodes every subject as UTF-8 and its read loop ends on the error). The embedded engine
admits no NATS client without credentials (test_nats_embedded.py); on an external engine, only the
gateway's own user should be allowed to publish on sqal.v1.> other than over MQTT."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from pathlib import Path

import asyncpg
import httpx
import nats
from sqalfw import codec

from gateway.ingest.service import IngestService, IngestSettings
from gateway.nats import streams
from tests.fixtures.mqtt import NatsBroker
from tests.gateway.ingest_support import (
    GatewayProcess,
    Publisher,
    consumer_state,
    ensure_streams,
    metric,
    sample,
    sample_bytes,
    stream_messages,
    uid,
    wait_until,
)

STORED = "stored"  # outcome of a hostile-looking message that is a valid reading of `dev`
STORED_OTHER = "stored as the other device"
KINDS = 21


def hostile(i: int, dev: str, other: str) -> tuple[str, bytes, str]:
    """(topic, payload, expected outcome: a reason key, STORED or STORED_OTHER) for hostile message
    number i, aimed at device `dev` (`other`: the device it pretends to be in kind 20)."""
    good = sample(dev, seq=100000 + i)
    kind = i % KINDS
    t = codec.topic(dev, "sample")
    if kind == 0:  # truncated JSON
        return t, b'{"v":1,"device_id":', "json"
    if kind == 1:
        return t, json.dumps({**good, "seq": "12"}).encode(), "seq"
    if kind == 2:
        return t, json.dumps(good).replace('"gain": 4.0', '"gain": NaN').encode(), "spec.gain"
    if kind == 3:
        return t, json.dumps(good).replace('"ts": ', '"ts": 1e999, "x": ').encode(), "ts"
    if kind == 4:  # about 60 KB: under the engine's 64 KiB, over the contract's 1 KiB
        return t, json.dumps({**good, "tof": {"res": 8, "dist": [90] * 15000, "st": [5] * 64}}).encode(), "size"
    if kind == 5:  # 60 KB of blanks, or deep nesting
        return t, (b"{" + b" " * 60000 + b"}") if i % 50 == 5 else b"[" * 2000, "size"
    if kind == 6:  # the payload names another device than the topic
        return t, json.dumps({**good, "device_id": "ESP32_SPOOF_01"}).encode(), "device_id"
    if kind == 7:
        return t, json.dumps({**good, "v": 99}).encode(), "v"
    if kind == 8:  # truncated binary sample
        b = codec.encode_sample_bin(good)
        return t, bytes(b[: len(b) // 2]), "binary"
    if kind == 9:  # invalid UTF-8 and a NUL byte
        return t, b"\xff\xfe\x00garbage", "json"
    if kind == 10:
        return t, b"", "payload"
    if kind == 11:
        return t, json.dumps({**good, "tof": {"res": 8, "dist": [90] * 65, "st": [5] * 64}}).encode(), "tof.dist"
    if kind == 12:  # dots in the topic (the engine maps them to '//' in the subject)
        return "sqal/v1/bad..id;drop/sample", sample_bytes(dev, seq=200000 + i), "topic"
    if kind == 13:
        return t, struct.pack("<BB", 0xA5, 1) + b"\x00" * 10, "binary"
    if kind == 14:  # a raw NUL byte inside a JSON string
        return t, json.dumps(good).replace('"fw": "0.1.0"', '"fw": "0.1\x00"').encode(), "json"
    if kind == 15:  # an escaped NUL (\u0000) in a text field
        return t, json.dumps({**good, "fw": "0.1\u0000"}).encode(), "fw"
    if kind == 16:  # invalid UTF-8 inside a JSON string
        return t, json.dumps(good).encode().replace(b'"fw": "0.1.0"', b'"fw": "0.1\xff"'), "json"
    if kind == 17:  # NATS wildcard characters: the engine takes them as plain characters
        return ("sqal/v1/*/sample" if i % 2 else "sqal/v1/>/sample"), sample_bytes(dev, seq=300000 + i), "topic"
    if kind == 18:  # under another device's topic, with its own id in the payload
        return codec.topic(other, "sample"), json.dumps(good).encode(), "device_id"
    if kind == 19:  # a valid reading with an unknown field holding a NUL: the field is dropped, the reading stored
        return t, json.dumps({**good, "note": "a\u0000b"}).encode(), STORED
    # a device publishing as another one, topic and payload alike: without per-device credentials
    # nothing tells them apart (the auth callout's subject permissions do, tests/security): stored
    return codec.topic(other, "sample"), sample_bytes(other, seq=i), STORED_OTHER


def labelled(text: str, name: str) -> dict[str, float]:
    """{labels as written: sample} of a labelled metric in a /metrics page ('reason="json"')."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(rf"^{name}{{([^}}]*)}} ([0-9.e+-]+)$", text, re.MULTILINE)}


async def test_thousand_hostile_messages(nats_broker: NatsBroker, database_url: str, tmp_path: Path) -> None:
    gw = GatewayProcess(database_url, nats_broker, tmp_path)
    gw.start()
    try:
        dev, other = uid("ESP32_HOST"), uid("ESP32_HOSTX")
        pub = Publisher(nats_broker.host, nats_broker.port)
        stored_dev: set[int] = set()
        stored_other: set[int] = set()
        expected: dict[str, int] = {}
        published = 0

        def round_(start: int, n: int) -> tuple[int, int]:
            nonlocal published
            for i in range(start, start + n):
                topic, payload, outcome = hostile(i, dev, other)
                pub.publish(topic, payload)
                published += 1
                if outcome == STORED:
                    stored_dev.add(100000 + i)
                elif outcome == STORED_OTHER:
                    stored_other.add(i)
                else:
                    expected[outcome] = expected.get(outcome, 0) + 1
                if i % 2 == 0:  # a valid neighbour between hostile ones
                    pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=i))
                    published += 1
                    stored_dev.add(i)
            pub.wait_all(60)  # every one PUBACKed: the engine took them all
            return len(stored_dev) + len(stored_other), sum(expected.values())

        async def settled(samples: int, rejects: int) -> bool:
            conn = await asyncpg.connect(database_url)
            try:
                s = await conn.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = ANY($1)", [dev, other])
                r = await conn.fetchval("SELECT count(*) FROM ingest_rejects")
            finally:
                await conn.close()
            return s >= samples and r >= rejects

        warm = await asyncio.to_thread(round_, 0, 200)  # warm-up: caches, pools, arenas
        assert await wait_until(lambda: settled(*warm), timeout=60)
        rss_before = gw.rss_kb()
        total = await asyncio.to_thread(round_, 200, 1000)
        assert await wait_until(lambda: settled(*total), timeout=120)
        rss_after = gw.rss_kb()

        conn = await asyncpg.connect(database_url)
        try:
            got_dev = {r["seq"] for r in await conn.fetch("SELECT seq FROM sqal_samples WHERE device_id = $1", dev)}
            got_other = {r["seq"] for r in await conn.fetch("SELECT seq FROM sqal_samples WHERE device_id = $1", other)}
            by_key = {r["reason_key"]: r["n"] for r in await conn.fetch(
                "SELECT reason_key, count(*) AS n FROM ingest_rejects GROUP BY 1")}
            sizes = await conn.fetchval("SELECT max(length(payload)) FROM ingest_rejects")
            big = await conn.fetchval("SELECT max(payload_size) FROM ingest_rejects")
            wild = {r["topic"] for r in await conn.fetch("SELECT topic FROM ingest_rejects WHERE reason_key = 'topic'")}
        finally:
            await conn.close()
        assert got_dev == stored_dev, "every valid neighbour and odd-but-valid reading stored, no hostile one"
        assert got_other == stored_other
        assert by_key == expected  # one reject each, with its reason
        assert wild == {"sqal/v1/*/sample", "sqal/v1/>/sample", "sqal/v1/bad..id;drop/sample"}  # as published
        assert sizes <= 4096 and big >= 60000  # raw bytes kept, truncated; true size recorded
        assert gw.alive()
        r = gw.status()
        assert r["queue_depth"] == 0 and r["in_hand"] == 0 and r["last_error"] is None
        text = (await asyncio.to_thread(httpx.get, gw.url + "/metrics", timeout=5)).text
        assert labelled(text, "sqal_ingest_rejected_total") == {f'reason="{k}"': float(n) for k, n in expected.items()}
        assert gw.metric("sqal_ingest_stored_total") == len(stored_dev) + len(stored_other)
        assert gw.metric("sqal_ingest_duplicates_total") == 0 and gw.metric("sqal_ingest_redelivered_total") == 0
        assert labelled(text, "sqal_ingest_received_total") == {'kind="sample",source="mqtt"': float(published)}
        assert rss_after - rss_before < 25 * 1024, f"RSS grew {rss_before} -> {rss_after} kB"
        pub.close()
    finally:
        gw.stop()


# ---- what the engine refuses ----

def _packet(first: int, body: bytes) -> bytes:
    n, rl = len(body), bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        rl.append(b | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(rl) + body


def raw_publish(host: str, port: int, topic: bytes, payload: bytes, *, cut: int = 0) -> bytes:
    """One MQTT 3.1.1 connection: CONNECT, a QoS 1 PUBLISH of `topic` / `payload` (its last `cut`
    bytes not sent, then the connection closed: a truncated packet), and what the engine answers to
    the PUBLISH: its PUBACK, or b"" when it closed the connection instead."""
    cid = b"raw-%d" % time.monotonic_ns()
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(_packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x1e" + struct.pack("!H", len(cid)) + cid))
        assert s.recv(4)[:1] == b"\x20"  # CONNACK
        packet = _packet(0x32, struct.pack("!H", len(topic)) + topic + struct.pack("!H", 1) + payload)
        if cut:
            s.sendall(packet[:-cut])
            return b""
        s.sendall(packet)
        try:
            return s.recv(16)
        except OSError:
            return b""


REFUSED = {  # what the engine refuses, and the reason it logs
    "NUL in the topic": (b"sqal/v1/ESP32_X\x00/sample", b"{}", "invalid null character in topic"),
    "invalid UTF-8 in the topic": (b"sqal/v1/ESP32_\xff\xfe/sample", b"{}", "invalid utf8 for topic"),
    "MQTT wildcard +": (b"sqal/v1/+/sample", b"{}", "wildcards not allowed in publish's topic"),
    "MQTT wildcard #": (b"sqal/v1/#", b"{}", "wildcards not allowed in publish's topic"),
    "wildcard # inside a level": (b"sqal/v1/A#B/sample", b"{}", "wildcards not allowed in publish's topic"),
    "space in the topic": (b"sqal/v1/bad id!/sample", b"{}", "character not supported for MQTT topics"),
    "tab in the topic": (b"sqal/v1/bad\tid/sample", b"{}", "character not supported for MQTT topics"),
    "payload over 64 KiB": (b"sqal/v1/ESP32_BIG_01/sample", b"{" + b" " * 70000 + b"}", "maximum payload exceeded"),
}


async def test_what_the_engine_refuses_never_reaches_the_gateway(nats_broker: NatsBroker,
                                                                 db_pool: asyncpg.Pool) -> None:
    svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url, workers=0))
    await svc.start()
    try:
        dev = uid("ESP32_NEIGH")
        pub = Publisher(nats_broker.host, nats_broker.port)
        seq = 0
        for name, (topic, payload, _why) in REFUSED.items():
            pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=seq))  # a neighbour before each
            seq += 1
            answer = await asyncio.to_thread(raw_publish, nats_broker.host, nats_broker.port, topic, payload)
            assert answer == b"", f"{name}: answered {answer!r}"  # no PUBACK: the connection closed
        # a truncated PUBLISH (the connection closes in the middle of it): never a message
        await asyncio.to_thread(raw_publish, nats_broker.host, nats_broker.port, codec.topic(dev, "sample").encode(),
                                sample_bytes(dev, seq=1000), cut=100)
        pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=seq))
        seq += 1
        await asyncio.to_thread(pub.wait_all)
        pub.close()

        async def neighbours_stored() -> bool:
            return await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", dev) == seq

        assert await wait_until(neighbours_stored)
        assert await svc.pipeline.drain(10)
        assert await db_pool.fetchval("SELECT count(*) FROM ingest_rejects") == 0
        assert await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id <> $1", dev) == 0
        assert metric(svc.metrics, "sqal_ingest_received_total", source="mqtt", kind="sample") == seq
        assert metric(svc.metrics, "sqal_ingest_stored_total") == seq
        assert await stream_messages(nats_broker.nats_url) == 0
        log = nats_broker.log()
        for name, (_t, _p, why) in REFUSED.items():
            assert why in log, name
    finally:
        await svc.stop()


# ---- subjects no MQTT topic maps to (a NATS client's) ----

async def test_a_nul_byte_in_a_subject_leaves_one_reject_with_its_topic_escaped(nats_broker: NatsBroker,
                                                                                db_pool: asyncpg.Pool) -> None:
    """Known to fail before: the reject row's topic held the NUL, PostgreSQL refused it, the whole
    batch was retried one by one and that reject could not be stored at all."""
    await ensure_streams(nats_broker.nats_url)
    dev = uid("ESP32_NUL")
    nc = await nats.connect(nats_broker.nats_url)
    try:
        js = nc.jetstream()
        # stored in the engine's MQTT message stream as its MQTT listener stores a board's QoS 1
        # publish (which itself refuses a NUL in a topic: only a NATS client can put one there)
        pre = streams.MQTT_PREFIX
        for seq in range(5):  # one batch: neighbours on both sides (published before the gateway starts)
            await js.publish(f"{pre}sqal.v1.{dev}.sample", sample_bytes(dev, seq=seq))
        await js.publish(f"{pre}sqal.v1.ESP32_X\x00.sample", sample_bytes(dev, seq=99))
        for seq in range(5, 10):
            await js.publish(f"{pre}sqal.v1.{dev}.sample", sample_bytes(dev, seq=seq))
    finally:
        await nc.close()
    svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url, workers=0))
    await svc.start()
    try:
        async def done() -> bool:
            c = await consumer_state(nats_broker.nats_url)
            return c.num_ack_pending == 0 and c.num_pending == 0

        assert await wait_until(done)
        rows = await db_pool.fetch("SELECT topic, device_id, reason_key, reason, payload FROM ingest_rejects")
        assert len(rows) == 1
        assert rows[0]["topic"] == "sqal/v1/ESP32_X\\x00/sample"  # the NUL as the four characters \x00
        assert rows[0]["reason_key"] == "topic" and rows[0]["device_id"] is None
        assert json.loads(bytes(rows[0]["payload"]))["seq"] == 99
        seqs = [r["seq"] for r in await db_pool.fetch("SELECT seq FROM sqal_samples WHERE device_id = $1 ORDER BY seq",
                                                      dev)]
        assert seqs == list(range(10))
        assert metric(svc.metrics, "sqal_ingest_rejected_total", reason="topic") == 1
        assert metric(svc.metrics, "sqal_ingest_rejected_total", reason="storage_failed") == 0
        assert metric(svc.metrics, "sqal_ingest_received_total", source="mqtt", kind="sample") == 11
        assert metric(svc.metrics, "sqal_ingest_stored_total") == 10
        assert metric(svc.metrics, "sqal_ingest_db_retries_total") == 0  # the batch went in at once
        assert svc.pipeline.committed_batches == 1
    finally:
        await svc.stop()
