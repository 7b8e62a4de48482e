"""The WebSocket ingest on a real uvicorn server: an oversized message closes THAT connection only,
a flood is refused per connection, and with device authentication on the handshake must carry the
device's own credentials."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.app import create_app
from gateway.boards.provision import CredentialStore
from gateway.config import Settings
from tests.gateway.ingest_support import sample, uid
from tests.security.conftest import TOKEN

LIMIT = 4096


@pytest.fixture
async def serve(database_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> tuple[str, Any]:
        options: dict[str, Any] = {"database_url": database_url, "data_dir": tmp_path, "mqtt_embedded_port": 0,
                                   "ingest_flush_ms": 5, "api_token": TOKEN, "ws_max_message_bytes": LIMIT}
        options.update(overrides)
        app = create_app(Settings(**options))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning",
                                               ws_max_size=4 * LIMIT))
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        while not server.started:
            assert not task.done(), "server did not start"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}", app

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def _hello(ws: Any) -> dict[str, Any]:
    return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def test_oversized_frame_closes_that_connection_only(serve: Any) -> None:
    base, app = await serve()
    dev_a, dev_b = uid(), uid()
    async with websockets.connect(f"{base}/ws/sensors/{dev_a}") as a, \
            websockets.connect(f"{base}/ws/sensors/{dev_b}") as b:
        assert (await _hello(a))["type"] == "connection_established"
        await _hello(b)
        await a.send(json.dumps({"type": "sensor_data", "data": sample(dev_a), "pad": "x" * (LIMIT + 10)}))
        err = json.loads(await a.recv())
        assert err["type"] == "error" and err["reason"].startswith("size: message is ")
        with pytest.raises(ConnectionClosed) as closed:
            await a.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # the neighbour is untouched: its sample is stored
        await b.send(json.dumps({"type": "sensor_data", "data": sample(dev_b, seq=1)}))
        ack = json.loads(await b.recv())
        assert ack["type"] == "ack" and ack["status"] == "saved", ack
    assert app.state.security_metrics.value("ws_frame_too_large") == 1
    # a frame far above the limit is cut by the server itself (never buffered), same outcome for the sender
    async with websockets.connect(f"{base}/ws/sensors/{dev_a}", max_size=None) as a:
        await _hello(a)
        with pytest.raises(ConnectionClosed):
            await a.send(b"\0" * (8 * LIMIT))
            await a.recv()
            await a.recv()


async def test_flood_is_refused_per_connection(serve: Any) -> None:
    base, app = await serve(ws_rate_per_s=1, ws_rate_burst=3)
    dev = uid()
    async with websockets.connect(f"{base}/ws/sensors/{dev}") as ws, \
            websockets.connect(f"{base}/ws/sensors/{uid()}") as other:
        await _hello(ws)
        await _hello(other)
        for _ in range(6):
            await ws.send(json.dumps({"type": "ping"}))
        answers = [json.loads(await ws.recv())["type"] for _ in range(6)]
        assert answers[:3] == ["pong"] * 3 and "error" in answers[3:], answers
        await other.send(json.dumps({"type": "ping"}))  # its own budget
        assert json.loads(await other.recv())["type"] == "pong"
    assert app.state.security_metrics.value("ws_rate") >= 1


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_device_credentials_in_the_handshake(serve: Any, tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "mqtt")
    dev, other = "ESP32_WS_SEC_01", "ESP32_WS_SEC_02"
    pw = store.provision(dev).password
    store.provision(other)
    base, app = await serve(mqtt_auth=True)
    for path, headers in ((f"/ws/sensors/{dev}", None), (f"/ws/sensors/{dev}", _basic(dev, "wrong")),
                          (f"/ws/sensors/{other}", _basic(dev, pw)), ("/ws/sensors", _basic("ESP32_NOBODY", pw))):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(base + path, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401, path
        assert refused.value.response.headers["WWW-Authenticate"].startswith("Basic")
    assert app.state.security_metrics.value("ws_device_auth") == 4
    # the right device: accepted on the generic path, bound to its own id
    async with websockets.connect(f"{base}/ws/sensors", additional_headers=_basic(dev, pw)) as ws:
        assert (await _hello(ws))["device_id"] == dev
        await ws.send(json.dumps({"type": "sensor_data", "data": sample(other, seq=5)}))
        err = json.loads(await ws.recv())
        assert err == {"type": "error", "reason": f"device_id: payload says '{other}' but topic says '{dev}'"}
        await ws.send(json.dumps({"type": "sensor_data", "data": sample(dev, seq=5)}))
        assert json.loads(await ws.recv())["status"] == "saved"
