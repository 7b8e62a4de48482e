"""Device authentication on the message engine: a NATS auth callout service.

NATS's MQTT listener keys sessions by MQTT client id within an account and has no option binding the
client id to the user, so with plain config users a device that connects with another device's
client id would take over its session (server/mqtt.go, mqttProcessConnect: "Replacing old client
... since both have the same client ID"). The engine's auth callout (server/auth_callout.go) sends
each connection it cannot authenticate from its config to this service, as a server-signed
authorization request JWT carrying the CONNECT's user and password and, for MQTT, the client id
(client_info.mqtt_id). The service:

- verifies the request: an `authorization_request` JWT whose Ed25519 signature checks out under its
  issuer, a server key (N...) equal to the server id it names, addressed to
  `nats-authorization-request`, not expired;
- accepts only MQTT connections whose user name is a device id (the firmware's rule), whose password
  matches the CredentialStore of `sqal board provision` (gateway.credentials.DeviceCredentials, users.json,
  read at each request: provisioning, rotation and revocation apply to the next connection with no
  engine reload), and whose MQTT client id equals that device id;
- answers with an `authorization_response` signed by the callout's account key (the `issuer` of the
  engine's auth_callout block) carrying a user JWT for the SQAL account with exactly
  `device_subjects(id)`: publish sample/status/telemetry/cmd.result under its own id, subscribe to
  its own cmd. Nothing else is needed for MQTT QoS 1 and sessions: the server lets an MQTT client
  subscribe to its own delivery subjects `$MQTT.sub.<nuid>` and `$MQTT.deliver.pubrel.<...>`
  whatever its allow list (server/client.go, canSubscribeInternal), and the session, retained and
  QoS 1 message streams are written by the account's internal client, not under the user's
  permissions (server/mqtt.go, mqttJSA);
- refuses everything else with a reason: an error response (the server logs it and the client gets
  "not authorized": MQTT CONNACK 5), logged here and counted by reason in the state file.

The engine's own users (the gateway's, this service's nkey) are listed in `auth_users` and never come
here. Keys: <data dir>/nats/auth-callout.json (0600, made once): the issuer account seed and the
service's user seed; the engine's configuration holds only their public keys.

Run: beside the embedded engine by gateway.nats.embedded.EmbeddedNats (its own process and session,
like the engine); for an external engine, `python -m gateway.nats.auth_callout --data-dir DIR
--server nats://host:4222` (several may run: they share the queue group), and `--print-config`
prints the accounts and authorization blocks the engine's configuration needs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
import os
import secrets
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.credentials import DeviceCredentials
from gateway.nats.subjects import device_subjects

log = logging.getLogger(__name__)

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"        # where the engine sends authorization requests
REQUEST_AUDIENCE = "nats-authorization-request"
QUEUE = "sqal-auth-callout"                 # several services share the requests
AUTH_ACCOUNT = "AUTH"                       # the callout's own account: nobody else is in it
DEVICES_ACCOUNT = "SQAL"                    # where authorized devices are placed
KEYS_FILE = "auth-callout.json"
STATE_FILE = "auth-callout.state.json"
LOG_FILE = "auth-callout.log"
CLOCK_LEEWAY_S = 2                          # request expiry is whole seconds, set by the engine's clock
MAX_REQUEST_BYTES = 256 * 1024              # a request with client certificates is a few KiB
STATE_WRITE_S = 0.5                         # the state file is written at most this often

# nkey prefix bytes (github.com/nats-io/nkeys, strkey.go)
PREFIX_SEED = 18 << 3
PREFIX_SERVER = 13 << 3
PREFIX_ACCOUNT = 0
PREFIX_USER = 20 << 3

_JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class CalloutError(RuntimeError):
    """The service cannot run: keys, configuration."""


class BadRequest(ValueError):
    """An authorization request that is not a valid, server-signed one: answered with no reason."""


@dataclass
class Refusal(Exception):
    """A connection refused, with a bounded reason key (counted) and a message (logged and sent)."""

    reason: str
    message: str

    def __str__(self) -> str:
        return self.message


# ---- nkeys: Ed25519 keys in NATS's encoding (base32 of prefix + key + CRC-16/XMODEM) -------------------

def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise ValueError(f"{text[:12]!r}...: not base32") from None


def encode_public(prefix: int, key: bytes) -> str:
    body = bytes([prefix]) + key
    return _b32(body + crc16(body).to_bytes(2, "little"))


def decode_public(text: str, prefix: int) -> bytes:
    """The 32 raw bytes of a public nkey of the given kind; ValueError names what is wrong."""
    raw = _unb32(text)
    if len(raw) != 35:
        raise ValueError(f"public key {text[:12]!r}...: {len(raw)} bytes, not 35")
    body, crc = raw[:-2], raw[-2:]
    if crc16(body).to_bytes(2, "little") != crc:
        raise ValueError(f"public key {text[:12]!r}...: checksum mismatch")
    if body[0] != prefix:
        raise ValueError(f"public key {text[:12]!r}...: not the expected kind of key")
    return body[1:]


def encode_seed(prefix: int, seed: bytes) -> str:
    body = bytes([PREFIX_SEED | prefix >> 5, (prefix & 31) << 3]) + seed
    return _b32(body + crc16(body).to_bytes(2, "little"))


def decode_seed(text: str) -> tuple[int, bytes]:
    raw = _unb32(text)
    if len(raw) != 36 or crc16(raw[:-2]).to_bytes(2, "little") != raw[-2:]:
        raise ValueError("seed: bad length or checksum")
    if raw[0] & 0xF8 != PREFIX_SEED:
        raise ValueError("seed: not a seed")
    return (raw[0] & 7) << 5 | (raw[1] & 0xF8) >> 3, raw[2:34]


@dataclass(frozen=True)
class NKey:
    prefix: int
    signing: SigningKey

    @classmethod
    def generate(cls, prefix: int) -> NKey:
        return cls(prefix, SigningKey(secrets.token_bytes(32)))

    @classmethod
    def from_seed(cls, text: str, prefix: int) -> NKey:
        got, raw = decode_seed(text)
        if got != prefix:
            raise ValueError("seed: not the expected kind of key")
        return cls(prefix, SigningKey(raw))

    @property
    def seed(self) -> str:
        return encode_seed(self.prefix, bytes(self.signing))

    @property
    def public(self) -> str:
        return encode_public(self.prefix, bytes(self.signing.verify_key))

    def sign(self, data: bytes) -> bytes:
        return bytes(self.signing.sign(data).signature)


@dataclass(frozen=True)
class CalloutKeys:
    issuer: NKey    # an account key: signs the responses and the user JWTs (the engine's `issuer`)
    service: NKey   # a user key: the service's own login on the engine (in AUTH, in auth_users)


def keys_path(data_dir: Path) -> Path:
    return Path(data_dir) / "nats" / KEYS_FILE


def load_or_create_keys(data_dir: Path) -> CalloutKeys:
    """The callout's keys, made once (O_EXCL, 0600: two starts never race to two key sets)."""
    path = keys_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            json.dump({"issuer_seed": NKey.generate(PREFIX_ACCOUNT).seed,
                       "service_seed": NKey.generate(PREFIX_USER).seed}, f)
    for _ in range(50):  # another process may be writing it right now
        try:
            d = json.loads(path.read_text())
            return CalloutKeys(NKey.from_seed(d["issuer_seed"], PREFIX_ACCOUNT),
                               NKey.from_seed(d["service_seed"], PREFIX_USER))
        except ValueError:
            time.sleep(0.02)
        except (KeyError, TypeError) as exc:
            raise CalloutError(f"{path}: missing {exc}: delete it (new keys are made at the next start)") from None
    raise CalloutError(f"{path} is not valid: delete it (new keys are made at the next start)")


# ---- JWTs (github.com/nats-io/jwt v2: claims.go, authorization_claims.go, user_claims.go) -------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: dict[str, Any], issuer: NKey) -> str:
    """A v2 JWT signed with `issuer` (iss, iat and a jti added)."""
    body = dict(claims, iss=issuer.public, iat=int(time.time()), jti=_b32(secrets.token_bytes(32)))
    signing_input = _b64(json.dumps(_JWT_HEADER).encode()) + "." + _b64(json.dumps(body).encode())
    return signing_input + "." + _b64(issuer.sign(signing_input.encode()))


def decode_request(token: bytes | str, now: float | None = None) -> dict[str, Any]:
    """The claims of a server-signed authorization request; BadRequest says what is wrong."""
    if len(token) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request of {len(token)} bytes")
    text = token.decode("ascii", "replace") if isinstance(token, bytes) else token
    parts = text.split(".")
    if len(parts) != 3:
        raise BadRequest("not a JWT (expected 3 parts)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
        sig = _unb64(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise BadRequest(f"undecodable JWT: {exc}") from None
    if not isinstance(header, dict) or str(header.get("typ", "")).upper() != "JWT" \
            or str(header.get("alg", "")).lower() != "ed25519-nkey":
        raise BadRequest(f"unexpected JWT header {header!r}")
    if not isinstance(claims, dict) or not isinstance(claims.get("nats"), dict):
        raise BadRequest("no 'nats' claims")
    issuer = claims.get("iss")
    try:
        key = VerifyKey(decode_public(str(issuer), PREFIX_SERVER))
        key.verify((parts[0] + "." + parts[1]).encode(), sig)
    except (ValueError, BadSignatureError) as exc:
        raise BadRequest(f"signature not valid for issuer {issuer!r}: {exc}") from None
    nc = claims["nats"]
    if nc.get("type") != "authorization_request":
        raise BadRequest(f"claim type {nc.get('type')!r}, not authorization_request")
    if claims.get("aud") != REQUEST_AUDIENCE:
        raise BadRequest(f"audience {claims.get('aud')!r}, not {REQUEST_AUDIENCE}")
    server = nc.get("server_id")
    if not isinstance(server, dict) or server.get("id") != issuer:
        raise BadRequest("signed by a key other than the server id it names")
    exp = claims.get("exp")
    if isinstance(exp, int) and exp and (now if now is not None else time.time()) > exp + CLOCK_LEEWAY_S:
        raise BadRequest("request expired")
    try:
        decode_public(str(nc.get("user_nkey")), PREFIX_USER)
    except ValueError as exc:
        raise BadRequest(f"user_nkey: {exc}") from None
    return claims


def valid_device_id(device_id: str) -> bool:
    from sqalfw.codec import valid_device_id as fw_valid  # the rule the firmware and the ingest apply

    return bool(fw_valid(device_id))


def device_user_claims(device_id: str, user_nkey: str, account: str = DEVICES_ACCOUNT) -> dict[str, Any]:
    """The user JWT's claims for one device: its subjects only, MQTT only, in the SQAL account."""
    perms = device_subjects(device_id)
    return {"sub": user_nkey, "aud": account, "name": device_id,
            "nats": {"pub": {"allow": perms["publish"]}, "sub": {"allow": perms["subscribe"]},
                     "subs": -1, "data": -1, "payload": -1, "allowed_connection_types": ["MQTT"],
                     "type": "user", "version": 2}}


def _section(claims: dict[str, Any], name: str) -> dict[str, Any]:
    value = claims.get(name)
    return value if isinstance(value, dict) else {}


# ---- the service --------------------------------------------------------------------------------------

@dataclass
class Decision:
    device_id: str | None
    refusal: Refusal | None
    response: bytes


@dataclass
class AuthCallout:
    """Decides authorization requests (`authorize`, pure apart from reading the credential store) and
    serves them on a NATS connection (`serve`)."""

    keys: CalloutKeys
    credentials: DeviceCredentials
    account: str = DEVICES_ACCOUNT
    state_path: Path | None = None
    accepted: int = 0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    connected: bool = False
    _dirty: bool = False
    _writer: asyncio.Task[None] | None = None

    def authorize(self, token: bytes) -> Decision:
        try:
            req = decode_request(token)
        except BadRequest as exc:
            refusal = Refusal("bad_request", f"authorization request refused: {exc}")
            self._count(refusal, None)
            return Decision(None, refusal, b"")  # an empty answer: refused, no claims to address
        nc = req["nats"]
        user_nkey, server_id = str(nc["user_nkey"]), str(nc["server_id"]["id"])
        try:
            device_id = self._check(nc)
        except Refusal as refusal:
            self._count(refusal, nc)
            return Decision(None, refusal, self._response(user_nkey, server_id, error=refusal.message))
        self._count(None, nc)
        user_jwt = encode_jwt(device_user_claims(device_id, user_nkey, self.account), self.keys.issuer)
        return Decision(device_id, None, self._response(user_nkey, server_id, jwt=user_jwt))

    def _check(self, nc: dict[str, Any]) -> str:
        ci = _section(nc, "client_info")
        co = _section(nc, "connect_opts")
        user, password = co.get("user"), co.get("pass")
        kind = ci.get("type") or ci.get("kind") or "unknown"
        if kind != "mqtt":
            raise Refusal("not_mqtt", f"a {kind} connection as user {user!r}: only MQTT devices are "
                          "authenticated by the callout; other clients use the engine's configured users")
        if not isinstance(user, str) or not user:
            raise Refusal("no_credentials", "MQTT CONNECT without a user name: a device logs in with its "
                          "device id and the password from 'sqal board provision'")
        if not valid_device_id(user):
            raise Refusal("invalid_user", f"user {user[:64]!r} is not a device id")
        verdict = self.credentials.check(user, password if isinstance(password, str) else "")
        if verdict != "ok":
            messages = {"unknown_device": f"device {user} has no credentials (sqal board provision)",
                        "wrong_password": f"wrong password for device {user}",
                        "store_unreadable": f"the credential store is unreadable: device {user} refused"}
            raise Refusal(verdict, messages.get(verdict, f"device {user} refused ({verdict})"))
        client_id = ci.get("mqtt_id")
        if client_id != user:
            raise Refusal("client_id_mismatch", f"device {user} connected with MQTT client id {client_id!r}: "
                          "a device must use its own id as client id")
        return user

    def _response(self, user_nkey: str, server_id: str, *, jwt: str | None = None, error: str | None = None) -> bytes:
        nats_claims: dict[str, Any] = {"type": "authorization_response", "version": 2}
        if jwt is not None:
            nats_claims["jwt"] = jwt
        else:
            nats_claims["error"] = error or "refused"
        return encode_jwt({"sub": user_nkey, "aud": server_id, "nats": nats_claims}, self.keys.issuer).encode()

    def _count(self, refusal: Refusal | None, nc: dict[str, Any] | None) -> None:
        if refusal is None:
            self.accepted += 1
            log.info("auth callout: device %s authorized", _section(nc or {}, "connect_opts").get("user"))
        else:
            self.refused[refusal.reason] += 1
            ci = _section(nc or {}, "client_info")
            log.warning("auth callout: refused (%s) %s client from %s: %s", refusal.reason, ci.get("type", "?"),
                        ci.get("host", "?"), refusal.message)
        self._dirty = True

    # ---- state file: pid, connection, counters (the embedded engine waits on it; tests read it) ----

    def state(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "connected": self.connected, "accepted": self.accepted,
                "refused": dict(self.refused), "issuer": self.keys.issuer.public}

    def write_state(self) -> None:
        if self.state_path is None:
            return
        self._dirty = False
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state(), f)
        os.replace(tmp, self.state_path)

    async def _state_writer(self) -> None:
        while True:
            await asyncio.sleep(STATE_WRITE_S)
            if self._dirty:
                with contextlib.suppress(OSError):
                    self.write_state()

    # ---- serving ----

    async def _on_request(self, nc: NatsClient, msg: Msg) -> None:
        if not msg.reply:
            return
        decision = self.authorize(msg.data)
        try:
            await nc.publish(msg.reply, decision.response)
        except Exception as exc:  # noqa: BLE001 - the connection is going: the engine times the request out
            log.warning("auth callout: could not answer a request: %r", exc)

    async def serve(self, servers: list[str], stop: asyncio.Event, tls: ssl.SSLContext | None = None) -> None:
        """Answer requests until `stop` is set; connects (and reconnects) as long as it takes."""
        nc: NatsClient | None = None
        self._writer = asyncio.create_task(self._state_writer())

        async def on_error(exc: Exception) -> None:
            log.debug("auth callout: engine connection: %r", exc)

        async def on_disconnected() -> None:
            self.connected = False
            self._dirty = True
            if not stop.is_set():
                log.warning("auth callout: disconnected from the engine; reconnecting")

        async def on_reconnected() -> None:
            self.connected = True
            self._dirty = True
            log.info("auth callout: reconnected to the engine")

        try:
            while not stop.is_set() and nc is None:
                try:
                    nc = await nats.connect(servers, nkeys_seed_str=self.keys.service.seed, name=QUEUE, tls=tls,
                                            max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=2,
                                            error_cb=on_error, disconnected_cb=on_disconnected,
                                            reconnected_cb=on_reconnected)
                except Exception as exc:  # noqa: BLE001 - the engine is not up yet: try again
                    log.info("auth callout: engine not reachable yet (%r)", exc)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
            if nc is None:
                return
            client = nc

            async def handler(msg: Msg) -> None:
                await self._on_request(client, msg)

            await nc.subscribe(AUTH_SUBJECT, queue=QUEUE, cb=handler)
            await nc.flush()
            self.connected = True
            self.write_state()
            log.info("auth callout: answering %s on %s (issuer %s)", AUTH_SUBJECT, ", ".join(servers),
                     self.keys.issuer.public)
            await stop.wait()
        finally:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.drain()
            self.connected = False
            with contextlib.suppress(OSError):
                self.write_state()


# ---- configuration for the engine -----------------------------------------------------------------------

def _q(s: str) -> str:
    return json.dumps(s)


def auth_account_config(keys: CalloutKeys) -> str:
    """The AUTH account: the service's nkey user, alone (no JetStream, no other user)."""
    return f"{AUTH_ACCOUNT} {{ users: [ {{nkey: {_q(keys.service.public)}}} ] }}"


def authorization_config(keys: CalloutKeys, engine_users: list[str]) -> str:
    """The engine's authorization block: users not in `engine_users` (the gateway's) go to the callout."""
    users = ", ".join(_q(u) for u in [keys.service.public, *engine_users])
    return (f"authorization {{ auth_callout {{ issuer: {_q(keys.issuer.public)}, "
            f"account: {AUTH_ACCOUNT}, auth_users: [ {users} ] }} }}")


def external_config(keys: CalloutKeys, gateway_user: str = "sqal-gateway") -> str:
    """What an external engine's configuration needs (--print-config): only public keys."""
    return "\n".join([
        "# SQAL device authentication (gateway/nats/auth_callout.py); merge into the engine's configuration.",
        "# Set the gateway's password (SQAL_NATS_URL / SQAL_MQTT_URL carry it); the rest is public keys.",
        "accounts {",
        f"  {DEVICES_ACCOUNT} {{ jetstream: enabled, users: [ {{user: {_q(gateway_user)}, password: \"CHANGE-ME\"}} ] }}",
        f"  {auth_account_config(keys)}",
        "  SYS { users: [] }",
        "}",
        "system_account: SYS",
        authorization_config(keys, [gateway_user]),
        "",
    ])


# ---- command line ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.nats.auth_callout",
                                description="SQAL device authentication for the NATS engine (auth callout).")
    p.add_argument("--data-dir", type=Path, required=True, help="SQAL data dir: keys in nats/, devices in mqtt/")
    p.add_argument("--server", action="append", default=[], help="NATS URL of the engine (repeatable)")
    p.add_argument("--credentials-dir", type=Path, help="CredentialStore directory (default: <data dir>/mqtt)")
    p.add_argument("--account", default=DEVICES_ACCOUNT, help="Account the devices are placed in")
    p.add_argument("--tls-ca", help="tls:// engine: CA bundle (PEM)")
    p.add_argument("--tls-cert", help="client certificate (PEM)")
    p.add_argument("--tls-key", help="client certificate key (PEM)")
    p.add_argument("--print-config", action="store_true", help="Print the engine configuration blocks and exit")
    p.add_argument("--gateway-user", default="sqal-gateway", help="With --print-config: the gateway's user name")
    p.add_argument("--log-level", default=os.environ.get("SQAL_LOG_LEVEL", "INFO"))
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        keys = load_or_create_keys(args.data_dir)
    except (OSError, CalloutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.print_config:
        print(external_config(keys, args.gateway_user), end="")
        return 0
    if not args.server:
        print("error: --server nats://host:port is required (the engine's NATS address)", file=sys.stderr)
        return 2
    tls = None
    if args.tls_ca or args.tls_cert or any(s.startswith("tls://") for s in args.server):
        tls = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
    service = AuthCallout(keys, DeviceCredentials(args.credentials_dir or Path(args.data_dir) / "mqtt"),
                          account=args.account, state_path=Path(args.data_dir) / "nats" / STATE_FILE)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.serve(args.server, stop, tls)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
