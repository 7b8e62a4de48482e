"""A gateway with SQAL_INGEST_ENABLED=false has no ingest: its routes say so (503, WebSocket 1013),
they never fail with a 500 or an unhandled error."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.app import create_app
from gateway.config import Settings


def test_ingest_routes_say_the_ingest_is_off(database_url: str, tmp_path: Path) -> None:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False, api_auth=False))
    with TestClient(app) as client:
        for path in ("/api/ingest/status", "/metrics"):
            r = client.get(path)
            assert r.status_code == 503 and "ingest is disabled" in r.json()["detail"], (path, r.text)
        for path in ("/ws/realtime", "/ws/sensors/ESP32_OFF_01"):
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(path) as ws:
                ws.receive_text()
            assert closed.value.code == 1013, path
