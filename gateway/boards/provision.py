"""Device credentials: the store the message engine's auth callout checks every MQTT login against.

The store is a directory under the SQAL data dir (default <data_dir>/mqtt, mode 0700):

    users.json   device id -> password hash (never the password), 0600. The hash is PBKDF2-SHA512 in
                 Mosquitto 2's "$7$" format (so a site can still paste a line into a Mosquitto
                 password file by hand); entries written before the move to NATS keep it under the
                 key "mosquitto" and still verify.

Nothing else is generated: the engine does not read this file, the auth callout
(gateway/nats/auth_callout.py) does, at each connection. So a provision, a rotation (--rotate) or a
revocation (--revoke) applies to the device's next connection with no engine reload; a device
already connected stays connected until it reconnects. Files that earlier versions generated
(passwd, acl, mosquitto.conf, amqtt.json, amqtt_passwd, gateway.json) are no longer written or read
and can be deleted.

A device's password is shown once, when provisioned (or rotated), inside the broker URL to give to
`sqal board deploy`; it is stored nowhere in clear on the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.boards import BoardError
from gateway.credentials import password_hash, reserved_ids

PASSWORD_BYTES = 18         # 24 URL-safe characters


class ProvisionError(BoardError):
    pass


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
        self.dir = Path(directory)
        self.users_path = self.dir / "users.json"
        self.lock_path = self.dir / "users.lock"

    # --- state ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (the CLI and the gateway's supervisor may both write)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.users_path.read_text())
        except FileNotFoundError:
            return {"version": 2, "devices": {}}
        except ValueError as e:
            raise ProvisionError(f"{self.users_path} is corrupt ({e}): restore it from a backup or "
                                 "delete it and provision every device again") from None
        if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
            raise ProvisionError(f"{self.users_path} has no 'devices' map: restore it from a backup or "
                                 "delete it and provision every device again")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        data["version"] = 2
        data.pop("gateway", None)  # the Mosquitto-era gateway login: the engine has its own users
        _write_private(self.users_path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def devices(self) -> list[str]:
        return sorted(self._load()["devices"])

    # --- provisioning -----------------------------------------------------------------------------
    def provision(self, device_id: str, broker_host: str = "127.0.0.1", broker_port: int = 1883,
                  *, rotate: bool = False, tls: bool = False, simulated: bool = False) -> Provisioned:
        if not valid_device_id(device_id):
            raise ProvisionError(f"device id {device_id!r} is not valid: 3-48 characters [A-Za-z0-9_-], "
                                 "starting with a letter or digit (e.g. ESP32_LL_01)")
        if device_id in reserved_ids():
            raise ProvisionError(f"device id {device_id!r} is reserved for the message engine's own users: "
                                 "pick another device id")
        with self._locked():
            data = self._load()
            exists = device_id in data["devices"]
            if exists and not rotate:
                raise ProvisionError(f"device {device_id} already has credentials: pass --rotate to issue a "
                                     "new password (the old one stops working at the device's next connection)")
            password = secrets.token_urlsafe(PASSWORD_BYTES)
            record: dict[str, Any] = {"hash": password_hash(password),
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if simulated:
                record["simulated"] = True
            data["devices"][device_id] = record
            self._save(data)
        scheme = "mqtts" if tls else "mqtt"
        host = f"[{broker_host}]" if ":" in broker_host else broker_host
        return Provisioned(device_id, password, f"{scheme}://{device_id}:{password}@{host}:{broker_port}",
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
        """The device's next connection is refused (one already connected stays until it reconnects)."""
        with self._locked():
            data = self._load()
            if data["devices"].pop(device_id, None) is None:
                raise ProvisionError(f"device {device_id} has no credentials")
            self._save(data)
