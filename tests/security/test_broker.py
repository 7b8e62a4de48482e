"""Device authentication on the message engine: the embedded nats-server with the auth callout child
(gateway/nats/auth_callout.py), real paho MQTT clients as the devices.

A device logs in with its id and its provisioned password, under its own id as MQTT client id; it
publishes only under sqal/v1/<its id>/ and reads only its own commands; it cannot take over another
device's session; provisioning, rotation and revocation apply to the next connection with no reload;
the gateway keeps its own login."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.errors import NoServersError

from gateway.ingest.envelope import Envelope
from gateway.ingest.prepare import prepare
from tests.security.engine_support import NOT_AUTHORIZED, AuthEngine, wait_until

DEV_A, DEV_B, DEV_C = "ESP32_SEC_A1", "ESP32_SEC_B1", "ESP32_SEC_C1"


@pytest.fixture(scope="module")
async def eng(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AuthEngine]:
    e = AuthEngine(tmp_path_factory.mktemp("engine"))
    for d in (DEV_A, DEV_B, DEV_C):
        e.store.provision(d)
    await e.start()
    yield e
    await e.stop()


@pytest.fixture(autouse=True)
def _close_devices(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test's clients go with it: a client left running would reconnect with a password a later test
    rotated (and be counted as refused there)."""
    yield
    if "eng" in request.fixturenames:
        request.getfixturevalue("eng").close_devices()


def password(eng: AuthEngine, device: str) -> str:
    """A fresh password for `device` (rotation), so each test knows the current one."""
    return eng.store.provision(device, rotate=True).password


async def test_provisioned_device_publish_reaches_the_stream(eng: AuthEngine) -> None:
    a = eng.device(DEV_A, password(eng, DEV_A), DEV_A)
    assert a.accepted, a.rc
    payload = b'{"device_id": "%s", "marker": "reach"}' % DEV_A.encode()
    a.publish(f"sqal/v1/{DEV_A}/sample", payload)
    a.publish(f"sqal/v1/{DEV_A}/telemetry", b'{"t": 1}')
    assert await eng.stored(f"sqal.v1.{DEV_A}.sample") == payload
    assert await eng.stored(f"sqal.v1.{DEV_A}.telemetry") == b'{"t": 1}'
    assert wait_until(lambda: eng.callout_state()["accepted"] >= 1)


async def test_wrong_password_unknown_device_and_anonymous_are_refused(eng: AuthEngine) -> None:
    pw_b = password(eng, DEV_B)
    before = eng.callout_state(settled=True)["refused"]
    assert eng.device(DEV_A, "wrong-password", DEV_A).rc == NOT_AUTHORIZED
    assert eng.device(DEV_A, pw_b, DEV_A).rc == NOT_AUTHORIZED  # another device's password
    assert eng.device("ESP32_NOBODY_1", "x", "ESP32_NOBODY_1").rc == NOT_AUTHORIZED
    assert eng.device(None, None, DEV_A).rc == NOT_AUTHORIZED  # anonymous
    assert eng.device("sqal.v1.>", "x", DEV_A).rc == NOT_AUTHORIZED  # not a device id (a subject pattern)
    want = {"wrong_password": 2, "unknown_device": 1, "no_credentials": 1, "invalid_user": 1}
    assert wait_until(lambda: all(eng.refused(k) - before.get(k, 0) == n for k, n in want.items())), \
        eng.callout_state()
    log = (eng.engine.dir / "auth-callout.log").read_text()
    assert f"wrong password for device {DEV_A}" in log and "device ESP32_NOBODY_1 has no credentials" in log


async def test_a_device_cannot_publish_under_another_devices_id(eng: AuthEngine) -> None:
    gw = eng.gateway_mqtt()
    assert gw.accepted and gw.subscribe("sqal/v1/+/#") == [1]
    b = eng.device(DEV_B, password(eng, DEV_B), DEV_B)
    assert b.subscribe(f"sqal/v1/{DEV_B}/cmd") == [1]
    a = eng.device(DEV_C, password(eng, DEV_C), DEV_C)
    forged = b'{"device_id": "%s", "marker": "forged"}' % DEV_B.encode()
    for kind in ("sample", "status", "telemetry", "cmd/result"):
        a.publish(f"sqal/v1/{DEV_B}/{kind}", forged)
    a.publish(f"sqal/v1/{DEV_B}/cmd", b'{"op": "reboot"}')  # a device may not command another
    a.publish("sqal/v1/ESP32_SEC_ZZ/sample", forged)       # nor invent one
    mine = b'{"device_id": "%s", "marker": "mine"}' % DEV_C.encode()
    a.publish(f"sqal/v1/{DEV_C}/sample", mine)
    # the QoS 1 publishes are handled in order on one connection: the forged ones came first
    assert wait_until(lambda: mine in gw.got(f"sqal/v1/{DEV_C}/sample"))
    assert await eng.stored(f"sqal.v1.{DEV_C}.sample") == mine
    for subject in (f"sqal.v1.{DEV_B}.sample", f"sqal.v1.{DEV_B}.status", f"sqal.v1.{DEV_B}.telemetry",
                    f"sqal.v1.{DEV_B}.cmd.result", "sqal.v1.ESP32_SEC_ZZ.sample"):
        assert await eng.stored(subject) is None, subject
    assert not [t for t in gw.topics() if DEV_B in t or "ZZ" in t], gw.messages
    assert b.messages == []


async def test_a_device_cannot_read_another_devices_commands(eng: AuthEngine) -> None:
    b = eng.device(DEV_B, password(eng, DEV_B), DEV_B)
    assert b.subscribe(f"sqal/v1/{DEV_B}/cmd") == [1]
    a = eng.device(DEV_A, password(eng, DEV_A), DEV_A)
    assert a.subscribe(f"sqal/v1/{DEV_A}/cmd") == [1]
    # another device's commands, every device's, everything: refused (SUBACK failure 0x80)
    for topic in (f"sqal/v1/{DEV_B}/cmd", "sqal/v1/+/cmd", "sqal/v1/#", "#"):
        assert a.subscribe(topic) == [0x80], topic
    gw = eng.gateway_mqtt()
    gw.publish(f"sqal/v1/{DEV_B}/cmd", b'{"op": "ping", "n": 1}')
    gw.publish(f"sqal/v1/{DEV_A}/cmd", b'{"op": "ping", "n": 2}')
    assert wait_until(lambda: b.got(f"sqal/v1/{DEV_B}/cmd") == [b'{"op": "ping", "n": 1}'])
    assert wait_until(lambda: a.got(f"sqal/v1/{DEV_A}/cmd") == [b'{"op": "ping", "n": 2}'])
    assert a.topics() == [f"sqal/v1/{DEV_A}/cmd"]  # B's command never reached A


async def test_another_devices_client_id_is_refused_and_the_victim_keeps_its_session(eng: AuthEngine) -> None:
    victim = eng.device(DEV_B, password(eng, DEV_B), DEV_B, clean_session=False)
    assert victim.accepted and victim.subscribe(f"sqal/v1/{DEV_B}/cmd") == [1]
    eng.callout_state(settled=True)
    before = eng.refused("client_id_mismatch")
    # A, with its own valid password, claims B's client id: refused before the engine looks at sessions
    thief = eng.device(DEV_A, password(eng, DEV_A), DEV_B, clean_session=False)
    assert thief.rc == NOT_AUTHORIZED
    assert wait_until(lambda: eng.refused("client_id_mismatch") == before + 1)
    assert "device ESP32_SEC_A1 connected with MQTT client id 'ESP32_SEC_B1'" in \
        (eng.engine.dir / "auth-callout.log").read_text()
    # the victim was never disconnected and its subscription still delivers
    gw = eng.gateway_mqtt()
    gw.publish(f"sqal/v1/{DEV_B}/cmd", b'{"op": "after-takeover-attempt"}')
    assert wait_until(lambda: victim.got(f"sqal/v1/{DEV_B}/cmd") == [b'{"op": "after-takeover-attempt"}'])
    assert victim.disconnects == 0 and victim.c.is_connected()
    assert thief.messages == []


async def test_a_last_will_on_another_devices_topic_is_not_delivered(eng: AuthEngine) -> None:
    """The engine publishes a will with its device's permissions (server/mqtt.go, mqttHandleWill): a will
    on another device's status goes nowhere; one on its own is stored."""
    gw = eng.gateway_mqtt()
    assert gw.subscribe("sqal/v1/+/status") == [1]
    pw = password(eng, DEV_A)
    for topic, payload in ((f"sqal/v1/{DEV_B}/status", b"forged-offline"), (f"sqal/v1/{DEV_A}/status", b"offline")):
        dev = eng.device(DEV_A, pw, DEV_A, will=(topic, payload))
        assert dev.accepted
        dev.c.loop_stop()
        sock = dev.c.socket()
        assert sock is not None
        sock.close()  # the connection drops without a DISCONNECT: the engine sends the will
        eng.devices.remove(dev)
    assert wait_until(lambda: gw.got(f"sqal/v1/{DEV_A}/status") == [b"offline"], 30)
    assert await eng.stored(f"sqal.v1.{DEV_A}.status") == b"offline"
    assert gw.got(f"sqal/v1/{DEV_B}/status") == [] and await eng.stored(f"sqal.v1.{DEV_B}.status") is None


async def test_persistent_session_and_qos1_work_with_the_device_permissions(eng: AuthEngine) -> None:
    """What NATS's MQTT needs beyond the device's subjects: nothing. A QoS 1 subscription is a JetStream
    consumer delivering on $MQTT.sub.<nuid>, which MQTT clients may always subscribe to; commands sent
    while the device is offline wait in its session."""
    pw = password(eng, DEV_C)
    dev = eng.device(DEV_C, pw, DEV_C, clean_session=False)
    assert dev.subscribe(f"sqal/v1/{DEV_C}/cmd", qos=1) == [1]
    dev.close()
    gw = eng.gateway_mqtt()
    gw.publish(f"sqal/v1/{DEV_C}/cmd", b'{"op": "queued-while-offline"}')
    again = eng.device(DEV_C, pw, DEV_C, clean_session=False)
    assert again.accepted and again.session_present
    assert wait_until(lambda: again.got(f"sqal/v1/{DEV_C}/cmd") == [b'{"op": "queued-while-offline"}'])


async def test_rotation_and_revocation_apply_to_the_next_connection(eng: AuthEngine) -> None:
    old = password(eng, DEV_A)
    live = eng.device(DEV_A, old, DEV_A)
    assert live.accepted
    live.close()
    new = password(eng, DEV_A)  # rotation: no reload of anything
    assert eng.device(DEV_A, old, DEV_A).rc == NOT_AUTHORIZED
    assert eng.device(DEV_A, new, DEV_A).accepted
    eng.store.revoke(DEV_A)
    assert eng.device(DEV_A, new, DEV_A).rc == NOT_AUTHORIZED
    eng.store.provision(DEV_A)  # provisioning again works at once too
    assert eng.device(DEV_A, password(eng, DEV_A), DEV_A).accepted


async def test_the_gateways_login(eng: AuthEngine) -> None:
    """The gateway's user is the engine's own (in auth_users: never sent to the callout): any client id,
    every device's messages, commands to any device; a wrong gateway password is refused by the engine."""
    before = eng.callout_state(settled=True)
    gw = eng.gateway_mqtt("sqal-dispatch-test")
    assert gw.accepted
    assert gw.subscribe("sqal/v1/+/sample") == [1]
    dev = eng.device(DEV_B, password(eng, DEV_B), DEV_B)
    assert dev.subscribe(f"sqal/v1/{DEV_B}/cmd") == [1]
    dev.publish(f"sqal/v1/{DEV_B}/sample", b"s")
    gw.publish(f"sqal/v1/{DEV_B}/cmd", b"c")
    assert wait_until(lambda: gw.got(f"sqal/v1/{DEV_B}/sample") == [b"s"] and dev.got(f"sqal/v1/{DEV_B}/cmd") == [b"c"])
    user, _ = eng.engine.gateway_credentials()
    assert eng.device(user, "wrong", "sqal-dispatch-x").rc == NOT_AUTHORIZED
    with pytest.raises((NoServersError, nats.errors.Error)):  # the engine refuses: 'Authorization Violation'
        await nats.connect(eng.engine.url, user=user, password="wrong", allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=2)
    after = eng.callout_state(settled=True)
    assert after["refused"] == before["refused"]  # the engine's own users never reach the callout
    assert after["accepted"] == before["accepted"] + 1


async def test_device_credentials_over_the_nats_protocol_are_refused(eng: AuthEngine) -> None:
    eng.callout_state(settled=True)
    before = eng.refused("not_mqtt")
    with pytest.raises((NoServersError, nats.errors.Error)):
        await nats.connect(eng.engine.url, user=DEV_A, password=password(eng, DEV_A), allow_reconnect=False,
                           max_reconnect_attempts=0, connect_timeout=3)
    assert wait_until(lambda: eng.refused("not_mqtt") == before + 1)


def test_gateway_refuses_a_payload_under_another_devices_topic() -> None:
    """Behind the engine's permissions, the ingest's own rule: a payload's id must be its topic's."""
    from tests.gateway.ingest_support import sample_bytes

    env = Envelope("mqtt", f"sqal/v1/{DEV_A}/sample", sample_bytes(DEV_B, seq=3), datetime.now(UTC))
    p = prepare(env)
    assert p.kind == "reject" and p.reject is not None
    assert p.reject.reason == f"device_id: payload says '{DEV_B}' but topic says '{DEV_A}'"


# ---- the callout's own process: beside the engine, surviving the gateway -----------------------------------

_GATEWAY = """
import asyncio, sys
from pathlib import Path
from gateway.nats.embedded import EmbeddedNats
async def main():
    d = Path(sys.argv[1])
    e = EmbeddedNats(d, mqtt_port=0, auth_callout={"credentials_dir": str(d / "mqtt")})
    await e.start()
    print(e.pid, e.callout_pid, e.mqtt_bound, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_the_callout_survives_a_killed_gateway_and_is_adopted(tmp_path: Path) -> None:
    eng = AuthEngine(tmp_path)
    pw = eng.store.provision(DEV_A).password
    gateway = await asyncio.to_thread(subprocess.Popen, [sys.executable, "-c", _GATEWAY, str(tmp_path)],
                                      stdout=subprocess.PIPE, text=True)
    try:
        assert gateway.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(gateway.stdout.readline), 60)
        engine_pid, callout_pid, port = (int(x) for x in line.split())
        os.kill(gateway.pid, signal.SIGKILL)  # the gateway dies without stopping anything
        gateway.wait()
        for pid in (engine_pid, callout_pid):
            os.kill(pid, 0)  # both still run (their own sessions)
        eng.engine.mqtt_bound = port
        assert eng.device(DEV_A, pw, DEV_A).accepted  # and devices still log in
        await eng.start()  # the next gateway start
        assert eng.engine.adopted and eng.engine.callout_adopted
        assert (eng.engine.pid, eng.engine.callout_pid) == (engine_pid, callout_pid)
        assert eng.device(DEV_A, pw, DEV_A).accepted
        assert eng.device(DEV_A, "wrong", DEV_A).rc == NOT_AUTHORIZED
        await eng.stop()
        assert wait_until(lambda: _gone(engine_pid) and _gone(callout_pid))  # stopped with the engine
    finally:
        if gateway.poll() is None:
            gateway.kill()
        await eng.engine.stop()


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
async def test_a_dead_callout_is_restarted_by_the_next_start(tmp_path: Path) -> None:
    eng = AuthEngine(tmp_path)
    pw = eng.store.provision(DEV_A).password
    await eng.start()
    again = AuthEngine(tmp_path)
    try:
        first = eng.engine.callout_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert eng.device(DEV_A, pw, DEV_A).rc == NOT_AUTHORIZED  # nobody answers the engine's request
        await again.engine.start()
        assert again.engine.adopted and not again.engine.callout_adopted and again.engine.callout_pid != first
        assert again.device(DEV_A, pw, DEV_A).accepted
    finally:
        await eng.stop()
        await again.stop()
