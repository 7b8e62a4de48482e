"""Device credentials: the store `sqal board provision` writes (<data dir>/mqtt/users.json, one
hash per device), the password hash, and the reader every check goes through (the WebSocket
ingest, the engine's auth callout). The reader opens the file at each check, so a provision,
rotation or revocation applies to the next connection without a restart or a reload."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HASH_ITERATIONS = 101       # mosquitto_passwd's default for "$7$"; the passwords are 144 random bits
HASH_SALT_BYTES = 12
# The engine's own users (gateway/nats/embedded.py): never a device's id
GATEWAY_USER = "sqal-gateway"
DEVICES_USER = "sqal-device"  # the boards' shared user when device authentication is off


def password_hash(password: str, salt: bytes | None = None, iterations: int = HASH_ITERATIONS) -> str:
    """$7$<iterations>$<b64 salt>$<b64 PBKDF2-HMAC-SHA512> (Mosquitto 2's password-file format)."""
    salt = salt if salt is not None else os.urandom(HASH_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_verify(password: str, encoded: str) -> bool:
    try:
        _, kind, iterations, salt_b64, digest_b64 = encoded.split("$")
        if kind != "7":
            return False
        salt = base64.b64decode(salt_b64)
        want = base64.b64decode(digest_b64)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8", "surrogateescape"), salt, int(iterations))
    return hmac.compare_digest(got, want)


def reserved_ids() -> frozenset[str]:
    """The engine's own configured users: a device with such an id would never reach the callout."""
    return frozenset({GATEWAY_USER, DEVICES_USER})


def credentials_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "mqtt"


class DeviceCredentials:
    """Checks a device's (id, password) against the CredentialStore's users.json, read on each check so
    a provision, rotation or revocation applies to the next connection without a restart or reload."""

    def __init__(self, directory: Path) -> None:
        self.users_path = Path(directory) / "users.json"

    def _devices(self) -> dict[str, Any] | None:
        """The devices' records; {} when nothing was provisioned; None when the file is unreadable."""
        try:
            data = json.loads(self.users_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s is unreadable (%s): every device login is refused", self.users_path, exc)
            return None
        devices = data.get("devices") if isinstance(data, dict) else None
        if not isinstance(devices, dict):
            log.error("%s has no 'devices' map: every device login is refused", self.users_path)
            return None
        return devices

    def check(self, device_id: str, password: str) -> str:
        """'ok', or why not: 'unknown_device', 'wrong_password', 'store_unreadable'."""
        devices = self._devices()
        if devices is None:
            return "store_unreadable"
        entry = devices.get(device_id)
        if not isinstance(entry, dict):
            return "unknown_device"
        return "ok" if _verify(password_verify, password, entry.get("hash", entry.get("mosquitto"))) \
            else "wrong_password"

    def check_device(self, device_id: str, password: str) -> bool:
        return self.check(device_id, password) == "ok"


def _verify(fn: Callable[[str, str], bool], password: str, encoded: Any) -> bool:
    try:
        return isinstance(encoded, str) and fn(password, encoded)
    except (ValueError, TypeError):  # a damaged hash refuses that login, never crashes the handler
        return False
