"""sqalfw.mqtt against real brokers (Mosquitto and NATS's MQTT listener).

Device-side behaviour runs the client on the real MicroPython interpreter in a child process
(the way it runs in the emulated fleet); argument checks, bounds and backoff maths also run
in-process under CPython, where the same module works unchanged.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from sqalfw.backoff import Backoff
from sqalfw.link import Resolver
from sqalfw.mqtt import MQTTClient, MQTTError

from tests.fixtures.micropython import micropython_binary, micropython_path
from tests.fixtures.mqtt import MosquittoBroker, MqttCollector, unique_topic


class Device:
    """A MicroPython child process whose stdout lines are read as they come."""

    def __init__(self, code: str, tmp_path: Path, heap: str = "110k") -> None:
        script = tmp_path / f"dev_{os.urandom(3).hex()}.py"
        script.write_text(code)
        self.proc = subprocess.Popen(
            [micropython_binary(), "-X", f"heapsize={heap}", str(script)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, MICROPYPATH=micropython_path()),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pending: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<EOF>")

    def expect(self, prefix: str, timeout: float = 15) -> str:
        """The next line starting with prefix; other lines stay available to later expects."""
        for i, line in enumerate(self.pending):
            if line.startswith(prefix):
                return self.pending.pop(i)
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r} within {timeout}s; got:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line == "<EOF>":
                raise AssertionError(f"device exited before {prefix!r}:\n" + "\n".join(self.seen))
            if line.startswith(prefix):
                return line
            self.pending.append(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def devices(tmp_path: Path) -> Any:
    started: list[Device] = []

    def start(code: str, heap: str = "110k") -> Device:
        d = Device(code, tmp_path, heap)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


PRELUDE = """
import asyncio
from sqalfw.mqtt import MQTTClient
from sqalfw.backoff import Backoff
def counters(c):
    k = c.counters()
    return " ".join("%s=%d" % (n, k[n]) for n in sorted(k))
"""


def _counters(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in (p.split("=") for p in line.split()[1:])}


def test_publish_qos1_subscribe_and_birth(mqtt_broker: Any, devices: Any) -> None:
    base = unique_topic("sqal")
    col = MqttCollector(mqtt_broker, [base + "/data", base + "/status"])
    dev = devices(PRELUDE + f"""
async def main():
    c = MQTTClient("dev-pub", "127.0.0.1", {mqtt_broker.port}, keepalive=10,
                   will=("{base}/status", "offline", True, 1), birth=("{base}/status", "online", True, 1))
    c.set_callback(lambda t, p: print("RX", t, p.decode()))
    c.subscribe("{base}/cmd", 1)
    asyncio.create_task(c.run())
    assert await c.wait_connected(10) and await c.wait_subscribed(10)
    print("READY")
    for i in range(5):
        print("PUB", i, await c.publish("{base}/data", b"m%d" % i, qos=1))
    while c.received < 3:
        await asyncio.sleep(0.05)
    print("COUNTERS", counters(c))
    await c.disconnect()
asyncio.run(main())
""")
    try:
        dev.expect("READY")
        for i in range(3):
            info = col.client.publish(base + "/cmd", f"cmd{i}", qos=1)
            info.wait_for_publish(5)
        for i in range(5):
            assert dev.expect("PUB") == f"PUB {i} True"
        assert [dev.expect("RX") for _ in range(3)] == [f"RX {base}/cmd cmd{i}" for i in range(3)]
        k = _counters(dev.expect("COUNTERS"))
        assert k["acked"] == 5 and k["sent"] == 5 and k["received"] == 3 and k["inflight"] == 0
        assert col.wait_for(lambda m: len([x for x in m if x[0].endswith("/data")]) == 5)
        assert col.payloads(base + "/data") == [b"m%d" % i for i in range(5)]
        # birth first, then the graceful disconnect publishes the retained offline itself
        assert col.wait_for(lambda m: col.payloads(base + "/status") == [b"online", b"offline"])
    finally:
        col.close()


def test_last_will_when_device_dies(mqtt_broker: Any, devices: Any) -> None:
    st = unique_topic("sqal") + "/status"
    col = MqttCollector(mqtt_broker, st)
    dev = devices(PRELUDE + f"""
async def main():
    c = MQTTClient("dev-will", "127.0.0.1", {mqtt_broker.port}, keepalive=10,
                   will=("{st}", "offline", True, 1), birth=("{st}", "online", True, 1))
    asyncio.create_task(c.run())
    await c.wait_connected(10)
    print("UP")
    await asyncio.sleep(60)
asyncio.run(main())
""")
    try:
        dev.expect("UP")
        assert col.wait_for(lambda m: col.payloads() == [b"online"])
        dev.kill()  # power cut: no DISCONNECT, the broker must publish the will
        assert col.wait_for(lambda m: col.payloads() == [b"online", b"offline"]), col.messages
    finally:
        col.close()
    late = MqttCollector(mqtt_broker, st)  # a newcomer sees the retained state
    try:
        assert late.wait_count(1)
        assert late.messages[0][1:] == (b"offline", True)
    finally:
        late.close()


def test_keepalive_pings_hold_an_idle_link(mqtt_broker: Any, devices: Any) -> None:
    dev = devices(PRELUDE + f"""
async def main():
    c = MQTTClient("dev-ka", "127.0.0.1", {mqtt_broker.port}, keepalive=1)
    asyncio.create_task(c.run())
    await c.wait_connected(10)
    await asyncio.sleep(4)   # idle for 4 keepalive periods: a broker drops us at 1.5 without pings
    print("COUNTERS", counters(c), "up=%d" % c.isconnected())
asyncio.run(main())
""")
    k = _counters(dev.expect("COUNTERS"))
    assert k["up"] == 1 and k["disconnects"] == 0 and k["connects"] == 1
    assert k["pings"] >= 3 and k["pongs"] >= 3 and k["ping_timeouts"] == 0


def test_dead_broker_detected_then_unacked_messages_resent_with_dup(
    mosquitto_broker: MosquittoBroker, devices: Any
) -> None:
    topic = unique_topic("sqal")
    col = MqttCollector(mosquitto_broker, topic, client_id="dead-sub", clean_session=False)
    dev = devices(PRELUDE + f"""
async def pub(c, i):
    print("ACK", i, await c.publish("{topic}", b"%d" % i, qos=1))
async def main():
    c = MQTTClient("dev-dead", "127.0.0.1", {mosquitto_broker.port}, keepalive=1, connect_timeout=1,
                   backoff=Backoff(0.1, 0.5, seed=1), max_inflight=4)
    asyncio.create_task(c.run())
    await c.wait_connected(10)
    print("UP")
    await asyncio.sleep(0.5)
    for i in range(6):
        asyncio.create_task(pub(c, i))
    while c.isconnected():
        await asyncio.sleep(0.05)
    print("DOWN", counters(c))
    while c.acked < 6:
        await asyncio.sleep(0.05)
    print("DONE", counters(c))
asyncio.run(main())
""")
    try:
        dev.expect("UP")
        mosquitto_broker.pause()  # alive on TCP, answers nothing: PUBACKs and PINGRESPs stop
        try:
            down = _counters(dev.expect("DOWN", timeout=15))
        finally:
            mosquitto_broker.resume()
        assert down["ping_timeouts"] >= 1 and down["inflight"] == 4 and down["acked"] == 0
        done = _counters(dev.expect("DONE", timeout=30))
        assert done["reconnects"] >= 1 and done["retransmitted"] >= 4 and done["acked"] == 6
        assert col.wait_for(lambda m: {p for _t, p, _r in m} == {b"%d" % i for i in range(6)})
    finally:
        col.close()


def test_broker_restart_with_qos1_in_flight_delivers_everything(
    mosquitto_broker: MosquittoBroker, devices: Any
) -> None:
    n = 300
    topic = unique_topic("sqal")
    col = MqttCollector(mosquitto_broker, topic, client_id="restart-sub", clean_session=False)
    dev = devices(PRELUDE + f"N, TOPIC, PORT = {n}, {topic!r}, {mosquitto_broker.port}\n" + """
nxt = [0]
async def worker(c):
    # a few concurrent publishers keep the in-flight window full (bounded like the app)
    while nxt[0] < N:
        i = nxt[0]
        nxt[0] += 1
        assert await c.publish(TOPIC, b"%d" % i, qos=1)
        if i == 60:
            print("HALFWAY")
        await asyncio.sleep(0.005)
async def main():
    c = MQTTClient("dev-restart", "127.0.0.1", PORT, keepalive=5, connect_timeout=2,
                   backoff=Backoff(0.05, 0.5, seed=7), max_inflight=8)
    asyncio.create_task(c.run())
    await c.wait_connected(10)
    await asyncio.gather(*[worker(c) for _ in range(8)])
    print("DONE", counters(c))
asyncio.run(main())
""")
    try:
        dev.expect("HALFWAY")
        mosquitto_broker.restart()  # same port, persistence kept (the subscriber's queue too)
        done = _counters(dev.expect("DONE", timeout=60))
        assert done["acked"] == n and done["reconnects"] >= 1 and done["inflight"] == 0
        want = {b"%d" % i for i in range(n)}
        assert col.wait_for(lambda m: {p for _t, p, _r in m} >= want, timeout=20), (
            sorted(want - {p for _t, p, _r in col.messages})[:20]
        )
    finally:
        col.close()


def test_oversized_incoming_message_is_skipped_and_acked(mqtt_broker: Any, devices: Any) -> None:
    topic = unique_topic("sqal")
    dev = devices(PRELUDE + f"""
async def main():
    c = MQTTClient("dev-big", "127.0.0.1", {mqtt_broker.port}, keepalive=10, max_packet=256)
    c.set_callback(lambda t, p: print("RX", len(p)))
    c.subscribe("{topic}", 1)
    asyncio.create_task(c.run())
    await c.wait_connected(10)
    await c.wait_subscribed(10)
    print("READY")
    while c.received < 1:
        await asyncio.sleep(0.05)
    print("COUNTERS", counters(c))
asyncio.run(main())
""")
    dev.expect("READY")
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    pub.connect(mqtt_broker.host, mqtt_broker.port)
    pub.loop_start()
    try:
        pub.publish(topic, b"x" * 5000, qos=1).wait_for_publish(5)
        pub.publish(topic, b"small", qos=1).wait_for_publish(5)
        assert dev.expect("RX") == "RX 5"
        k = _counters(dev.expect("COUNTERS"))
        assert k["oversize"] == 1 and k["disconnects"] == 0 and k["connects"] == 1
    finally:
        pub.disconnect()
        pub.loop_stop()


# ---- in-process (CPython) ----


async def test_refused_connection_names_the_reason(mosquitto_factory: Any) -> None:
    b = mosquitto_factory(allow_anonymous=False, users={"dev": "right"})
    c = MQTTClient("dev-auth", "127.0.0.1", b.port, user="dev", password="wrong", connect_timeout=5)
    with pytest.raises(MQTTError, match=r"refused connection: rc=5 \(not authorized\)"):
        await c.connect()
    ok = MQTTClient("dev-auth", "127.0.0.1", b.port, user="dev", password="right", connect_timeout=5)
    await ok.connect()
    assert ok.isconnected()
    await ok.disconnect()


async def test_publish_timeout_withdraws_and_inflight_is_bounded(mosquitto_broker: MosquittoBroker) -> None:
    c = MQTTClient("dev-bound", "127.0.0.1", mosquitto_broker.port, keepalive=30, max_inflight=3)
    await c.connect()
    mosquitto_broker.pause()
    try:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, c.counters()["inflight"])
                await asyncio.sleep(0.01)

        w = asyncio.create_task(watch())
        results = await asyncio.gather(*(c.publish("t/bound", b"%d" % i, timeout=0.5) for i in range(10)))
        w.cancel()
    finally:
        mosquitto_broker.resume()
    assert results == [False] * 10  # nothing acked by a frozen broker
    assert 1 <= peak <= 3 and c.counters()["inflight"] == 0  # withdrawn, never more than the window
    assert await c.publish("t/bound", b"after", timeout=5) is True
    await c.disconnect()


async def test_link_down_means_no_attempts_and_dns_only_when_an_address_failed(mqtt_broker: Any) -> None:
    lookups: list[str] = []

    def counting(host: str, port: int, *a: Any) -> Any:
        lookups.append(host)
        return socket.getaddrinfo(host, port, *a)

    link = {"up": False}
    c = MQTTClient("dev-link", "localhost", mqtt_broker.port, keepalive=30, link_poll_s=0.02,
                   backoff=Backoff(0.02, 0.05, seed=3), is_link_up=lambda: link["up"], resolver=Resolver(counting))
    task = asyncio.create_task(c.run())
    try:
        await asyncio.sleep(0.3)
        assert lookups == [] and c.connects == 0 and c.connect_failures == 0  # WiFi down: stay quiet
        link["up"] = True
        assert await c.wait_connected(5)
        assert lookups == ["localhost"]
        # the broker goes away and comes back: the first attempt uses the cached address; each
        # attempt that failed makes the next one look the name up again (it may have moved)
        mqtt_broker.stop()
        await asyncio.sleep(0.4)
        mqtt_broker.start()
        for _ in range(200):
            if c.isconnected() and c.reconnects >= 1:
                break
            await asyncio.sleep(0.05)
        assert c.reconnects == 1 and len(lookups) == 1 + c.connect_failures
    finally:
        await c.disconnect()
        task.cancel()


async def test_no_attempt_while_held_and_the_reason_logged_once() -> None:
    attempts: list[tuple[str, int]] = []
    logged: list[str] = []

    async def refused(host: str, port: int, **kw: Any) -> Any:
        attempts.append((host, port))
        raise OSError(111, "refused")

    why: dict[str, str | None] = {"now": "TLS: waiting for the clock to be set (NTP) before connecting"}
    c = MQTTClient("dev-hold", "192.0.2.7", 8883, link_poll_s=0.02, backoff=Backoff(0.02, 0.05, seed=3),
                   open_connection=refused, log=logged.append, hold=lambda: why["now"])
    task = asyncio.create_task(c.run())
    try:
        await asyncio.sleep(0.3)
        assert attempts == [] and logged == [why["now"]]  # fifteen looks, one line
        why["now"] = None
        for _ in range(100):
            if len(attempts) >= 2:
                break
            await asyncio.sleep(0.02)
        assert attempts[:2] == [("192.0.2.7", 8883)] * 2  # an address literal goes as it is
    finally:
        task.cancel()


def test_resolver_cache_rules() -> None:
    answers: list[Any] = []
    asked: list[str] = []
    logged: list[str] = []

    def gai(host: str, port: int) -> Any:
        asked.append(host)
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))]

    r = Resolver(gai, logged.append, hold_s=60)
    assert r.resolve("10.1.2.3", 1883) == "10.1.2.3" and r.resolve("::1", 1883) == "::1" and asked == []
    answers.append("10.0.0.5")
    assert r.resolve("broker.lan", 1883) == "10.0.0.5"
    assert r.resolve("broker.lan", 1883) == "10.0.0.5" and asked == ["broker.lan"]  # cached: no lookup
    r.failed("broker.lan")  # its address did not answer: look again
    answers.append(OSError(-202))
    assert r.resolve("broker.lan", 1883) == "10.0.0.5"  # the lookup failed: the last good address
    assert "dns: lookup of broker.lan failed" in logged[-1] and "10.0.0.5" in logged[-1]
    assert r.resolve("broker.lan", 1883) == "10.0.0.5" and len(asked) == 2  # held: not looked up again
    answers.append(OSError(-202))
    with pytest.raises(OSError, match="dns: lookup of other.lan failed"):
        r.resolve("other.lan", 1883)
    with pytest.raises(OSError, match="other.lan did not resolve"):
        r.resolve("other.lan", 1883)  # held, nothing cached: fails at once, no lookup
    assert asked == ["broker.lan", "broker.lan", "other.lan"]
    r.hold_s = 0
    r.failed("broker.lan")
    answers.append("10.0.0.9")  # moved
    assert r.resolve("broker.lan", 1883) == "10.0.0.9"


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="wildcards not allowed"):
        asyncio.run(MQTTClient("d1x", "h").publish("a/+/b", b"x"))
    with pytest.raises(ValueError, match="qos must be 0 or 1"):
        asyncio.run(MQTTClient("d1x", "h").publish("a/b", b"x", qos=2))
    with pytest.raises(ValueError, match="exceeds max_packet=128"):
        asyncio.run(MQTTClient("d1x", "h", max_packet=128).publish("a/b", b"x" * 200))
    with pytest.raises(ValueError, match="will must be"):
        MQTTClient("d1x", "h", will=("a", "b", True))
    with pytest.raises(ValueError, match="client_id"):
        MQTTClient("", "h")


def test_backoff_full_jitter_bounds_and_spread() -> None:
    b = Backoff(1.0, 8.0, seed=42)
    windows = []
    for _ in range(8):
        w = b.window()
        d = b.next()
        assert 0 <= d <= w
        windows.append(w)
    assert windows == [1, 2, 4, 8, 8, 8, 8, 8]
    b.reset()
    assert b.window() == 1
    assert [Backoff(1, 60, seed=5).next() for _ in range(2)] == [Backoff(1, 60, seed=5).next()] * 2
    # a fleet of 200 devices losing the broker together: third retries spread over [0, 4 s)
    delays = []
    for dev in range(200):
        fb = Backoff(1.0, 60.0, seed=1000 + dev)
        fb.next(), fb.next()
        delays.append(fb.next())
    buckets = [0] * 8
    for d in delays:
        buckets[min(7, int(d / 0.5))] += 1
    assert all(5 <= n <= 50 for n in buckets), buckets  # no synchronized wave (expected 25 each)


def test_backoff_same_sequence_on_micropython(micropython_run: Any) -> None:
    out = micropython_run("""
from sqalfw.backoff import Backoff
b = Backoff(0.5, 30, seed=12345)
print(" ".join("%.6f" % b.next() for _ in range(10)))
""").stdout.split()
    b = Backoff(0.5, 30, seed=12345)
    assert out == [f"{b.next():.6f}" for _ in range(10)]


def test_fails_over_to_the_next_broker_of_the_list_and_back(mosquitto_factory: Any, devices: Any) -> None:
    # broker_url as a list (the nodes of a cluster): a node that does not answer is left for the next
    # one, round the list; the publishes made meanwhile reach the broker that took over
    a, b = mosquitto_factory(), mosquitto_factory()
    topic = unique_topic("sqal")
    cols = [MqttCollector(x, topic) for x in (a, b)]
    dev = devices(PRELUDE + f"""
async def main():
    c = MQTTClient("dev-fo", "127.0.0.1", {a.port}, keepalive=2, connect_timeout=1,
                   backoff=Backoff(0.1, 0.3, seed=1), alternates=[("127.0.0.1", {b.port})])
    asyncio.create_task(c.run())
    await c.wait_connected(10)
    print("UP", c.port)
    print("PUB", await c.publish("{topic}", b"before", qos=1))
    while not (c.isconnected() and c.port == {b.port}):  # the drop and the failover can take < 50 ms
        await asyncio.sleep(0.05)
    print("UP", c.port)
    print("PUB", await c.publish("{topic}", b"after", qos=1))
asyncio.run(main())
""")
    try:
        assert dev.expect("UP") == f"UP {a.port}"
        assert dev.expect("PUB") == "PUB True"
        a.stop()  # the first node goes away
        assert dev.expect("UP", timeout=30) == f"UP {b.port}"
        assert dev.expect("PUB") == "PUB True"
        assert dev.expect("sqal: mqtt: trying the next broker") == f"sqal: mqtt: trying the next broker, 127.0.0.1:{b.port}"
        assert cols[0].payloads(topic) == [b"before"]
        assert cols[1].wait_for(lambda m: [p for _t, p, _r in m] == [b"after"])
    finally:
        for c in cols:
            c.close()
