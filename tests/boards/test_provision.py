"""`sqal board provision`: the device's identity in the store the engine's auth callout reads, checked
by a real embedded engine (nats-server + the callout) with paho clients as the devices: the printed
broker URL logs in; --rotate and --revoke apply to the next connection, with no reload of the engine."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from gateway.boards.cli import board_app
from gateway.boards.provision import CredentialStore, ProvisionError
from gateway.credentials import DeviceCredentials, password_hash, password_verify
from tests.fixtures.mqtt import MOSQUITTO_PASSWD_BIN
from tests.security.engine_support import NOT_AUTHORIZED, AuthEngine


@pytest.fixture(scope="module")
async def eng(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AuthEngine]:
    e = AuthEngine(tmp_path_factory.mktemp("provision"))
    await e.start()
    yield e
    await e.stop()


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(board_app, ["provision", *args])
    return res.exit_code, res.output


def printed_url(output: str) -> str:
    line = next(x for x in output.splitlines() if "--broker '" in x)
    url = line.split("--broker '", 1)[1].rstrip("'")
    assert f"  {url}" in output.splitlines()  # also shown on its own line
    return url


def engine_fingerprint(eng: AuthEngine) -> tuple[int | None, int | None, float]:
    """What a reload or restart would change: the engine's and the callout's pids, the config file."""
    return eng.engine.pid, eng.engine.callout_pid, eng.engine.conf.stat().st_mtime


def test_hash_is_mosquittos_format(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    subprocess.run([MOSQUITTO_PASSWD_BIN, "-c", "-b", str(pw), "u", "s3cret"], check=True, capture_output=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert password_verify("s3cret", theirs) and not password_verify("s3creT", theirs)
    ours = password_hash("s3cret")
    assert ours.startswith("$7$101$") and password_verify("s3cret", ours)
    assert password_hash("s3cret") != ours  # fresh salt each time


async def test_the_printed_broker_url_logs_in_with_no_reload(eng: AuthEngine) -> None:
    before = engine_fingerprint(eng)
    code, out = cli("--device-id", "ESP32_PV_01", "--broker-port", str(eng.port), "--data-dir", str(eng.data_dir))
    assert code == 0, out
    url = printed_url(out)
    parts = urlsplit(url)
    assert parts.scheme == "mqtt" and parts.username == "ESP32_PV_01" and parts.port == eng.port
    assert "no reload" in out and "loopback" in out  # 127.0.0.1 is not reachable from a board: said so
    assert parts.password
    dev = eng.device(parts.username, parts.password, parts.username)
    assert dev.accepted
    dev.publish("sqal/v1/ESP32_PV_01/sample", b"hello")
    assert await eng.stored("sqal.v1.ESP32_PV_01.sample") == b"hello"
    assert engine_fingerprint(eng) == before
    again_code, again = cli("--device-id", "ESP32_PV_01", "--data-dir", str(eng.data_dir))
    assert again_code == 1 and "--rotate" in again


async def test_rotate_and_revoke_apply_to_the_next_connection(eng: AuthEngine) -> None:
    before = engine_fingerprint(eng)
    _, out = cli("--device-id", "ESP32_PV_02", "--broker-port", str(eng.port), "--data-dir", str(eng.data_dir))
    old = urlsplit(printed_url(out)).password
    connected = eng.device("ESP32_PV_02", old, "ESP32_PV_02")
    assert connected.accepted
    code, out = cli("--device-id", "ESP32_PV_02", "--rotate", "--broker-port", str(eng.port),
                    "--data-dir", str(eng.data_dir))
    assert code == 0 and "New password" in out, out
    new = urlsplit(printed_url(out)).password
    assert new != old
    assert eng.device("ESP32_PV_02", old, "ESP32_PV_02").rc == NOT_AUTHORIZED
    assert eng.device("ESP32_PV_02", new, "ESP32_PV_02").accepted
    code, out = cli("--device-id", "ESP32_PV_02", "--revoke", "--data-dir", str(eng.data_dir))
    assert code == 0 and "Revoked ESP32_PV_02" in out, out
    assert eng.device("ESP32_PV_02", new, "ESP32_PV_02").rc == NOT_AUTHORIZED
    code, out = cli("--device-id", "ESP32_PV_02", "--revoke", "--data-dir", str(eng.data_dir))
    assert code == 1 and "has no credentials" in out
    assert engine_fingerprint(eng) == before


def test_only_the_store_is_written_private_and_hashed(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "mqtt")
    p = store.provision("ESP32_BS_01", "10.0.0.5", 1884)
    assert p.broker_url == f"mqtt://ESP32_BS_01:{p.password}@10.0.0.5:1884"
    assert store.provision("ESP32_BS_02", "fd00::5", 1883, tls=True).broker_url.endswith("@[fd00::5]:1883")
    assert stat.S_IMODE(os.stat(store.dir).st_mode) == 0o700
    assert sorted(f.name for f in store.dir.iterdir()) == ["users.json", "users.lock"]  # no broker files
    for f in store.dir.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
        assert p.password not in f.read_text(), f.name
    users = json.loads(store.users_path.read_text())
    assert set(users["devices"]) == {"ESP32_BS_01", "ESP32_BS_02"} and "gateway" not in users


def test_entries_written_before_the_move_to_nats_still_verify(tmp_path: Path) -> None:
    d = tmp_path / "mqtt"
    d.mkdir()
    (d / "users.json").write_text(json.dumps({"version": 1, "gateway": {"user": "_sqal_gateway"},
                                              "devices": {"ESP32_OLD_01": {"mosquitto": password_hash("pw1"),
                                                                           "argon2": "$argon2id$..."}}}))
    creds = DeviceCredentials(d)
    assert creds.check("ESP32_OLD_01", "pw1") == "ok"
    assert creds.check("ESP32_OLD_01", "pw2") == "wrong_password"
    assert creds.check("ESP32_NEW_01", "pw1") == "unknown_device"
    CredentialStore(d).provision("ESP32_NEW_01")  # the store carries the old entry over
    assert creds.check("ESP32_OLD_01", "pw1") == "ok"
    (d / "users.json").write_text("{corrupt")
    assert creds.check("ESP32_OLD_01", "pw1") == "store_unreadable"


@pytest.mark.parametrize("bad", ["x", "_gateway", "has space", "a/b", "ESP32/+/#", "a.b.c"])
def test_invalid_device_id_is_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ProvisionError, match="not valid"):
        CredentialStore(tmp_path / "mqtt").provision(bad)


@pytest.mark.parametrize("reserved", ["sqal-gateway", "sqal-device"])
def test_the_engines_own_users_are_not_device_ids(tmp_path: Path, reserved: str) -> None:
    with pytest.raises(ProvisionError, match="reserved"):
        CredentialStore(tmp_path / "mqtt").provision(reserved)


def test_concurrent_provisions_all_land(tmp_path: Path) -> None:
    """The CLI and the gateway's supervisor may write at once: no update is lost."""
    ids = [f"ESP32_CC_{i:02d}" for i in range(12)]
    threads = [threading.Thread(target=CredentialStore(tmp_path / "mqtt").provision, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert CredentialStore(tmp_path / "mqtt").devices() == ids
