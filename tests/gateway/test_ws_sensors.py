"""/ws/sensors/ (the original WebSocket protocol) and /ws/realtime/, through the real pipeline and
PostgreSQL (the app's lifespan runs the embedded message engine, its MQTT listener on a free port)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqalfw import codec, quality
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from tests.gateway.ingest_support import sample, uid


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0,
                              ingest_flush_ms=5))
    with TestClient(app) as c:
        yield c


def test_protocol_saved_duplicate_errors(client: TestClient) -> None:
    dev = uid()
    with client.websocket_connect(f"/ws/sensors/{dev}") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "connection_established" and hello["device_id"] == dev and hello["contract"] == 1
        ws.send_json({"type": "hello", "device_id": dev, "fw": "0.1.0", "boot": 1})
        assert ws.receive_json()["type"] == "hello_ack"
        s = sample(dev, boot=1, seq=0)
        ws.send_json({"type": "sensor_data", "data": s})
        a1 = ws.receive_json()
        want = quality.analyze(s["tof"]["dist"], s["tof"]["st"], 8, {**s["spec"], "saturated": False})
        assert a1["type"] == "ack" and a1["status"] == "saved" and isinstance(a1["sample_id"], int)
        assert (a1["device_id"], a1["boot"], a1["seq"], a1["grade"]) == (dev, 1, 0, want["grade"])
        assert math.isclose(a1["score"], want["score"], abs_tol=1e-6)
        ws.send_bytes(codec.encode_sample_bin(s))  # same key, binary frame
        a2 = ws.receive_json()
        assert (a2["status"], a2["sample_id"], a2["grade"]) == ("duplicate", a1["sample_id"], a1["grade"])
        ws.send_json({"type": "heartbeat", "uptime": 3})
        assert ws.receive_json()["type"] == "heartbeat_ack"
        ws.send_json({"type": "ping"})
        assert ws.receive_json()["type"] == "pong"
        other = sample("ESP32_OTHER_01", seq=1)
        ws.send_json({"type": "sensor_data", "data": other})
        e = ws.receive_json()
        assert e == {"type": "error", "reason": f"device_id: payload says 'ESP32_OTHER_01' but topic says '{dev}'"}
        bad = sample(dev, seq=2)
        bad["spec"]["F2"] = 1.5
        ws.send_json({"type": "sensor_data", "data": bad})
        assert ws.receive_json()["reason"] == "spec.F2: expected int, got float"
        ws.send_text('{"type":"sensor_data","data":{"v":1,"boot":NaN}}')
        assert ws.receive_json()["type"] == "error"
        ws.send_text("not json")
        assert ws.receive_json() == {"type": "error", "reason": "json: not valid JSON"}
        ws.send_json({"type": "dance"})
        assert ws.receive_json() == {"type": "error", "reason": "type: unknown message type 'dance'"}
        ws.send_json({"type": "sensor_data", "data": sample(dev, seq=3)})  # still open, still storing
        assert ws.receive_json()["status"] == "saved"


def test_generic_path_and_bad_path(client: TestClient) -> None:
    dev = uid()
    with client.websocket_connect("/ws/sensors/") as ws:
        assert ws.receive_json()["device_id"] is None
        ws.send_json({"type": "sensor_data", "data": sample(dev, seq=5)})
        assert ws.receive_json()["status"] == "saved"
    with client.websocket_connect("/ws/sensors/bad!id") as ws:
        assert ws.receive_json()["type"] == "error"


async def test_ws_rejects_are_stored(client: TestClient, database_url: str) -> None:
    dev = uid()
    with client.websocket_connect(f"/ws/sensors/{dev}") as ws:
        ws.receive_json()
        ws.send_text("{broken")
        ws.receive_json()
        ws.send_json({"type": "dance"})
        ws.receive_json()
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT source, topic, device_id, reason_key, payload FROM ingest_rejects ORDER BY id")
    finally:
        await conn.close()
    assert [(r["source"], r["device_id"], r["reason_key"]) for r in rows] == [("ws", dev, "json"), ("ws", dev, "type")]
    assert bytes(rows[0]["payload"]) == b"{broken" and rows[0]["topic"] == f"/ws/sensors/{dev}"


def test_realtime_stream(client: TestClient) -> None:
    dev = uid()
    with client.websocket_connect("/ws/realtime/") as rt:
        snap = rt.receive_json()
        assert snap["type"] == "snapshot"
        before = snap["total"]
        with client.websocket_connect(f"/ws/sensors/{dev}") as ws:
            ws.receive_json()
            bad = sample(dev, seq=0)
            bad["tof"]["dist"] = [95] * 64  # empty tray: no product -> REJECT and critical alerts
            ws.send_json({"type": "sensor_data", "data": bad})
            assert ws.receive_json()["grade"] == "REJECT"
        got = [rt.receive_json() for _ in range(4)]
    kinds = [m["type"] for m in got]
    assert kinds[0] == "sample" and got[0]["device_id"] == dev and got[0]["grade"] == "REJECT"
    alerts = [m for m in got if m["type"] == "alert"]
    assert {(a["level"], a["code"]) for a in alerts} >= {("critical", "reject")}
    assert {a["code"] for a in alerts} & {"score_low"}  # the low score alert rides along (warning or critical)
    counts = next(m for m in got if m["type"] == "grade_counts")
    assert counts["total"] == before + 1 and counts["grade_counts"]["REJECT"] >= 1


def test_metrics_endpoint(client: TestClient) -> None:
    with client.websocket_connect("/ws/sensors/") as ws:
        ws.receive_json()
        ws.send_json({"type": "sensor_data", "data": sample(uid(), seq=0)})
        ws.receive_json()
    text = client.get("/metrics").text
    for name in ("sqal_ingest_received_total", "sqal_ingest_stored_total", "sqal_ingest_duplicates_total",
                 "sqal_ingest_queue_depth", "sqal_ingest_batch_size_bucket", "sqal_ingest_commit_seconds_bucket",
                 "sqal_ingest_lag_seconds_bucket", "sqal_ingest_latency_seconds_bucket"):
        assert name in text, name
    assert 'sqal_ingest_received_total{kind="sample",source="ws"} 1.0' in text
    status = client.get("/api/ingest/status").json()
    assert status["engine"] == "embedded" and status["connected"] and status["subscribed"] and json.dumps(status)
    assert status["broker_url"].startswith("mqtt://127.0.0.1:") and status["nats_servers"][0].startswith("nats://127.0.0.1:")
