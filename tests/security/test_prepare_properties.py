"""Hypothesis on the gateway's prepare path (gateway.ingest.prepare): arbitrary bytes, JSON and topics,
as MQTT and as WebSocket envelopes. Nothing escapes; every rejection has a reason and a bounded key;
an accepted sample always belongs to the device its topic names."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest.envelope import Envelope
from gateway.ingest.prepare import prepare
from tests.gateway.ingest_support import sample

KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,48}$")
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{2,12}\Z") | st.text(max_size=20)
kinds = st.sampled_from(["sample", "status", "telemetry", "cmd/result", "cmd", "x", ""]) | st.text(max_size=10)
topics = st.builds(lambda d, k: f"sqal/v1/{d}/{k}", ids, kinds) | st.text(max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=10), kids, max_size=6),
    max_leaves=40,
)


def check(env: Envelope) -> None:
    p = prepare(env)  # must not raise
    if p.kind == "reject":
        assert p.reject is not None and p.reject.reason and KEY.match(p.reject.reason_key), p.reject
        assert not p.reject.reason.startswith("internal:"), p.reject.reason  # a bug, not a refusal
        assert len(p.reject.payload) <= 4096 and p.reject.payload_size == env.size
    elif p.kind == "sample":
        assert p.row is not None
        topic_id = env.path_device_id if env.kind_hint else env.topic.split("/")[2]
        assert p.row["device_id"] == topic_id  # never stored under another device's id


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topics, st.binary(max_size=1500))
def test_mqtt_arbitrary_bytes_and_topics(topic: str, payload: bytes) -> None:
    check(Envelope("mqtt", topic, payload, NOW))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topics, json_values)
def test_mqtt_arbitrary_json(topic: str, value: Any) -> None:
    check(Envelope("mqtt", topic, json.dumps(value).encode(), NOW))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids, ids, st.sampled_from(["device_id", "boot", "seq", "ts", "tof", "spec", "lot_id"]), json_values)
def test_valid_sample_with_one_field_replaced(topic_id: str, payload_id: str, field: str, value: Any) -> None:
    s = sample("ESP32_PROP_01")
    s["device_id"] = payload_id
    s[field] = value
    raw = json.dumps(s).encode()
    check(Envelope("mqtt", f"sqal/v1/{topic_id}/sample", raw, NOW))
    check(Envelope("ws", "/ws/sensors/x", raw, NOW, obj=s, kind_hint="sample", path_device_id=topic_id))


@settings(max_examples=200, deadline=None)
@given(ids, st.binary(max_size=1500))
def test_websocket_binary_frames(path_id: str, payload: bytes) -> None:
    check(Envelope("ws", "/ws/sensors/x", payload, NOW, kind_hint="sample", path_device_id=path_id))
