"""Every route of the real app, enumerated from the app itself: a new state-changing route or control
WebSocket that is reachable without the API token fails here."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from gateway.api import require_token
from gateway.auth import WS_SUBPROTOCOL, is_page_asset
from tests.security.conftest import TOKEN

SAFE = {"GET", "HEAD", "OPTIONS"}
DEVICE_WS = re.compile(r"^/ws/sensors(/.*)?$")  # device credentials instead (test_ws_device_auth.py)
READ_WS = re.compile(r"^/ws/realtime/?$")       # a read-only feed: token only under SQAL_READ_AUTH
PARAMS = {"lot_id": "LOT_20260105_0001", "device_id": "ESP32_SEC_01", "qr": "x"}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PARAMS.get(m.group(1), "x"), path)


def routes(client: TestClient) -> list[Any]:
    return list(iter_route_contexts(client.app.routes))  # type: ignore[attr-defined]


def write_routes(client: TestClient) -> list[tuple[str, str]]:
    out = [(m, c.path) for c in routes(client) if isinstance(c.original_route, APIRoute)
           for m in sorted(c.methods or ()) if m not in SAFE]
    assert ("POST", "/api/lots") in out and any(p.startswith("/api/control-panel/") for _m, p in out), out
    return out


def control_websockets(client: TestClient) -> list[str]:
    return [c.path for c in routes(client) if isinstance(c.original_route, APIWebSocketRoute)
            and not DEVICE_WS.match(c.path) and not READ_WS.match(c.path)]


def _denied(client: TestClient, path: str, **kw: Any) -> int | None:
    """The HTTP status of a refused WebSocket handshake, or None when it was accepted."""
    try:
        with client.websocket_connect(path, **kw):
            return None
    except WebSocketDenialResponse as exc:  # the HTTP answer to the handshake
        return exc.status_code
    except WebSocketDisconnect as exc:  # closed before accept (server without the denial extension)
        return 403 if exc.code == 1008 else None


def test_every_write_route_needs_the_token(client: TestClient) -> None:
    for method, path in write_routes(client):
        url = concrete(path)
        r = client.request(method, url, json=[])
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)
        assert "Authorization: Bearer" in r.json()["detail"]
        r = client.request(method, url, json=[], headers={"Authorization": "Bearer not-" + TOKEN})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], (method, path)
        r = client.request(method, url, json=[], headers={"Authorization": "Basic " + TOKEN})
        assert r.status_code == 401, (method, path)
        # The right token passes the gate: what follows is the route's own answer (422 for the bad body...).
        r = client.request(method, url, json=[], headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code != 401, (method, path, r.text)


def test_every_write_route_declares_require_token(client: TestClient) -> None:
    """Belt and braces: the middleware refuses anyway, but the route itself must say it needs the token,
    so the OpenAPI schema documents it and the route stays protected if mounted elsewhere."""
    spec = client.get("/openapi.json").json()
    for c in routes(client):
        if not isinstance(c.original_route, APIRoute) or not set(c.methods or ()) - SAFE:
            continue
        calls = {d.call for d in c.dependant.dependencies}
        assert require_token in calls, f"{sorted(c.methods)} {c.path}: add dependencies=WRITE_DEPENDENCIES"
        for m in set(c.methods or ()) - SAFE:
            assert spec["paths"][c.path][m.lower()].get("security") == [{"api_token": []}], (m, c.path)


def test_control_websockets_need_the_token(client: TestClient) -> None:
    paths = control_websockets(client)
    assert any(p.startswith("/api/control-panel/ws/logs") for p in paths), paths
    for path in paths:
        url = concrete(path)
        assert _denied(client, url) == 401, path
        assert _denied(client, url, headers={"Authorization": "Bearer wrong"}) == 401, path
        assert _denied(client, url, headers={"Authorization": f"Bearer {TOKEN}"}) is None, path


def test_browser_websocket_token_as_subprotocol(client: TestClient) -> None:
    url = concrete("/api/control-panel/ws/logs/{device_id}")
    assert _denied(client, url, subprotocols=[WS_SUBPROTOCOL, "wrong"]) == 401
    with client.websocket_connect(url, subprotocols=[WS_SUBPROTOCOL, TOKEN]) as ws:
        assert ws.accepted_subprotocol == WS_SUBPROTOCOL
        assert ws.receive_json()["type"] == "error"  # no such simulator: the route ran, past the gate


def test_reads_are_open_by_default(client: TestClient) -> None:
    assert client.get("/api/lots").status_code == 200
    assert client.get("/api/lots/stats").status_code == 200
    with client.websocket_connect("/ws/realtime") as ws:
        assert ws.receive_json()["type"] == "snapshot"


def test_read_auth_closes_reads_but_not_health_or_docs(make_client: Any) -> None:
    client = make_client(read_auth=True)
    for c in routes(client):
        if not isinstance(c.original_route, APIRoute) or "GET" not in (c.methods or ()):
            continue
        if c.path == "/health" or is_page_asset(c.path):
            continue
        r = client.get(concrete(c.path))
        assert r.status_code == 401, (c.path, r.status_code)
    assert client.get("/ui/").status_code == 200  # the page itself; its API calls carry the token
    assert client.get("/api/lots", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200
    assert _denied(client, "/ws/realtime") == 401
    assert _denied(client, "/ws/realtime", headers={"Authorization": f"Bearer {TOKEN}"}) is None


def test_malformed_or_wrong_authorization_is_401_and_counted(client: TestClient) -> None:
    for header in ("Bearer " + "x" * 600, "Bearer", "Bearer  ", "Token abc", "Bearer \u00e9t\u00e9"):
        r = client.post("/api/lots", json={}, headers={"Authorization": header.encode()})
        assert r.status_code == 401 and r.json()["detail"], header
    client.post("/api/lots", json={})
    client.post("/api/lots", json={}, headers={"Authorization": "Bearer nope"})
    text = client.get("/metrics").text
    assert 'sqal_security_rejections_total{reason="token_missing"} 1.0' in text
    assert 'sqal_security_rejections_total{reason="token_invalid"} 2.0' in text  # nope + the non-ASCII one
    assert 'sqal_security_rejections_total{reason="token_malformed"} 4.0' in text

def test_no_token_configured_means_open_api(make_client: Any) -> None:
    """The library default (no token) is open; `sqal serve`/`demo` always configure one."""
    client = make_client(api_token=None)
    r = client.post("/api/lots", json={"farmer_id": "G1", "farmer_name": "A", "site_code": "LL", "nb_ducks": 50,
                                       "planned_duration_days": 12})
    assert r.status_code == 201, r.text

