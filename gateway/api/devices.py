"""/api/devices: SQAL boards as the ingest sees them (status, telemetry, counters)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request

from gateway.api.models_devices import Device as DeviceModel
from gateway.api.models_devices import DeviceList, DeviceSamples, Rejects
from registry import devices as reg_devices
from registry.rejects import count_by_reason, list_rejects

router = APIRouter(tags=["devices"])
DEVICE_ID = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$", description="Device id, e.g. ESP32_DEMO_LL_01")
_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown device"}}


@router.get("/api/devices", response_model=DeviceList, summary="List devices (filter by site code or state)")
async def list_devices(request: Request, site: str | None = Query(None, pattern=r"^[A-Za-z]{2,4}$"),
                       state: Literal["online", "offline", "unknown"] | None = None,
                       limit: int = Query(500, ge=1, le=5000), offset: int = Query(0, ge=0)) -> dict[str, Any]:
    rows = await reg_devices.list_devices(request.app.state.pool, site_code=site.upper() if site else None,
                                          state=state, limit=limit, offset=offset)
    return {"devices": rows, "count": len(rows)}


@router.get("/api/devices/{device_id}", response_model=DeviceModel, responses=_UNKNOWN,
            summary="One device, with its latest telemetry and counters")
async def get_device(request: Request, device_id: str = DEVICE_ID) -> dict[str, Any]:
    row = await reg_devices.get_device(request.app.state.pool, device_id)
    if row is None:
        raise HTTPException(404, f"device {device_id} not found")
    return row


@router.get("/api/devices/{device_id}/samples", response_model=DeviceSamples, responses=_UNKNOWN,
            summary="A device's latest samples, newest (boot, seq) first")
async def device_samples(request: Request, device_id: str = DEVICE_ID,
                         limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    pool = request.app.state.pool
    if await reg_devices.get_device(pool, device_id) is None:
        raise HTTPException(404, f"device {device_id} not found")
    rows = await reg_devices.device_samples(pool, device_id, limit=limit)
    return {"device_id": device_id, "samples": rows, "count": len(rows)}


@router.get("/api/ingest/rejects", tags=["ingest"], response_model=Rejects, summary="Rejected messages, newest first, with reasons")
async def rejects(request: Request, reason_key: str | None = Query(None, max_length=48),
                  device_id: str | None = Query(None, max_length=48),
                  limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> dict[str, Any]:
    pool = request.app.state.pool
    rows = await list_rejects(pool, limit=limit, offset=offset, reason_key=reason_key, device_id=device_id)
    for r in rows:  # raw bytes as text when they are text, else hex
        raw = bytes(r.pop("payload"))
        try:
            r["payload_text"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            r["payload_hex"] = raw.hex()
    return {"rejects": rows, "by_reason": await count_by_reason(pool)}
