"""The ingest pipeline end to end in-process: boards (paho, QoS 1) -> the message engine's MQTT listener
(a real nats-server) -> JetStream -> IngestService -> real PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqalfw import codec, quality

from gateway.ingest import model
from gateway.ingest.service import IngestService, IngestSettings
from registry import blobs, sample_payloads
from tests.fixtures.mqtt import NatsBroker
from tests.gateway.ingest_support import Publisher, metric, sample, sample_bytes, uid, wait_until
from tests.registry.helpers import lot_in_state


@pytest.fixture
async def ingest(db_pool: asyncpg.Pool, nats_broker: NatsBroker) -> AsyncIterator[IngestService]:
    svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url, flush_ms=20))
    await svc.start()
    assert svc.source is not None and svc.source.subscribed.is_set()
    yield svc
    await svc.stop()


def publisher(broker: NatsBroker) -> Publisher:
    return Publisher(broker.host, broker.port)


async def test_samples_stored_once_graded_and_counted(ingest: IngestService, db_pool: asyncpg.Pool,
                                                      nats_broker: NatsBroker) -> None:
    devs = [uid(), uid()]
    pub = publisher(nats_broker)
    sent: dict[tuple[str, int], dict[str, Any]] = {}
    for seq in range(60):
        for d in devs:
            s = sample(d, boot=3, seq=seq, q={"score": 0.5, "grade": "C"})
            sent[(d, seq)] = s
            pub.publish(codec.topic(d, "sample"), codec.encode_sample(s))
    for seq in range(20):  # QoS 1 redelivery / spool replay: same keys again, binary this time
        pub.publish(codec.topic(devs[0], "sample"), codec.encode_sample_bin(sent[(devs[0], seq)]))
    await asyncio.to_thread(pub.wait_all)

    async def stored() -> bool:
        n = await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = ANY($1)", devs)
        return n == 120 and metric(ingest.metrics, "sqal_ingest_duplicates_total") == 20

    assert await wait_until(stored), await db_pool.fetchval("SELECT count(*) FROM sqal_samples")
    assert await ingest.pipeline.drain(5)
    rows = await db_pool.fetch("SELECT device_id, seq, score, grade, device_score, device_grade, measured_at, "
                               "clock_synced, alerts FROM sqal_samples WHERE device_id = ANY($1)", devs)
    for r in rows:
        s = sent[(r["device_id"], r["seq"])]
        want = quality.analyze(s["tof"]["dist"], s["tof"]["st"], 8, {**s["spec"], "saturated": False})
        assert r["grade"] == want["grade"] and abs(r["score"] - want["score"]) < 1e-6  # authoritative
        assert (r["device_grade"], round(r["device_score"], 3)) == ("C", 0.5)  # device's kept beside it
        assert r["clock_synced"] and int(r["measured_at"].timestamp() * 1000) == s["ts"]
        kept = await sample_payloads.reading(db_pool, r["device_id"], 3, r["seq"])
        assert kept is not None and kept["raw"] == codec.decode_sample(codec.encode_sample(s))  # kept whole
    # devices fed by the samples; counters split new / duplicate
    d0 = await db_pool.fetchrow("SELECT * FROM devices WHERE id = $1", devs[0])
    assert (d0["samples_stored"], d0["duplicates"], d0["site_code"]) == (60, 20, None)
    text = ingest.metrics.render().decode()
    assert "sqal_ingest_stored_total 120.0" in text and "sqal_ingest_duplicates_total 20.0" in text
    compiled = 1.0 if model.describe()[0] == "compiled" else 0.0  # which quality model graded them
    assert f"sqal_ingest_model_compiled {compiled}" in text
    pub.close()


async def test_lot_linking_explicit_assignment_unknown(ingest: IngestService, db_pool: asyncpg.Pool,
                                                       nats_broker: NatsBroker) -> None:
    dev = uid("ESP32_DEMO_LL")
    lot = await lot_in_state(db_pool, "inspecting", device_id=dev)  # device assigned to the lot from now
    other = await lot_in_state(db_pool, "ready")
    pub = publisher(nats_broker)
    pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=1))  # no lot id -> assignment
    pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=2, lot_id=other))  # explicit
    pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=3, lot_id="LOT_19990101_0001"))  # unknown
    pub.publish(codec.topic(dev, "sample"), sample_bytes(dev, seq=4, synced=False, ts=5))  # 1970 clock
    await asyncio.to_thread(pub.wait_all)

    async def four() -> bool:
        return await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", dev) == 4

    assert await wait_until(four)
    rows = {r["seq"]: r for r in await db_pool.fetch(
        "SELECT seq, lot_id, link_kind, link_issue, requested_lot_id, measured_at, clock_synced, features_z "
        "FROM sqal_samples WHERE device_id = $1", dev)}
    assert (rows[1]["lot_id"], rows[1]["link_kind"]) == (lot, "assignment")
    assert (rows[2]["lot_id"], rows[2]["link_kind"]) == (other, "explicit")
    assert (rows[3]["lot_id"], rows[3]["link_issue"], rows[3]["requested_lot_id"]) == (None, "unknown_lot",
                                                                                       "LOT_19990101_0001")
    # unsynced clock: flagged, no 1970 measured_at, linked by receive time -> the assignment
    assert rows[4]["measured_at"] is None and not rows[4]["clock_synced"]
    assert blobs.features_of(rows[4]["features_z"])["clock"]["flags"] == ["unsynced"]
    assert rows[4]["lot_id"] == lot
    assert metric(ingest.metrics, "sqal_ingest_clock_flags_total", flag="unsynced") == 1
    pub.close()


async def test_rejects_stored_with_reason_and_neighbours_kept(ingest: IngestService, db_pool: asyncpg.Pool,
                                                              nats_broker: NatsBroker) -> None:
    dev = uid()
    pub = publisher(nats_broker)
    good = [sample_bytes(dev, seq=i) for i in range(3)]
    spoof = sample(dev, seq=10)
    spoof["device_id"] = "ESP32_SOMEONE_ELSE"
    bad = {
        "json": b"{not json",
        "device_id": codec.encode_sample(spoof),
        "size": b"{" + b" " * 5000 + b"}",
        "v": json.dumps({**sample(dev, seq=11), "v": 2}).encode(),
    }
    pub.publish(codec.topic(dev, "sample"), good[0])
    for p in bad.values():
        pub.publish(codec.topic(dev, "sample"), p)
    pub.publish(codec.topic(dev, "sample"), good[1])
    # invalid device id in the topic (no space: the engine refuses a topic with one, see test_ingest_hostile.py)
    pub.publish("sqal/v1/bad!id/sample", good[2])
    pub.publish(codec.topic(dev, "sample"), good[2])
    await asyncio.to_thread(pub.wait_all)

    async def done() -> bool:
        n = await db_pool.fetchval("SELECT count(*) FROM ingest_rejects")
        m = await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = $1", dev)
        return n == 5 and m == 3

    assert await wait_until(done)
    rej = {r["reason_key"]: r for r in await db_pool.fetch("SELECT * FROM ingest_rejects")}
    assert set(rej) == {"json", "device_id", "size", "v", "topic"}
    assert rej["device_id"]["reason"] == f"device_id: payload says 'ESP32_SOMEONE_ELSE' but topic says '{dev}'"
    assert rej["v"]["reason"].startswith("v: unsupported version 2")
    assert rej["size"]["payload_size"] == 5002 and len(rej["size"]["payload"]) == 4096 and rej["size"]["truncated"]
    assert bytes(rej["json"]["payload"]) == b"{not json" and rej["json"]["topic"] == codec.topic(dev, "sample")
    assert rej["json"]["device_id"] == dev and rej["topic"]["device_id"] is None
    assert metric(ingest.metrics, "sqal_ingest_rejected_total", reason="device_id") == 1
    assert await db_pool.fetchval("SELECT rejects FROM devices WHERE id = $1", dev) == 4
    pub.close()


async def test_start_moves_what_the_process_holds_out_of_the_collectors_sight(
        db_pool: asyncpg.Pool, nats_broker: NatsBroker) -> None:
    gc.unfreeze()  # whatever an earlier test froze in this worker
    assert gc.get_freeze_count() == 0
    svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url))
    await svc.start()
    try:
        assert gc.get_freeze_count() > 10_000  # the modules, the app and the pools: a full collection skips them
    finally:
        await svc.stop()
