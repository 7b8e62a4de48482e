"""The broker fixtures themselves: real brokers that route, restart on the same port, keep
mosquitto's persistence, enforce passwords, and fail loudly when the binary is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from tests.fixtures.mqtt import BrokerError, MosquittoBroker, MqttCollector, mqtt_ping, unique_topic


def _publish(broker: Any, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1, **auth: str) -> None:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2)
    if auth:
        c.username_pw_set(auth["username"], auth["password"])
    c.connect(broker.host, broker.port)
    c.loop_start()
    info = c.publish(topic, payload, qos=qos, retain=retain)
    info.wait_for_publish(timeout=10)
    assert info.is_published()
    c.disconnect()
    c.loop_stop()


def test_broker_routes_messages(mqtt_broker: Any) -> None:
    assert mqtt_broker.url == f"mqtt://127.0.0.1:{mqtt_broker.port}"
    topic = unique_topic()
    col = MqttCollector(mqtt_broker, topic)
    try:
        _publish(mqtt_broker, topic, b"hello")
        assert col.wait_count(1)
        assert col.payloads() == [b"hello"]
    finally:
        col.close()


def test_restart_keeps_port(mqtt_broker: Any) -> None:
    port = mqtt_broker.port
    mqtt_broker.stop()
    with pytest.raises(OSError):
        mqtt_ping(mqtt_broker.host, port)
    mqtt_broker.start()
    assert mqtt_broker.port == port and mqtt_ping(mqtt_broker.host, port) == 0


def test_mosquitto_persistence_survives_restart(mosquitto_broker: MosquittoBroker) -> None:
    topic = unique_topic()
    _publish(mosquitto_broker, topic + "/retained", b"kept", retain=True)
    # a persistent-session subscriber that is offline while a QoS 1 message arrives
    sub = MqttCollector(mosquitto_broker, topic + "/q", client_id="persist-sub", clean_session=False)
    sub.close()
    _publish(mosquitto_broker, topic + "/q", b"queued")
    mosquitto_broker.restart()
    sub = MqttCollector(mosquitto_broker, [topic + "/q", topic + "/retained"], client_id="persist-sub",
                        clean_session=False)
    try:
        assert sub.wait_for(lambda m: {p for _t, p, _r in m} >= {b"queued", b"kept"}), sub.messages
    finally:
        sub.close()


def test_password_file_and_no_anonymous(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    b = mosquitto_factory(allow_anonymous=False, users={"dev": "s3cret"},
                          acl="user dev\ntopic readwrite sqal/#\n")
    assert mqtt_ping(b.host, b.port) == 5  # anonymous: not authorized
    topic = "sqal/" + unique_topic()
    col = MqttCollector(b, topic, username="dev", password="s3cret")
    try:
        _publish(b, topic, b"ok", username="dev", password="s3cret")
        _publish(b, "other/" + unique_topic(), b"denied", username="dev", password="s3cret")
        assert col.wait_count(1)
        assert col.payloads() == [b"ok"]
    finally:
        col.close()


def test_missing_mosquitto_fails_with_clear_message(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="mosquitto not found at /nonexistent/mosquitto: install"):
        MosquittoBroker(tmp_path, binary="/nonexistent/mosquitto")


def test_broker_that_dies_at_start_names_the_log(tmp_path: Path) -> None:
    b = MosquittoBroker(tmp_path / "bad", extra_config=["this_is_not_an_option 1"])
    with pytest.raises(BrokerError, match="exited with"):
        b.start()
