"""mqtts:// for the firmware's MQTT client on the real MicroPython, against a real Mosquitto TLS
listener whose CA and server certificate `openssl` makes for this test.

What MicroPython's ssl (mbedtls) verifies, as shown here: the chain up to the CA we load (a server
signed by another CA is refused), the host name against the certificate (a name the certificate
does not carry is refused), and, with CERT_NONE (no ca.pem on flash), nothing at all. The unix
port refuses PEM in load_verify_locations, so the app converts ca.pem to DER (app.pem_to_der)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.micropython import MicroPythonRunner
from tests.fixtures.mqtt import MosquittoBroker, MqttCollector, free_port

OPENSSL = shutil.which("openssl")


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL, "openssl not found (Debian package 'openssl')"
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=SQAL test {name}", cwd=d)


def make_server_cert(d: Path, ca: str, san: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text(f"subjectAltName={san}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


@pytest.fixture
def tls_broker(tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker]) -> tuple[MosquittoBroker, int, Path]:
    """Mosquitto with a plain listener (for the test's subscriber) and a TLS listener; the server
    certificate names only DNS:localhost, so 127.0.0.1 is a name it does not carry."""
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d, "ca")
    make_ca(d, "other")
    make_server_cert(d, "ca", "DNS:localhost")
    tls_port = free_port()
    broker = mosquitto_factory(users={"ESP32_TLS_01": "s3cret"}, allow_anonymous=False, extra_config=[
        f"listener {tls_port} 127.0.0.1", f"cafile {d / 'ca.pem'}", f"certfile {d / 'server.pem'}",
        f"keyfile {d / 'server.key'}"])
    return broker, tls_port, d


CLIENT = """
import asyncio, json, ssl
from sqalfw.app import pem_to_der
from sqalfw.mqtt import MQTTClient

async def attempt(host, ca, user, password):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        with open(ca, "rb") as f:
            ctx.load_verify_locations(cadata=pem_to_der(f.read()))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    c = MQTTClient("ESP32_TLS_01", host, %(port)d, user=user, password=password, ssl=ctx, connect_timeout=5)
    try:
        await c.connect()
    except Exception as e:
        return "refused: %%r" %% (e,)
    ok = await c.publish("sqal/v1/ESP32_TLS_01/sample", "via " + host + " " + str(ca), 1, False, 10)
    await c.disconnect()
    return "published" if ok else "no puback"

async def main():
    for case in %(cases)r:
        print("R " + json.dumps(await attempt(*case)))

asyncio.run(main())
"""


def test_mqtts_verifies_chain_and_host_name(tls_broker: tuple[MosquittoBroker, int, Path],
                                           micropython_run: MicroPythonRunner) -> None:
    broker, tls_port, d = tls_broker
    ca, other = str(d / "ca.pem"), str(d / "other.pem")
    cases = [
        ("localhost", ca, "ESP32_TLS_01", "s3cret"),   # right CA, right name, right password
        ("localhost", other, "ESP32_TLS_01", "s3cret"),  # a server our CA did not sign
        ("127.0.0.1", ca, "ESP32_TLS_01", "s3cret"),   # a name the certificate does not carry
        ("localhost", ca, "ESP32_TLS_01", "wrong"),    # TLS fine, the broker refuses the login
        ("127.0.0.1", None, "ESP32_TLS_01", "s3cret"),  # no ca.pem: encrypted, nothing verified
    ]
    # the test's subscriber logs in on the plain listener (no anonymous access on this broker)
    col = MqttCollector(broker, ["sqal/v1/ESP32_TLS_01/#"], username="ESP32_TLS_01", password="s3cret")
    try:
        out = micropython_run(CLIENT % {"port": tls_port, "cases": cases}, heap="512k")
        res = [json.loads(line[2:]) for line in out.stdout.splitlines() if line.startswith("R ")]
        assert res[0] == "published"
        assert res[1].startswith("refused") and "not correctly signed" in res[1], res[1]
        assert res[2].startswith("refused") and "CN" in res[2], res[2]  # mbedtls: "CN mismatch"
        assert res[3].startswith("refused") and "rc=5" in res[3], res[3]
        assert res[4] == "published"
        assert col.wait_count(2, 10), broker.log()
        assert sorted(col.payloads()) == [b"via 127.0.0.1 None", f"via localhost {ca}".encode()]
    finally:
        col.close()

