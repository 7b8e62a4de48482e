"""`sqal board provision`: the generated files, checked by a real Mosquitto (and the amqtt broker)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from typer.testing import CliRunner

from gateway.boards.cli import board_app
from gateway.boards.provision import (
    GATEWAY_USER,
    CredentialStore,
    ProvisionError,
    mosquitto_hash,
    mosquitto_verify,
)
from tests.fixtures.mqtt import MOSQUITTO_PASSWD_BIN, AmqttBroker, MosquittoBroker, free_port


class Client:
    """A connected paho client that records what it receives."""

    def __init__(self, port: int, user: str, password: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.rc: paho.ReasonCode | None = None
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, bytes(m.payload)))
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        self.connected.wait(10)

    def _on_connect(self, client: object, userdata: object, flags: object, rc: paho.ReasonCode, props: object = None) -> None:
        self.rc = rc
        self.connected.set()

    @property
    def accepted(self) -> bool:
        return self.rc is not None and not self.rc.is_failure

    def sub(self, topic: str) -> None:
        self.subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self.subscribed.wait(10)

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(port: int, user: str, password: str) -> Client:
        c = Client(port, user, password)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def store(tmp_path: Path) -> CredentialStore:
    return CredentialStore(tmp_path / "data" / "mqtt")


def start_mosquitto(tmp_path: Path, store: CredentialStore) -> MosquittoBroker:
    files = store.write_broker_files()
    b = MosquittoBroker(tmp_path / "mosq", allow_anonymous=False,
                        extra_config=[f"password_file {files['passwd']}", f"acl_file {files['acl']}"])
    b.start()
    return b


def wait_until(pred: Callable[[], bool], timeout: float = 5) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if pred():
            return True
        ev.wait(0.02)
    return pred()


def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run([MOSQUITTO_PASSWD_BIN, "-c", "-b", str(pw), "u", "s3cret"], check=True, capture_output=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert mosquitto_verify("s3cret", theirs) and not mosquitto_verify("s3creT", theirs)
    ours = mosquitto_hash("s3cret")
    assert ours.startswith("$7$101$") and mosquitto_verify("s3cret", ours)
    assert mosquitto_hash("s3cret") != ours  # fresh salt each time


def test_mosquitto_accepts_device_refuses_wrong_password_and_foreign_topics(
    tmp_path: Path, store: CredentialStore, clients: Callable[..., Client]
) -> None:
    a = store.provision("ESP32_LL_01")
    b = store.provision("ESP32_LL_02")
    gw_user, gw_pw = store.gateway_credentials()
    broker = start_mosquitto(tmp_path, store)
    try:
        assert not clients(broker.port, "ESP32_LL_01", a.password + "x").accepted
        assert not clients(broker.port, "nobody", a.password).accepted
        assert not clients(broker.port, "ESP32_LL_01", b.password).accepted

        gw = clients(broker.port, gw_user, gw_pw)
        dev_a = clients(broker.port, "ESP32_LL_01", a.password)
        dev_b = clients(broker.port, "ESP32_LL_02", b.password)
        assert gw.accepted and dev_a.accepted and dev_b.accepted
        gw.sub("sqal/v1/+/sample")
        dev_b.sub("sqal/v1/ESP32_LL_02/cmd")
        dev_a.sub("sqal/v1/ESP32_LL_02/cmd")  # not its own: the broker must not deliver

        dev_a.pub("sqal/v1/ESP32_LL_02/sample", b"forged")  # under another device's id
        dev_a.pub("sqal/v1/ESP32_LL_01/sample", b"mine")
        gw.pub("sqal/v1/ESP32_LL_02/cmd", b"ping")
        assert wait_until(lambda: ("sqal/v1/ESP32_LL_01/sample", b"mine") in gw.got)
        assert wait_until(lambda: ("sqal/v1/ESP32_LL_02/cmd", b"ping") in dev_b.got)
        # the QoS 1 messages above are ordered after the forged one on the same connection
        assert ("sqal/v1/ESP32_LL_02/sample", b"forged") not in gw.got
        assert dev_a.got == []
    finally:
        broker.stop()


def test_rotate_replaces_the_password(tmp_path: Path, store: CredentialStore, clients: Callable[..., Client]) -> None:
    old = store.provision("ESP32_MT_01")
    with pytest.raises(ProvisionError, match="--rotate"):
        store.provision("ESP32_MT_01")
    new = store.provision("ESP32_MT_01", rotate=True)
    assert new.rotated and new.password != old.password
    broker = start_mosquitto(tmp_path, store)
    try:
        assert not clients(broker.port, "ESP32_MT_01", old.password).accepted
        assert clients(broker.port, "ESP32_MT_01", new.password).accepted
    finally:
        broker.stop()


def test_secrets_are_private_and_hashed(store: CredentialStore) -> None:
    p = store.provision("ESP32_BS_01", "10.0.0.5", 1884)
    assert p.broker_url == f"mqtt://ESP32_BS_01:{p.password}@10.0.0.5:1884"
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    for f in store.dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
        if f.name != "gateway.json":
            assert p.password not in f.read_text(), f.name
    assert GATEWAY_USER in (store.dir / "passwd").read_text()


@pytest.mark.parametrize("bad", ["x", "_gateway", "has space", "a/b", "ESP32/+/#"])
def test_invalid_device_id_is_refused(store: CredentialStore, bad: str) -> None:
    with pytest.raises(ProvisionError, match="not valid"):
        store.provision(bad)


_AMQTT = """
import asyncio, json, sys
from amqtt.broker import Broker
port, plugins = int(sys.argv[1]), json.load(open(sys.argv[2]))
config = {"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:%d" % port}}, **plugins}
async def main():
    b = Broker(config)
    await b.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


class ProvisionedAmqtt(AmqttBroker):
    def __init__(self, workdir: Path, plugins: Path) -> None:
        super().__init__(workdir, free_port())
        self.plugins = plugins

    def _command(self) -> list[str]:
        script = self.workdir / "amqtt_auth.py"
        script.write_text(_AMQTT)
        return [sys.executable, str(script), str(self.port), str(self.plugins)]


def test_amqtt_config_enforces_the_same_rules(
    tmp_path: Path, store: CredentialStore, clients: Callable[..., Client]
) -> None:
    a = store.provision("ESP32_PX_01")
    store.provision("ESP32_PX_02")
    gw_user, gw_pw = store.gateway_credentials()
    files = store.write_broker_files()
    broker = ProvisionedAmqtt(tmp_path / "amqtt", files["amqtt.json"])
    broker.start()
    try:
        assert not clients(broker.port, "ESP32_PX_01", "wrong").accepted
        gw = clients(broker.port, gw_user, gw_pw)
        dev = clients(broker.port, "ESP32_PX_01", a.password)
        assert gw.accepted and dev.accepted
        gw.sub("sqal/v1/+/sample")
        dev.pub("sqal/v1/ESP32_PX_02/sample", b"forged")
        dev.pub("sqal/v1/ESP32_PX_01/sample", b"mine")
        assert wait_until(lambda: ("sqal/v1/ESP32_PX_01/sample", b"mine") in gw.got)
        assert ("sqal/v1/ESP32_PX_02/sample", b"forged") not in gw.got
    finally:
        broker.stop()


def test_cli_provision_prints_deploy_args_and_writes_files(tmp_path: Path) -> None:
    res = CliRunner().invoke(board_app, ["provision", "--device-id", "ESP32_LS_01", "--broker-host", "10.1.2.3",
                                         "--data-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    users = json.loads((tmp_path / "mqtt" / "users.json").read_text())
    assert list(users["devices"]) == ["ESP32_LS_01"]
    line = next(x for x in res.output.splitlines() if "--broker" in x)
    url = line.split("--broker '", 1)[1].rstrip("'")
    user, rest = url.removeprefix("mqtt://").split(":", 1)
    password = rest.split("@", 1)[0]
    assert user == "ESP32_LS_01" and rest.endswith("@10.1.2.3:1883")
    assert mosquitto_verify(password, users["devices"]["ESP32_LS_01"]["mosquitto"])
    again = CliRunner().invoke(board_app, ["provision", "--device-id", "ESP32_LS_01", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1 and "--rotate" in again.output
