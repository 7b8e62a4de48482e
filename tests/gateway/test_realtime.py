"""/ws/realtime/: a departed client must not keep the server from shutting down."""

from __future__ import annotations

import json
import subprocess

import websockets

from tests.fixtures.gateway import GatewayProcess


async def test_server_stops_promptly_after_a_realtime_client_left(gateway: GatewayProcess) -> None:
    url = f"ws://127.0.0.1:{gateway.port}/ws/realtime/"
    async with websockets.connect(url) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "snapshot" and "grade_counts" in first
    # the client is gone and nothing is being published: SIGTERM must still end the server quickly
    assert gateway.proc is not None
    gateway.proc.terminate()
    try:
        code = gateway.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"gateway still running 15 s after SIGTERM:\n{gateway.log()[-2000:]}") from None
    assert code == 0, gateway.log()[-2000:]
