"""WebSocket ingest at /ws/sensors/ and /ws/sensors/{device_id}: v1 protocol
(docs/contract.md section 8), through the same pipeline as MQTT.

Every client message gets exactly one answer, sent once the outcome is committed: an `ack` means
"stored" (or "already stored": status `duplicate`, with the first row's id and grade). Anything
refused -- bad JSON, a sample the contract rejects, an unknown message type -- is answered with
`{"type":"error","reason":...}` AND stored as a reject like an MQTT one; the connection stays open.

Limits and device credentials (gateway.auth, gateway.limits, docs/security.md): a message larger
than SQAL_WS_MAX_MESSAGE_BYTES is answered, stored as a reject and closes THAT connection (1009);
above the per-connection rate a message is refused unparsed (not stored, counted). With device
authentication on, the handshake must carry `Authorization: Basic <device id>:<password>` (the
credentials of `sqal board provision`) and every sample on the connection must be that device's.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqalfw import codec

from gateway.auth import DEVICE_REALM, AuthError, basic_credentials, deny, ws_device_auth_enabled
from gateway.credentials import DeviceCredentials, credentials_dir
from gateway.ingest.envelope import Envelope, Outcome
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.rejects import truncate
from gateway.limits import TokenBucket, ws_message_size

router = APIRouter()
FRAME_LIMIT = 64 * 1024  # a text frame larger than this is refused before it is parsed


def _now_ms() -> int:
    return int(time.time() * 1000)


def _answer(o: Outcome) -> dict[str, Any]:
    if o.status == "rejected":
        return {"type": "error", "reason": o.reason}
    return {"type": "ack", "sample_id": o.sample_id, "device_id": o.device_id, "boot": o.boot, "seq": o.seq,
            "status": o.status, "score": o.score, "grade": o.grade, "lot_id": o.lot_id}


async def _refuse(pipeline: Pipeline, path: str, raw: bytes, reason: str, device_id: str | None) -> dict[str, Any]:
    env = Envelope("ws", path, truncate(raw, pipeline.config.payload_limit), datetime.now(UTC),
                   size=len(raw), kind_hint="message", path_device_id=device_id, pre_reject=reason)
    return _answer(await pipeline.submit(env))


async def _handle_text(pipeline: Pipeline, path: str, raw: bytes, device_id: str | None) -> dict[str, Any]:
    if len(raw) > FRAME_LIMIT:
        return await _refuse(pipeline, path, raw, f"size: frame is {len(raw)} bytes, limit is {FRAME_LIMIT}",
                             device_id)
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return await _refuse(pipeline, path, raw, "json: not valid JSON", device_id)
    if not isinstance(msg, dict):
        return await _refuse(pipeline, path, raw, "message: expected a JSON object", device_id)
    kind = msg.get("type")
    if kind == "sensor_data":
        if "data" not in msg:
            return await _refuse(pipeline, path, raw, "data: missing", device_id)
        env = Envelope("ws", path, raw, datetime.now(UTC), obj=msg["data"], kind_hint="sample",
                       path_device_id=device_id)
        return _answer(await pipeline.submit(env))
    if kind == "heartbeat":
        return {"type": "heartbeat_ack", "server_time": _now_ms()}
    if kind == "ping":
        return {"type": "pong", "server_time": _now_ms()}
    if kind == "hello":
        dev = msg.get("device_id")
        if not (isinstance(dev, str) and codec.valid_device_id(dev)):
            return await _refuse(pipeline, path, raw, f"device_id: {dev!r:.120} is not a valid device id",
                                 device_id)
        if device_id is not None and dev != device_id:
            return await _refuse(pipeline, path, raw,
                                 f"device_id: hello says '{dev}' but path says '{device_id}'", device_id)
        return {"type": "hello_ack", "device_id": dev, "server_time": _now_ms()}
    shown = kind if isinstance(kind, str) else json.dumps(kind)
    return await _refuse(pipeline, path, raw, f"type: unknown message type '{shown[:64]}'", device_id)


@router.websocket("/ws/sensors")
@router.websocket("/ws/sensors/")
@router.websocket("/ws/sensors/{device_id}")
async def sensors(ws: WebSocket, device_id: str | None = None) -> None:
    ingest = getattr(ws.app.state, "ingest", None)
    if ingest is None:  # SQAL_INGEST_ENABLED=false: readings cannot be stored here
        await ws.close(code=1013, reason="the ingest is disabled on this gateway")
        return
    pipeline: Pipeline = ingest.pipeline
    settings = ws.app.state.settings
    metrics = ws.app.state.security_metrics
    if ws_device_auth_enabled(settings):
        who = _device_login(ws, settings, device_id)
        if isinstance(who, AuthError):
            metrics.reject("ws_device_auth")
            await deny(ws.scope, ws.receive, ws.send, who)
            return
        device_id = who  # every sample on this connection must be this device's
    max_bytes = settings.ws_max_message_bytes
    bucket = TokenBucket(settings.ws_rate_per_s, settings.ws_rate_burst)
    await ws.accept()
    path = ws.url.path[:256]
    if device_id is not None and not codec.valid_device_id(device_id):
        await ws.send_json({"type": "error",
                            "reason": f"device_id: {device_id[:64]!r} in the path is not a valid device id"})
        await ws.close(code=1008)
        return
    await ws.send_json({"type": "connection_established", "device_id": device_id, "contract": codec.VERSION,
                        "server_time": _now_ms()})
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            size = ws_message_size(frame)
            if size > max_bytes:  # answer, keep it as a reject, and drop THIS connection only
                metrics.reject("ws_frame_too_large")
                raw = frame.get("bytes") or (frame.get("text") or "")[:8192].encode()
                answer = await _refuse(pipeline, path, raw, f"size: message is {size} bytes, limit is {max_bytes}",
                                       device_id)
                await ws.send_json(answer)
                await ws.close(code=1009, reason="message too big")
                return
            if not bucket.take():  # refused unparsed and unstored: a flood must not cost a DB write each
                metrics.reject("ws_rate")
                await ws.send_json({"type": "error",
                                    "reason": f"rate: more than {settings.ws_rate_per_s:g} messages/s on this connection"})
                continue
            if frame.get("bytes") is not None:
                env = Envelope("ws", path, frame["bytes"], datetime.now(UTC), kind_hint="sample",
                               path_device_id=device_id)
                answer = _answer(await pipeline.submit(env))
            else:
                answer = await _handle_text(pipeline, path, (frame.get("text") or "").encode(), device_id)
            await ws.send_json(answer)
    except WebSocketDisconnect:
        return


def _device_login(ws: WebSocket, settings: object, path_device_id: str | None) -> str | AuthError:
    """The authenticated device id, or the reason the handshake is refused."""
    creds = basic_credentials(ws.scope)
    if creds is None:
        return AuthError("device authentication required: send 'Authorization: Basic' with the device id and "
                         "the password from 'sqal board provision'", "ws_device_auth",
                         challenge=DEVICE_REALM)
    user, password = creds
    if not codec.valid_device_id(user) or not DeviceCredentials(credentials_dir(settings)).check_device(user, password):
        return AuthError("unknown device or wrong password", "ws_device_auth", challenge=DEVICE_REALM)
    if path_device_id is not None and path_device_id != user:
        return AuthError(f"device {user} may not send as {path_device_id[:64]}", "ws_device_auth",
                         challenge=DEVICE_REALM)
    return user
