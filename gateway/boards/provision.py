"""MQTT credentials for devices, and the broker files that enforce them.

The store is a directory under the SQAL data dir (default <data_dir>/mqtt, every file 0600):

    users.json         device id -> password hashes (never the password): mosquitto's PBKDF2-SHA512
                       "$7$" form and an Argon2 hash for amqtt; plus the gateway's user
    gateway.json       the gateway's own user and password (the gateway must present it, so it is
                       the one secret kept in clear; 0600, never printed)
    passwd, acl        Mosquitto password file and ACL, regenerated from users.json on every change
    mosquitto.conf     snippet to include in a Mosquitto config (password_file, acl_file, no anonymous)
    amqtt.json         the embedded amqtt broker's plugin config (FileAuthPlugin + topic ACL)
    amqtt_passwd       its password file (Argon2 hashes)

A device's password is shown once, when provisioned (or rotated), inside the --broker URL to give
to `sqal board deploy`; it is stored nowhere in clear on the host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.boards import BoardError

GATEWAY_USER = "_sqal_gateway"  # a leading "_" can never be a device id, so no clash
MOSQUITTO_ITERATIONS = 101      # mosquitto_passwd's default for "$7$"
MOSQUITTO_SALT_BYTES = 12
PASSWORD_BYTES = 18             # 24 URL-safe characters
GATEWAY_READS = ("sample", "status", "telemetry", "cmd/result")


class ProvisionError(BoardError):
    pass


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """Mosquitto 2.x password-file hash: $7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512>."""
    salt = salt if salt is not None else os.urandom(MOSQUITTO_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_verify(password: str, encoded: str) -> bool:
    try:
        _, kind, iterations, salt_b64, digest_b64 = encoded.split("$")
        if kind != "7":
            return False
        salt = base64.b64decode(salt_b64)
        want = base64.b64decode(digest_b64)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(iterations))
    return hmac.compare_digest(got, want)


def argon2_hash(password: str) -> str:
    """The hash amqtt's FileAuthPlugin verifies (it uses pwdlib's Argon2 hasher)."""
    from pwdlib.hashers.argon2 import Argon2Hasher

    return Argon2Hasher().hash(password)


def valid_device_id(device_id: str) -> bool:
    from sqalfw.config import valid_device_id as fw_valid  # the same rule the firmware applies

    return bool(fw_valid(device_id))


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (never a moment with wider rights)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Provisioned:
    device_id: str
    password: str
    broker_url: str  # what to pass to `sqal board deploy --broker` (contains the password)
    rotated: bool


class CredentialStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.users_path = directory / "users.json"
        self.gateway_path = directory / "gateway.json"

    # --- state ------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.users_path.read_text())
        except FileNotFoundError:
            return {"version": 1, "devices": {}, "gateway": None}
        except ValueError as e:
            raise ProvisionError(f"{self.users_path} is corrupt ({e}): restore it from a backup or "
                                 "delete it and provision every device again") from None
        return data

    def _save(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        _write_private(self.users_path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def devices(self) -> list[str]:
        return sorted(self._load()["devices"])

    def gateway_credentials(self) -> tuple[str, str]:
        """The gateway's (user, password), created on first use."""
        data = self._load()
        if data.get("gateway") and self.gateway_path.exists():
            g = json.loads(self.gateway_path.read_text())
            return g["username"], g["password"]
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        data["gateway"] = {"user": GATEWAY_USER, "mosquitto": mosquitto_hash(password),
                           "argon2": argon2_hash(password)}
        self._save(data)
        _write_private(self.gateway_path, json.dumps({"username": GATEWAY_USER, "password": password}) + "\n")
        return GATEWAY_USER, password

    # --- provisioning -----------------------------------------------------------------------------
    def provision(self, device_id: str, broker_host: str = "127.0.0.1", broker_port: int = 1883,
                  *, rotate: bool = False, tls: bool = False, simulated: bool = False) -> Provisioned:
        if not valid_device_id(device_id):
            raise ProvisionError(f"device id {device_id!r} is not valid: 3-48 characters [A-Za-z0-9_-], "
                                 "starting with a letter or digit (e.g. ESP32_LL_01)")
        self.gateway_credentials()
        data = self._load()
        exists = device_id in data["devices"]
        if exists and not rotate:
            raise ProvisionError(f"device {device_id} already has credentials: pass --rotate to issue a new "
                                 "password (the old one stops working once the broker reloads its files)")
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        data["devices"][device_id] = {
            "mosquitto": mosquitto_hash(password),
            "argon2": argon2_hash(password),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if simulated:
            data["devices"][device_id]["simulated"] = True
        self._save(data)
        self.write_broker_files()
        scheme = "mqtts" if tls else "mqtt"
        return Provisioned(device_id, password, f"{scheme}://{device_id}:{password}@{broker_host}:{broker_port}",
                           rotated=exists)

    def simulated(self, device_id: str) -> str:
        """A fresh password for an emulated device the gateway's supervisor starts (issued at each
        start: it lives only in that child's environment and its flash dir). An id that belongs to a
        provisioned board is refused: a simulator must never take over a real device's login."""
        if not valid_device_id(device_id):
            raise ProvisionError(f"device id {device_id!r} is not valid")
        record = self._load()["devices"].get(device_id)
        if record is not None and not record.get("simulated"):
            raise ProvisionError(f"device {device_id} is a provisioned board: a simulator cannot use its id "
                                 "(pick another device id)")
        return self.provision(device_id, rotate=True, simulated=True).password

    def revoke(self, device_id: str) -> None:
        data = self._load()
        if data["devices"].pop(device_id, None) is None:
            raise ProvisionError(f"device {device_id} has no credentials")
        self._save(data)
        self.write_broker_files()

    # --- broker files -----------------------------------------------------------------------------
    def write_broker_files(self) -> dict[str, Path]:
        data = self._load()
        gw = data.get("gateway")
        if not gw:
            self.gateway_credentials()
            data = self._load()
            gw = data["gateway"]
        devices: dict[str, dict[str, str]] = data["devices"]
        paths = {name: self.dir / name for name in ("passwd", "acl", "mosquitto.conf", "amqtt.json", "amqtt_passwd")}

        lines = [f"{gw['user']}:{gw['mosquitto']}"] + [f"{d}:{v['mosquitto']}" for d, v in sorted(devices.items())]
        _write_private(paths["passwd"], "\n".join(lines) + "\n")
        _write_private(paths["acl"], mosquitto_acl(gw["user"]))
        _write_private(paths["mosquitto.conf"], (
            "# SQAL device authentication (generated by 'sqal board provision'; do not edit)\n"
            "allow_anonymous false\n"
            f"password_file {paths['passwd']}\n"
            f"acl_file {paths['acl']}\n"
        ))
        alines = [f"{gw['user']}:{gw['argon2']}"] + [f"{d}:{v['argon2']}" for d, v in sorted(devices.items())]
        _write_private(paths["amqtt_passwd"], "\n".join(alines) + "\n")
        _write_private(paths["amqtt.json"], json.dumps(amqtt_plugins(gw["user"], sorted(devices),
                                                                      paths["amqtt_passwd"]), indent=1) + "\n")
        return paths


def mosquitto_acl(gateway_user: str) -> str:
    """The gateway reads every device's topics and writes commands; a device (user name = device id)
    reads and writes only under sqal/v1/<its id>/."""
    out = ["# generated by 'sqal board provision'; do not edit", f"user {gateway_user}"]
    out += [f"topic read sqal/v1/+/{t}" for t in GATEWAY_READS]
    out += ["topic write sqal/v1/+/cmd", "", "# every other user: its own subtree only (%u = user name)",
            "pattern readwrite sqal/v1/%u/#", ""]
    return "\n".join(out)


def amqtt_plugins(gateway_user: str, devices: list[str], password_file: Path) -> dict[str, Any]:
    """amqtt has no ACL patterns: one entry per device."""
    subscribe = {gateway_user: [f"sqal/v1/+/{t}" for t in GATEWAY_READS]}
    publish = {gateway_user: ["sqal/v1/+/cmd"]}
    for d in devices:
        subscribe[d] = [f"sqal/v1/{d}/#"]
        publish[d] = [f"sqal/v1/{d}/#"]
    return {
        "plugins": {
            "amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(password_file)},
            "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {"acl": subscribe, "publish_acl": publish},
        }
    }
