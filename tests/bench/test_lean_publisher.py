"""bench/lean_publisher.py against real brokers (NATS's MQTT listener, the engine the ingest bench
publishes into, and Mosquitto): every message delivered once, in order, intact; the in-flight window,
packet ids wrapping past 65535, and a refused connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench.lean_publisher import LeanPublisher, PublishError, _varint, publish_packet
from tests.fixtures.mqtt import Broker, MosquittoBroker, MqttCollector, unique_topic


@pytest.mark.parametrize("n, encoded", [(0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"),
                                        (16384, "808001"), (2097151, "ffff7f"), (2097152, "80808001")])
def test_remaining_length_matches_the_mqtt_spec_table(n: int, encoded: str) -> None:
    assert _varint(n).hex() == encoded


def test_publish_packet_layout() -> None:
    pkt = publish_packet(b"a/b", 0x1234, b"xyz")
    assert pkt.hex() == "32" + "0a" + "0003" + b"a/b".hex() + "1234" + b"xyz".hex()


def test_every_message_arrives_once_in_order_with_a_small_window(mqtt_broker: Broker) -> None:
    topic = unique_topic("lean")
    col = MqttCollector(mqtt_broker, topic, qos=1)
    try:
        payloads = [b"%d:" % i + b"p" * (i % 300) for i in range(3000)]
        with LeanPublisher(mqtt_broker.host, mqtt_broker.port, "lean-test", inflight=20) as p:
            for body in payloads:
                p.publish(topic.encode(), body)
                assert p.sent - p.acked <= 20  # publish() never goes past the window
            p.wait_acked(60)
            assert p.acked == p.sent == 3000
        assert col.wait_count(3000, timeout=60)
        assert [m[1] for m in col.messages] == payloads
    finally:
        col.close()


def test_packet_ids_wrap_past_65535(mqtt_broker: Broker) -> None:
    """70,000 messages: ids 1..65535 then 1 again; every PUBACK id is checked against the one sent."""
    with LeanPublisher(mqtt_broker.host, mqtt_broker.port, "lean-wrap") as p:
        for _ in range(70_000):
            p.publish(b"lean/nobody/listens", b"x")
        p.wait_acked(120)
        assert p.acked == 70_000
        assert p.acked == p.sent  # the last PUBACK's id was 70,000 - 65,535, checked on arrival


def test_a_refused_connection_names_the_connack_code(mosquitto_factory: Callable[..., Any]) -> None:
    broker = mosquitto_factory(allow_anonymous=False, users={"dev": "secret"})
    with pytest.raises(PublishError, match="return code 5"):
        LeanPublisher(broker.host, broker.port, "lean-anon")
    with LeanPublisher(broker.host, broker.port, "lean-auth", username="dev", password="secret") as p:
        p.publish(b"lean/auth", b"ok")
        p.wait_acked(10)
        assert p.acked == 1


def test_a_broker_that_stops_answering_is_an_error_not_a_hang(mosquitto_broker: MosquittoBroker) -> None:
    with LeanPublisher(mosquitto_broker.host, mosquitto_broker.port, "lean-pause", inflight=5, timeout=1) as p:
        p.publish(b"lean/pause", b"1")
        p.wait_acked(10)
        mosquitto_broker.pause()  # alive on TCP, answers nothing
        try:
            with pytest.raises(PublishError, match="not PUBACKed within"):
                for _ in range(10):  # the window (5) fills, then the wait for room times out
                    p.publish(b"lean/pause", b"x")
            with pytest.raises(PublishError, match="not PUBACKed within"):
                p.wait_acked(1)
        finally:
            mosquitto_broker.resume()
