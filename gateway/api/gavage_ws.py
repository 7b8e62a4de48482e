"""/ws/gavage: the gavage simulator's (or a farm system's) persistent feeding stream.

One JSON object per text frame, one answer per message, in order:
- a feeding -> `{"type":"ack","lot_id","day","moment","status":"saved"|"duplicate","state",...}` once
  it is committed (registry.gavage.record_feeding: idempotent on lot/day/moment, so a feeding re-sent
  after a reconnect is acknowledged `duplicate` and changes nothing); `ready_for_slaughter` on the last
  evening also moves the lot to `ready`;
- anything refused -> `{"type":"error","field","reason","retryable"}`: the reason names the field;
  `retryable` is true only when the gateway itself failed (database down), so the client should send
  the same message again later. The connection stays open: one bad message never affects the others;
- `{"type":"ping"}` -> `{"type":"pong","server_time"}`.

Also here, the reads of the gavage: GET /api/gavage/feedings (the recent feedings, by lot and time)
and GET /api/gavage/stream-stats (this stream's counters).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.models_gavage import FeedingPage
from gateway.api.models_status import GavageStreamStats
from gateway.api.query import Limit, LotFilter, Offset, Since, Until
from registry import gavage, lots
from registry.errors import LotNotFound, RegistryError
from registry.lots import LOT_ID_PATTERN

log = logging.getLogger(__name__)
router = APIRouter(tags=["gavage"])
FRAME_LIMIT = 8 * 1024


class FeedingMessage(BaseModel):
    """A feeding as the gavage simulator sends it (doses and weights in grams per duck)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["feeding"] = "feeding"
    msg_id: str | None = Field(default=None, max_length=64, description="echoed in the answer")
    lot_id: str = Field(pattern=LOT_ID_PATTERN, validation_alias=AliasChoices("lot_id", "lot_code"))
    farmer_id: str | None = Field(default=None, min_length=1, max_length=64)
    farmer_name: str | None = Field(default=None, min_length=1, max_length=200)
    site_code: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    genetics: Literal["Mulard", "Barbarie", "Pekin"] | None = None
    day: int = Field(ge=1, le=60)
    moment: Literal["morning", "evening"]
    planned_dose_g: float = Field(ge=0, le=2000)
    actual_dose_g: float = Field(ge=0, le=2000)
    mean_weight_g: float | None = Field(default=None, gt=0, le=20000)
    live_ducks: int | None = Field(default=None, ge=0, le=100000)
    mortality_pct: float | None = Field(default=None, ge=0, le=100)
    temperature_c: float | None = Field(default=None, ge=-30, le=60)
    humidity_pct: float | None = Field(default=None, ge=0, le=100)
    timestamp: datetime | None = Field(default=None, description="simulated time of the feeding (ISO 8601)")
    ready_for_slaughter: bool = False


@dataclass
class GavageWsStats:
    connections_total: int = 0
    connections_open: int = 0
    messages: int = 0
    saved: int = 0
    duplicates: int = 0
    errors: int = 0


def stats_of(app: Any) -> GavageWsStats:
    st = getattr(app.state, "gavage_ws", None)
    if st is None:
        st = app.state.gavage_ws = GavageWsStats()
    return st  # type: ignore[no-any-return]


def _error(field: str, reason: str, msg: dict[str, Any] | None = None, retryable: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "field": field, "reason": reason, "retryable": retryable}
    for k in ("msg_id", "lot_id", "day", "moment"):
        if msg is not None and isinstance(msg.get(k), str | int) and not isinstance(msg.get(k), bool):
            out[k] = msg[k] if not isinstance(msg[k], str) else msg[k][:64]
    return out


def _validation_reason(exc: ValidationError) -> tuple[str, str]:
    e = exc.errors()[0]
    field = ".".join(str(p) for p in e["loc"]) or "message"
    if e["type"] == "extra_forbidden":
        return field, f"{field}: unknown field"
    if e["type"] == "missing":
        return field, f"{field}: missing"
    return field, f"{field}: {e['msg']} (got {json.dumps(e.get('input'), default=str)[:60]})"


async def _identity_mismatch(pool: Any, cache: dict[str, dict[str, Any]], m: FeedingMessage) -> tuple[str, str] | None:
    """The message must describe the lot it names (farmer, site, genetics never change)."""
    lot = cache.get(m.lot_id)
    if lot is None:
        lot = await lots.get_lot(pool, m.lot_id)
        cache[m.lot_id] = lot
    for field in ("farmer_id", "site_code", "genetics"):
        sent = getattr(m, field)
        if sent is not None and sent != lot[field]:
            return field, f"{field}: message says {sent!r} but lot {m.lot_id} has {lot[field]!r}"
    return None


async def handle(pool: Any, cache: dict[str, dict[str, Any]], raw: str, st: GavageWsStats) -> dict[str, Any]:
    if len(raw) > FRAME_LIMIT:
        return _error("message", f"message: frame is {len(raw)} bytes, limit is {FRAME_LIMIT}")
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return _error("message", "message: not valid JSON")
    if not isinstance(msg, dict):
        return _error("message", "message: expected a JSON object")
    if msg.get("type") == "ping":
        return {"type": "pong", "server_time": int(time.time() * 1000)}
    try:
        m = FeedingMessage.model_validate(msg)
    except ValidationError as exc:
        return _error(*_validation_reason(exc), msg)
    try:
        bad = await _identity_mismatch(pool, cache, m)
        if bad is not None:
            return _error(*bad, msg)
        res = await gavage.record_feeding(
            pool, m.lot_id, day=m.day, moment=m.moment, planned_dose_g=m.planned_dose_g,
            actual_dose_g=m.actual_dose_g, mean_weight_g=m.mean_weight_g, live_ducks=m.live_ducks,
            mortality_pct=m.mortality_pct, temperature_c=m.temperature_c, humidity_pct=m.humidity_pct,
            simulated_at=m.timestamp, ready_for_slaughter=m.ready_for_slaughter)
    except LotNotFound as exc:
        return _error("lot_id", f"lot_id: {exc}", msg)
    except RegistryError as exc:  # illegal lifecycle step, invalid value: the registry names it
        return _error("lot_id", str(exc), msg)
    except Exception as exc:  # noqa: BLE001 -- the gateway's own failure: the client should re-send later
        log.warning("/ws/gavage: %s: %s", type(exc).__name__, exc)
        return _error("gateway", f"gateway: {type(exc).__name__}, try again", msg, retryable=True)
    if res.new:
        st.saved += 1
    else:
        st.duplicates += 1
    return {"type": "ack", "msg_id": m.msg_id, "lot_id": m.lot_id, "day": m.day, "moment": m.moment,
            "status": "saved" if res.new else "duplicate", "state": res.lot["state"]}


@router.websocket("/ws/gavage", dependencies=WRITE_DEPENDENCIES)
async def gavage_stream(ws: WebSocket) -> None:
    pool = ws.app.state.pool
    st = stats_of(ws.app)
    await ws.accept()
    st.connections_total += 1
    st.connections_open += 1
    cache: dict[str, dict[str, Any]] = {}
    try:
        while True:
            frame = await ws.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if text is None:
                answer = _error("message", "message: binary frames are not accepted, send JSON text")
            else:
                answer = await handle(pool, cache, text, st)
            st.messages += 1
            if answer["type"] == "error":
                st.errors += 1
            await ws.send_json(answer)
    except WebSocketDisconnect:
        return
    finally:
        st.connections_open -= 1


@router.get("/api/gavage/stream-stats", response_model=GavageStreamStats, summary="Counters of the /ws/gavage stream (connections, messages)")
async def stream_stats(request: Request) -> dict[str, Any]:
    return asdict(stats_of(request.app))


@router.get("/api/gavage/feedings", response_model=FeedingPage, responses={404: {"description": "Unknown lot"}},
            summary="Recent gavage feedings, newest first: of the lots in progress unless a lot is named "
                    "(paginated; by lot and time)")
async def recent_feedings(
        request: Request, lot_id: LotFilter = None,
        active: Annotated[bool | None, Query(description="true: lots in progress only (created, gavage, ready, "
                                                         "inspecting); false: the others. Default: true, or every "
                                                         "state when lot_id names a lot")] = None,
        since: Since = None, until: Until = None, limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    if active is None and lot_id is None:
        active = True
    total, rows = await gavage.recent_feedings(request.app.state.pool, lot_id=lot_id, active=active, since=since,
                                               until=until, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "feedings": rows}
