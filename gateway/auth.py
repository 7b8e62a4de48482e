"""Who may do what: the API bearer token, and device credentials on the ingest (docs/security.md).

- API token (SQAL_API_TOKEN, else <data dir>/api-token generated on first run, 0600). Compared in
  constant time; never logged. HTTP clients send `Authorization: Bearer <token>`; a WebSocket
  client may send the same header or, from a browser (which cannot set headers on a WebSocket),
  offer the subprotocols `["sqal.bearer", "<token>"]`: the server then answers `sqal.bearer`.
  A token in the URL is not accepted: URLs end up in access logs and browser history.
- `AuthMiddleware` is the gate for every request: non-GET methods and control WebSockets need the
  token; GET routes and /ws/realtime need it only with SQAL_READ_AUTH; /ws/sensors/ authenticates
  devices itself (below). `require_token` (gateway.api.WRITE_DEPENDENCIES) checks the same per route,
  so the OpenAPI schema declares it and a route stays protected even mounted elsewhere.
- Device credentials: the CredentialStore of `sqal board provision` (<data dir>/mqtt/users.json,
  password hashes only). The WebSocket ingest checks `Authorization: Basic` against it; the message
  engine's MQTT listener through the auth callout (gateway/nats/auth_callout.py), which also binds
  the MQTT client id to the device id and gives the device its own subjects only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from gateway.limits import SecurityMetrics

log = logging.getLogger(__name__)

TOKEN_FILE = "api-token"
TOKEN_BYTES = 32  # 43 URL-safe characters, 256 bits
WS_SUBPROTOCOL = "sqal.bearer"
MAX_TOKEN_CHARS = 512  # a longer Authorization value is refused before it is compared
REALM = 'Bearer realm="sqal"'
DEVICE_REALM = 'Basic realm="sqal-devices"'

# Open even with SQAL_READ_AUTH: liveness probes, and the docs page that lets a person paste the token.
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# State-changing routes deliberately open to anyone (none today). A public consumer-feedback form
# would go here, with its own abuse limits.
PUBLIC_WRITE_PATHS: frozenset[str] = frozenset()
def is_page_asset(path: str) -> bool:
    """The web page's own static files (gateway/web): no data in them, and a browser cannot send a
    token when it loads a page, so they stay open even with SQAL_READ_AUTH."""
    return path in ("/", "/ui") or path.startswith("/ui/")


DEVICE_WS_PREFIX = "/ws/sensors"  # device credentials, checked by the ingest handler
READ_WS_PREFIXES = ("/ws/realtime",)  # dashboards: token only under SQAL_READ_AUTH
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuthError(Exception):
    """Refused: `str(exc)` is the client-facing message; `reason` the metrics label."""

    def __init__(self, message: str, reason: str, invalid: bool = False, challenge: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.invalid = invalid
        self.challenge = challenge

    @property
    def www_authenticate(self) -> str:
        if self.challenge is not None:
            return self.challenge
        return REALM + (', error="invalid_token"' if self.invalid else "")


# ---- token file --------------------------------------------------------------------------------------

def token_path(data_dir: Path) -> Path:
    return Path(data_dir) / TOKEN_FILE


def load_or_create_token(data_dir: Path) -> tuple[str, bool]:
    """(token, created). Created with O_EXCL and mode 0600, so two starts never race to two tokens
    and the file is never readable by others, not even for a moment."""
    path = token_path(data_dir)
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        mode = path.stat().st_mode & 0o077
        if mode:
            log.warning("%s is readable by group/others (mode %o): chmod 600 it", path, path.stat().st_mode & 0o777)
        return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it between our read and our create, or it is empty
        existing = path.read_text().strip()
        if existing:
            return existing, False
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


def resolve_api_token(settings: Any) -> tuple[str | None, str]:
    """(token, source) for the main command: source is 'env' (SQAL_API_TOKEN), 'file' (read from
    <data dir>/api-token), 'generated' (just written there) or 'disabled' (SQAL_API_AUTH=false)."""
    if settings.api_token:
        return settings.api_token, "env"
    if not settings.api_auth:
        return None, "disabled"
    token, created = load_or_create_token(settings.ensure_data_dir())
    return token, "generated" if created else "file"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0/:: resolves or binds beyond this machine


# ---- presenting and checking the API token ------------------------------------------------------------

def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def presented_token(scope: Scope) -> tuple[str | None, bool]:
    """(token or None, came as a WebSocket subprotocol). Raises AuthError for a malformed header."""
    value = _header(scope, b"authorization")
    if value is not None:
        if len(value) > MAX_TOKEN_CHARS:
            raise AuthError("Authorization header too long", "token_malformed")
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization header must be 'Bearer <token>'", "token_malformed")
        return token.strip(), False
    if scope.get("type") == "websocket":
        protos = list(scope.get("subprotocols") or ())
        if WS_SUBPROTOCOL in protos:
            i = protos.index(WS_SUBPROTOCOL)
            if i + 1 < len(protos) and len(protos[i + 1]) <= MAX_TOKEN_CHARS:
                return protos[i + 1], True
            raise AuthError(f"subprotocol {WS_SUBPROTOCOL} must be followed by the token", "token_malformed")
    return None, False


class ApiAuth:
    """The API token policy of one app. `token=None`: authentication off (the library default; the
    main command always sets one unless SQAL_API_AUTH=false)."""

    def __init__(self, token: str | None, read_auth: bool = False, metrics: SecurityMetrics | None = None) -> None:
        self._token = token.encode() if token else None
        self.read_auth = read_auth
        self.metrics = metrics

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def needs_token(self, scope: Scope) -> bool:
        """Whether this request must carry the token (before any route runs)."""
        if not self.enabled:
            return False
        path: str = scope.get("path", "")
        if scope["type"] == "http":
            if scope.get("method", "GET").upper() in SAFE_METHODS:
                return self.read_auth and path not in OPEN_PATHS and not is_page_asset(path)
            return path not in PUBLIC_WRITE_PATHS
        if scope["type"] == "websocket":
            if path == DEVICE_WS_PREFIX or path.startswith(DEVICE_WS_PREFIX + "/"):
                return False
            if any(path == p or path.startswith(p + "/") for p in READ_WS_PREFIXES):
                return self.read_auth
            return True  # control streams, and any WebSocket added later: closed by default
        return False

    def check(self, scope: Scope) -> bool:
        """Raise AuthError unless the request carries the right token; True if it came as a subprotocol."""
        if self._token is None:
            return False
        try:
            token, via_subprotocol = presented_token(scope)
            if token is None:
                raise AuthError("authentication required: send the API token as 'Authorization: Bearer <token>' "
                                "(SQAL_API_TOKEN, or the file api-token in the SQAL data dir)", "token_missing")
            if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), self._token):
                raise AuthError("invalid API token", "token_invalid", invalid=True)
        except AuthError as exc:
            if self.metrics is not None:
                self.metrics.reject(exc.reason)
            raise
        return via_subprotocol


class AuthMiddleware:
    """Pure ASGI gate in front of every route (see module docstring). A refused HTTP request gets 401
    JSON with WWW-Authenticate; a refused WebSocket handshake gets the same 401 as a denial response
    when the server supports it (uvicorn, TestClient), else a close 1008 before accept."""

    def __init__(self, app: ASGIApp, auth: ApiAuth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.auth.needs_token(scope):
            await self.app(scope, receive, send)
            return
        try:
            via_subprotocol = self.auth.check(scope)
        except AuthError as exc:
            await deny(scope, receive, send, exc)
            return
        if via_subprotocol:
            send = _echo_subprotocol(send)
        await self.app(scope, receive, send)


def _echo_subprotocol(send: Send) -> Send:
    """A browser that offered ['sqal.bearer', token] requires the server to pick one of them."""
    async def wrapped(message: Message) -> None:
        if message["type"] == "websocket.accept" and not message.get("subprotocol"):
            message = dict(message, subprotocol=WS_SUBPROTOCOL)
        await send(message)
    return wrapped


async def deny(scope: Scope, receive: Receive, send: Send, exc: AuthError) -> None:
    body = json.dumps({"detail": str(exc)}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"www-authenticate", exc.www_authenticate.encode())]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})


# ---- device credentials -------------------------------------------------------------------------------

def mqtt_auth_enabled(settings: Any) -> bool:
    """Embedded engine: device credentials + subject permissions when SQAL_MQTT_AUTH says so; unset,
    exactly when its MQTT listener is reachable from the network (non-loopback bind). A loopback
    listener is reached only by processes of this machine (the simulators), which could read the data
    dir anyway."""
    if settings.mqtt_auth is not None:
        return bool(settings.mqtt_auth)
    return settings.nats_url is None and not is_loopback(settings.mqtt_embedded_host)


def ws_device_auth_enabled(settings: Any) -> bool:
    """WebSocket ingest: SQAL_MQTT_AUTH when set; unset, on when the HTTP server or the embedded broker
    is reachable from the network."""
    if settings.mqtt_auth is not None:
        return bool(settings.mqtt_auth)
    return not is_loopback(settings.http_host) or mqtt_auth_enabled(settings)


def basic_credentials(scope: Scope) -> tuple[str, str] | None:
    """(user, password) from `Authorization: Basic`, or None when absent or malformed."""
    value = _header(scope, b"authorization")
    if value is None or len(value) > MAX_TOKEN_CHARS:
        return None
    scheme, _, b64 = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(b64.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


def install(app: Any, settings: Any) -> None:
    """Wire the API token policy and the HTTP body limit into `app` (called by create_app)."""
    from gateway.limits import BodySizeLimit

    metrics = SecurityMetrics()
    auth = ApiAuth(settings.api_token or None, read_auth=settings.read_auth, metrics=metrics)
    app.state.security_metrics = metrics
    app.state.api_auth = auth
    app.add_middleware(BodySizeLimit, max_bytes=settings.http_max_body_bytes, metrics=metrics)
    app.add_middleware(AuthMiddleware, auth=auth)  # added last = outermost: no token, no body read
    install_input_errors(app)
    if not auth.enabled:
        level = logging.INFO if is_loopback(settings.http_host) else logging.WARNING
        log.log(level, "API authentication is OFF (no API token): anyone who reaches %s can change lots "
                "and start simulators", settings.http_host)


def prepare_api_token(settings: Any, echo: Callable[..., Any]) -> None:
    """For `sqal serve` / `sqal demo`: put the API token into `settings` (SQAL_API_TOKEN, else the token
    file, generated on first run) and tell the user how to use it. The token itself is printed only
    once, to the terminal, when it is generated; never to a log."""
    token, source = resolve_api_token(settings)
    settings.api_token = token
    path = token_path(settings.data_dir)
    if source == "generated":
        echo(f"Generated the API token (shown this once; kept in {path}, mode 0600):\n  {token}")
    if source in ("generated", "file"):
        echo(f"  API token: state-changing requests need  -H \"Authorization: Bearer $(cat {path})\"")
    elif source == "env":
        echo("  API token: from SQAL_API_TOKEN (send it as 'Authorization: Bearer <token>')")
    else:
        where = "" if is_loopback(settings.http_host) else f" ON {settings.http_host}, REACHABLE FROM THE NETWORK"
        echo(f"WARNING: API authentication is OFF (SQAL_API_AUTH=false){where}: anyone who can connect may "
             "change lots and start simulators.", err=True)
    if not is_loopback(settings.http_host):
        echo(f"Note: binding {settings.http_host} (not loopback): the API is reachable from other machines; "
             "devices on /ws/sensors/ must present their credentials (docs/security.md).", err=True)


def install_input_errors(app: Any) -> None:
    """Bad input is the client's fault, answered 422 in the shape the OpenAPI schema documents for
    422 (`detail`: a list of {loc, msg, type, input...}), never a 500:
    - request validation errors: FastAPI's own handler fails (500) when the value it complains about
      cannot be written as JSON -- `NaN`, `Infinity` or `1e999` (parsed as infinity) in a body, a lone
      surrogate (`"\\ud800"`) -- so each echoed value goes through `json_safe` first;
    - input the models let through but the registry or PostgreSQL refuses (a NUL character in a
      text, an integer beyond int8, the registry's own cross-field checks)."""
    import asyncpg
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from registry.errors import InvalidInput

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        msg = str(exc) if isinstance(exc, InvalidInput) else "invalid input: " + str(exc).split("\n")[0][:200]
        return JSONResponse({"detail": [{"loc": ["body"], "msg": json_safe(msg), "type": "value_error"}]},
                            status_code=422)

    async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [json_safe(e) for e in exc.errors()[:MAX_ERRORS]]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(InvalidInput, invalid)
    app.add_exception_handler(asyncpg.DataError, invalid)


MAX_ERRORS = 50  # validation errors reported per request (a 1 MB list of bad items is not echoed whole)
MAX_ECHO_CHARS = 200  # of a string echoed back in an error
MAX_ECHO_ITEMS = 20  # of a list or object echoed back


def json_safe(value: Any, depth: int = 0) -> Any:
    """`value` made writable as strict JSON, for echoing client input back in an error: non-finite
    floats become the strings 'NaN' / 'Infinity' / '-Infinity', lone surrogates are escaped
    ('\\ud800' as text), long strings, lists and objects are cut (with a note of how much), and
    anything else that is not JSON (an exception in a pydantic `ctx`) becomes its str()."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text if len(text) <= MAX_ECHO_CHARS else f"{text[:MAX_ECHO_CHARS]}... ({len(text)} characters)"
    if isinstance(value, bytes):
        return json_safe(value.decode("utf-8", "backslashreplace"), depth)
    if depth >= 6:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(json_safe(str(k))): json_safe(v, depth + 1) for k, v in items[:MAX_ECHO_ITEMS]}
        if len(items) > MAX_ECHO_ITEMS:
            out["..."] = f"{len(items) - MAX_ECHO_ITEMS} more"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        cut = [json_safe(v, depth + 1) for v in seq[:MAX_ECHO_ITEMS]]
        return cut + ([f"... {len(seq) - MAX_ECHO_ITEMS} more"] if len(seq) > MAX_ECHO_ITEMS else [])
    return json_safe(str(value), depth)
