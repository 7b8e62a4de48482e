"""MQTT broker URLs and TLS for the gateway's MQTT client (the dispatcher's commands to the boards,
through the message engine's MQTT listener): mqtt://[user:pass@]host[:port] or mqtts://...
"""

from __future__ import annotations

import ssl
from typing import Any

import paho.mqtt.client as paho
from sqalfw.urls import hide_password, parse_broker_url


class MqttUrlError(ValueError):
    pass


def parse_url(url: str) -> tuple[str, int, bool, str | None, str | None]:
    """-> (host, port, tls, username, password): the firmware's own rule (sqalfw.urls), so that a
    URL the gateway takes is one a board takes too. MqttUrlError names what is wrong."""
    try:
        b = parse_broker_url(url)
    except ValueError as exc:
        raise MqttUrlError(f"MQTT URL {hide_password(url)!r}: {exc}") from None
    return b["host"], b["port"], b["tls"], b["user"], b["password"]


class MqttTlsError(ValueError):
    pass


def tls_context(ca_file: str | None = None, cert_file: str | None = None,
                key_file: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name: against `ca_file`
    (a PEM bundle, for a private CA) or the system's CAs; with a client certificate when `cert_file`
    is set (`key_file`: its key, when not in the same file). A file that cannot be used is an error
    naming it, at start, not a silent failure to connect later."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise MqttTlsError(f"MQTT TLS: cannot load the CA file {ca_file!r} (SQAL_MQTT_CA_FILE): {exc}") from exc
    if cert_file is not None:
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttTlsError(f"MQTT TLS: cannot load the client certificate {cert_file!r} / key {key_file!r} "
                               f"(SQAL_MQTT_CERT_FILE, SQAL_MQTT_KEY_FILE): {exc}") from exc
    elif key_file is not None:
        raise MqttTlsError("MQTT TLS: SQAL_MQTT_KEY_FILE is set without SQAL_MQTT_CERT_FILE")
    return ctx


def apply_tls(client: paho.Client, url: str, tls: bool, ca_file: str | None, cert_file: str | None,
              key_file: str | None) -> None:
    """TLS on `client` for an mqtts:// URL; TLS files given for a plain mqtt:// URL are an error
    (the connection would silently go unencrypted)."""
    if tls:
        client.tls_set_context(tls_context(ca_file, cert_file, key_file))
    elif ca_file or cert_file or key_file:
        raise MqttTlsError(f"MQTT TLS files are set but the broker URL {hide_password(url)!r} is not mqtts://")


def tls_files(settings: Any) -> dict[str, str | None]:
    """ca_file, cert_file and key_file from the gateway settings (SQAL_MQTT_CA_FILE, ...), as the
    MQTT clients take them."""
    out: dict[str, str | None] = {}
    for name in ("ca_file", "cert_file", "key_file"):
        v = getattr(settings, f"mqtt_{name}", None)
        out[name] = str(v) if v else None
    return out
