"""The auth callout's pieces without an engine (request verification, the answers, the keys), and the
command an external engine runs it with (`python -m gateway.nats.auth_callout`), against a real
nats-server configured from its `--print-config`."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import VerifyKey

from gateway.boards.provision import CredentialStore
from gateway.credentials import DeviceCredentials
from gateway.nats import auth_callout as ac
from gateway.nats.subjects import device_subjects
from tests.fixtures.mqtt import free_port
from tests.security.engine_support import NOT_AUTHORIZED, Device, wait_until

DEV = "ESP32_CO_01"


def _b64(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def _claims(token: str) -> dict[str, Any]:
    return dict(json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "==")))


def signed(claims: dict[str, Any], key: ac.NKey, header: dict[str, str] | None = None) -> bytes:
    head = _b64(header or {"typ": "JWT", "alg": "ed25519-nkey"})
    body = _b64(claims)
    return f"{head}.{body}.{base64.urlsafe_b64encode(key.sign(f'{head}.{body}'.encode())).decode().rstrip('=')}" \
        .encode()


def request(server: ac.NKey, *, user: str = DEV, password: str = "pw", mqtt_id: str | None = DEV,
            kind: str = "mqtt", **over: Any) -> dict[str, Any]:
    """Claims shaped like the ones nats-server sends (server/auth_callout.go)."""
    c: dict[str, Any] = {
        "aud": ac.REQUEST_AUDIENCE, "exp": int(time.time()) + 2, "iat": int(time.time()), "iss": server.public,
        "sub": "ACCOUNTKEY", "jti": "x",
        "nats": {"server_id": {"name": "s", "host": "127.0.0.1", "id": server.public, "version": "2.15.1"},
                 "user_nkey": ac.NKey.generate(ac.PREFIX_USER).public,
                 "client_info": {"host": "127.0.0.1", "id": 7, "user": user, "kind": "Client", "type": kind,
                                 **({"mqtt_id": mqtt_id} if mqtt_id is not None else {})},
                 "connect_opts": {"user": user, "pass": password, "protocol": 0},
                 "type": "authorization_request", "version": 2}}
    c.update(over)
    return c


@pytest.fixture
def service(tmp_path: Path) -> tuple[ac.AuthCallout, str]:
    store = CredentialStore(tmp_path / "mqtt")
    pw = store.provision(DEV).password
    return ac.AuthCallout(ac.load_or_create_keys(tmp_path), DeviceCredentials(store.dir)), pw


def test_nkey_encoding_matches_the_nkeys_package() -> None:
    import nkeys  # nats-py[nkeys], a dependency: the callout connects with an nkey seed
    key = ac.NKey.generate(ac.PREFIX_USER)
    theirs = nkeys.from_seed(bytearray(key.seed.encode()))
    assert theirs.public_key.decode() == key.public and key.public.startswith("U")
    assert ac.NKey.generate(ac.PREFIX_ACCOUNT).public.startswith("A")
    assert ac.decode_public(key.public, ac.PREFIX_USER) == bytes(key.signing.verify_key)
    with pytest.raises(ValueError, match="not the expected kind"):
        ac.decode_public(key.public, ac.PREFIX_SERVER)
    broken = key.public[:-3] + ("A" if key.public[-3] != "A" else "B") + key.public[-2:]
    with pytest.raises(ValueError):
        ac.decode_public(broken, ac.PREFIX_USER)


def test_a_valid_request_is_answered_with_the_devices_permissions_only(service: Any) -> None:
    svc, pw = service
    server = ac.NKey.generate(ac.PREFIX_SERVER)
    req = request(server, password=pw)
    d = svc.authorize(signed(req, server))
    assert d.device_id == DEV and d.refusal is None
    resp = d.response.decode()
    rc = _claims(resp)
    issuer = svc.keys.issuer.public
    assert rc["iss"] == issuer and rc["aud"] == server.public and rc["sub"] == req["nats"]["user_nkey"]
    head, body, sig = resp.split(".")
    VerifyKey(ac.decode_public(issuer, ac.PREFIX_ACCOUNT)).verify(f"{head}.{body}".encode(),
                                                                 base64.urlsafe_b64decode(sig + "=="))
    user = _claims(rc["nats"]["jwt"])
    assert user["iss"] == issuer and user["sub"] == req["nats"]["user_nkey"] and user["aud"] == "SQAL"
    perms = device_subjects(DEV)
    assert user["nats"]["pub"] == {"allow": perms["publish"]}
    assert user["nats"]["sub"] == {"allow": perms["subscribe"]}
    assert user["nats"]["allowed_connection_types"] == ["MQTT"] and user["nats"]["type"] == "user"
    assert svc.accepted == 1


@pytest.mark.parametrize(("change", "reason"), [
    ({"password": "wrong"}, "wrong_password"),
    ({"user": "ESP32_CO_99", "mqtt_id": "ESP32_CO_99"}, "unknown_device"),
    ({"mqtt_id": "ESP32_CO_02"}, "client_id_mismatch"),
    ({"mqtt_id": None}, "client_id_mismatch"),
    ({"kind": "nats", "mqtt_id": None}, "not_mqtt"),
    ({"user": "", "mqtt_id": ""}, "no_credentials"),
    ({"user": "a.>", "mqtt_id": "a.>"}, "invalid_user"),
])
def test_refusals_carry_their_reason(service: Any, change: dict[str, Any], reason: str) -> None:
    svc, pw = service
    server = ac.NKey.generate(ac.PREFIX_SERVER)
    d = svc.authorize(signed(request(server, **{"password": pw, **change}), server))
    assert d.device_id is None and d.refusal is not None and d.refusal.reason == reason
    rc = _claims(d.response.decode())
    assert "jwt" not in rc["nats"] and rc["nats"]["error"] == d.refusal.message and rc["aud"] == server.public
    assert svc.refused == {reason: 1} and svc.accepted == 0


def test_requests_not_signed_by_the_server_they_name_are_refused(service: Any) -> None:
    svc, pw = service
    server = ac.NKey.generate(ac.PREFIX_SERVER)
    other = ac.NKey.generate(ac.PREFIX_SERVER)
    good = request(server, password=pw)
    token = signed(good, server).decode()
    head, body, sig = token.split(".")
    tampered_claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    tampered_claims["nats"]["connect_opts"]["user"] = "ESP32_CO_02"
    cases = {
        "tampered payload": f"{head}.{_b64(tampered_claims)}.{sig}".encode(),
        "signed by another server key": signed(dict(good, iss=other.public), other),
        "signed by an account key": signed(dict(good, iss=svc.keys.issuer.public), svc.keys.issuer),
        "wrong audience": signed(dict(good, aud="someone-else"), server),
        "expired": signed(dict(good, exp=int(time.time()) - 60), server),
        "not a request": signed(dict(good, nats=dict(good["nats"], type="user")), server),
        "other algorithm": signed(good, server, {"typ": "JWT", "alg": "HS256"}),
        "garbage": b"not.a.jwt",
    }
    for name, token_bytes in cases.items():
        d = svc.authorize(token_bytes)
        assert d.refusal is not None and d.refusal.reason == "bad_request" and d.response == b"", name
    assert svc.refused == {"bad_request": len(cases)} and svc.accepted == 0
    assert svc.authorize(signed(good, server)).device_id == DEV  # the untampered one passes


def test_keys_are_made_once_and_private(tmp_path: Path) -> None:
    k1 = ac.load_or_create_keys(tmp_path)
    k2 = ac.load_or_create_keys(tmp_path)
    assert (k1.issuer.public, k1.service.public) == (k2.issuer.public, k2.service.public)
    path = ac.keys_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = ac.external_config(k1)
    assert k1.issuer.public in cfg and k1.service.public in cfg
    assert k1.issuer.seed not in cfg and k1.service.seed not in cfg  # public keys only


def test_the_command_for_an_external_engine(tmp_path: Path) -> None:
    """`--print-config` gives what the engine needs; the command serves it; a device logs in."""
    data = tmp_path / "data"
    pw = CredentialStore(data / "mqtt").provision(DEV).password
    out = subprocess.run([sys.executable, "-m", "gateway.nats.auth_callout", "--data-dir", str(data),
                          "--print-config"], capture_output=True, text=True, check=True).stdout
    from gateway.nats.embedded import nats_server_binary

    nats_port, mqtt_port = free_port(), free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text("\n".join([
        f'listen: "127.0.0.1:{nats_port}"', "server_name: ext-test",
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}', f'mqtt {{ listen: "127.0.0.1:{mqtt_port}" }}',
        out.replace("CHANGE-ME", "gw-secret")]))
    server = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    service = subprocess.Popen([sys.executable, "-m", "gateway.nats.auth_callout", "--data-dir", str(data),
                                "--server", f"nats://127.0.0.1:{nats_port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    try:
        state = data / "nats" / ac.STATE_FILE
        assert wait_until(lambda: state.exists() and json.loads(state.read_text()).get("connected"), 30)
        ok = Device(mqtt_port, DEV, pw, DEV)
        bad = Device(mqtt_port, DEV, pw, "ESP32_CO_02")
        gw = Device(mqtt_port, "sqal-gateway", "gw-secret", "sqal-dispatch-1")
        assert (ok.rc, bad.rc, gw.rc) == (0, NOT_AUTHORIZED, 0)
        for c in (ok, bad, gw):
            c.close()
    finally:
        for p in (service, server):
            p.terminate()
            p.wait(20)
    assert service.returncode == 0 and not json.loads(state.read_text())["connected"]
