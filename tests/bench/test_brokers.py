"""bench/brokers.py: the benchmarks' own Mosquitto (bench/fleet.py, bench/spool_flash.py) accepts a
login once started, and a persistent session's queued message survives stop() / start()."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as paho

from bench.brokers import Mosquitto, connack_code


def session(b: Mosquitto, got: list[bytes], subscribe: bool) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-brokers-test", clean_session=False)
    ready = threading.Event()
    c.on_subscribe = lambda *a: ready.set()
    c.on_connect = lambda *a: None if subscribe else ready.set()
    c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
    c.connect(b.host, b.port)
    c.loop_start()
    if subscribe:
        c.subscribe("bench/t", 1)
    assert ready.wait(10)
    return c


def test_a_queued_message_survives_a_restart(tmp_path: Path) -> None:
    b = Mosquitto(tmp_path / "m")
    b.start()
    try:
        assert connack_code(b.host, b.port) == 0
        got: list[bytes] = []
        c = session(b, got, subscribe=True)
        c.disconnect()
        c.loop_stop()
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-brokers-pub")
        pub.connect(b.host, b.port)
        pub.loop_start()
        pub.publish("bench/t", b"kept", qos=1).wait_for_publish(10)
        pub.disconnect()
        pub.loop_stop()
        port = b.port
        b.stop()
        b.start()
        assert b.port == port
        c = session(b, got, subscribe=False)
        try:
            for _ in range(100):
                if got:
                    break
                threading.Event().wait(0.05)
            assert got == [b"kept"]
        finally:
            c.disconnect()
            c.loop_stop()
    finally:
        b.stop()
