"""1,000 hostile messages interleaved with valid ones through Mosquitto into the real gateway process:
every valid one stored, every hostile one rejected with its reason, the gateway alive, memory flat."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path
from typing import Callable

import asyncpg
import httpx

from sqalfw import codec
from tests.fixtures.mqtt import MosquittoBroker
from tests.gateway.ingest_support import GatewayProcess, Publisher, sample, sample_bytes, uid, wait_until


def hostile(i: int, dev: str) -> tuple[str, bytes, str]:
    """(topic, payload, expected reason key) for hostile message number i, aimed at device `dev`."""
    good = sample(dev, seq=100000 + i)
    kind = i % 14
    t = codec.topic(dev, "sample")
    if kind == 0:
        return t, b'{"v":1,"device_id":', "json"
    if kind == 1:
        return t, json.dumps({**good, "seq": "12"}).encode(), "seq"
    if kind == 2:
        return t, json.dumps(good).replace('"gain": 4.0', '"gain": NaN').encode(), "spec.gain"
    if kind == 3:
        return t, json.dumps(good).replace('"ts": ', '"ts": 1e999, "x": ').encode(), "ts"
    if kind == 4:
        return t, json.dumps({**good, "tof": {"res": 8, "dist": [90] * 200000, "st": [5] * 64}}).encode(), "size"
    if kind == 5:
        return t, (b"{" + b" " * (1024 * 1024) + b"}") if i % 50 == 5 else b"[" * 2000, "size"  # 1 MB, or deep
    if kind == 6:
        return t, json.dumps({**good, "device_id": "ESP32_SPOOF_01"}).encode(), "device_id"
    if kind == 7:
        return t, json.dumps({**good, "v": 99}).encode(), "v"
    if kind == 8:
        b = codec.encode_sample_bin(good)
        return t, bytes(b[: len(b) // 2]), "binary"
    if kind == 9:
        return t, b"\xff\xfe\x00garbage", "json"
    if kind == 10:
        return t, b"", "payload"
    if kind == 11:
        return t, json.dumps({**good, "tof": {"res": 8, "dist": [90] * 65, "st": [5] * 64}}).encode(), "tof.dist"
    if kind == 12:
        return "sqal/v1/bad..id;drop/sample", sample_bytes(dev, seq=200000 + i), "topic"
    return t, struct.pack("<BB", 0xA5, 1) + b"\x00" * 10, "binary"


async def test_thousand_hostile_messages(mosquitto_factory: Callable[..., MosquittoBroker], database_url: str,
                                         tmp_path: Path) -> None:
    broker = mosquitto_factory(extra_config=["max_inflight_messages 1000"])
    gw = GatewayProcess(database_url, broker.url, tmp_path)
    gw.start()
    try:
        dev = uid("ESP32_HOST")
        pub = Publisher(broker.host, broker.port)

        def round_(start: int, n: int) -> tuple[int, dict[str, int]]:
            valid, expected = 0, {}
            for i in range(start, start + n):
                topic, payload, key = hostile(i, dev)
                pub.publish(topic, payload)
                expected[key] = expected.get(key, 0) + 1
                if i % 2 == 0:  # a valid neighbour between hostile ones
                    pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=i))
                    valid += 1
            pub.wait_all(60)
            return valid, expected

        async def settled(samples: int, rejects: int) -> bool:
            conn = await asyncpg.connect(database_url)
            try:
                s = await conn.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", dev)
                r = await conn.fetchval("SELECT count(*) FROM ingest_rejects")
            finally:
                await conn.close()
            return s >= samples and r >= rejects

        warm_valid, warm_exp = await asyncio.to_thread(round_, 0, 200)  # warm-up: caches, pools, arenas
        assert await wait_until(lambda: settled(warm_valid, 200), timeout=60)
        rss_before = gw.rss_kb()
        valid, expected = await asyncio.to_thread(round_, 200, 1000)
        assert await wait_until(lambda: settled(warm_valid + valid, 1200), timeout=120)
        rss_after = gw.rss_kb()

        conn = await asyncpg.connect(database_url)
        try:
            stored = {r["seq"] for r in await conn.fetch("SELECT seq FROM sqal_samples WHERE device_id = $1", dev)}
            by_key = {r["reason_key"]: r["n"] for r in await conn.fetch(
                "SELECT reason_key, count(*) AS n FROM ingest_rejects GROUP BY 1")}
            sizes = await conn.fetchval("SELECT max(length(payload)) FROM ingest_rejects")
            big = await conn.fetchval("SELECT max(payload_size) FROM ingest_rejects")
        finally:
            await conn.close()
        assert stored == set(range(0, 1200, 2)), "every valid neighbour stored, no hostile one"
        for k, n in warm_exp.items():
            expected[k] = expected.get(k, 0) + n
        assert by_key == expected
        assert sizes <= 4096 and big >= 1024 * 1024  # raw bytes kept, truncated; true size recorded
        assert gw.alive()
        r = httpx.get(gw.url + "/api/ingest/status", timeout=5).json()
        assert r["queue_depth"] == 0
        assert rss_after - rss_before < 25 * 1024, f"RSS grew {rss_before} -> {rss_after} kB"
        pub.close()
    finally:
        gw.stop()
