"""/api/ota: releases, rollouts in waves, their devices' states and progress, retry of the failed
devices, rollback, and the event history (per rollout, per device). docs/ota.md, "Gateway".

Reads are open like the other GET routes; every state-changing route needs the API token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.models_common import RequestBody, invalid_input
from gateway.ota.service import OtaService
from registry import ota as reg
from registry.errors import InvalidInput

router = APIRouter(tags=["ota"])
VERSION = r"^[0-9]{1,4}(\.[0-9]{1,4}){0,3}$"
DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$"
ROLLOUT_ID = Path(ge=1, le=2**63 - 1, description="A rollout's id")
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown release or rollout"}}
_WRITE: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown release or rollout"},
    422: {"description": "Refused (the reason in detail): a release whose signature does not verify, no device "
                         "matching, a rollout busy..."}}


class Release(BaseModel):
    version: str = Field(description="The release's version (its application's VERSION)")
    size: int = Field(description="Bytes of files a board downloads")
    files: int = Field(description="Files in the release")
    registered_at: datetime = Field(description="When the gateway verified and registered it")


class ReleaseDetail(Release):
    manifest: dict[str, Any] = Field(description="The signed manifest: version, min_version, files, sizes, SHA-256")
    signature: str = Field(description="Ed25519 signature of the manifest's SHA-256, hex")


class ReleaseList(BaseModel):
    releases: list[Release] = Field(description="Registered releases, newest first")


class RegisterRelease(RequestBody):
    version: str = Field(pattern=VERSION, description="A release directory in SQAL_OTA_RELEASES_DIR")


class NewRollout(RequestBody):
    version: str = Field(pattern=VERSION, description="A registered release")
    site: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,4}$", description="Only the devices of this site")
    from_version: str | None = Field(default=None, min_length=1, max_length=16, pattern=r"^[ -~]+$",
                                     description="Only the devices that run this version now")
    devices: list[Annotated[str, Field(pattern=DEVICE_ID)]] | None = Field(default=None, max_length=5000,
                                                                       description="Only these devices")
    waves: list[Annotated[str, Field(pattern=r"^[0-9]{1,6}(\.[0-9]{1,3})?%?$")]] = Field(
        default=["1", "10%", "100%"], min_length=1, max_length=20,
        description="Cumulative wave sizes: a count (5) or a share of the devices (10%)")
    max_failures: float = Field(default=0.2, ge=0, le=100000, description="Stop after a wave in which failed "
                                "devices exceed this share of those tried (a number >= 1: this many devices)")
    probation_s: int | None = Field(default=None, ge=10, le=3600, description="The boards' health-check deadline "
                                    "(default SQAL_OTA_PROBATION_S)")


class RolloutDevice(BaseModel):
    device_id: str = Field(description="The device")
    wave: int | None = Field(description="The wave that reached it; null: not reached")
    state: str = Field(description="skipped (not reached), queued, downloading, verifying, pending (probation), "
                                   "confirmed, failed (refused, with the reason), rolled_back, lost")
    progress: int = Field(description="Download progress, %")
    reason: str | None = Field(description="Why it failed or rolled back, as the board says it")
    attempts: int = Field(description="Updates tried on it (a retry adds one)")
    updated_at: datetime = Field(description="When its state last changed")


class Rollout(BaseModel):
    id: int = Field(description="The rollout's id")
    version: str = Field(description="The release it rolls out")
    state: str = Field(description="created, running, stopped (threshold), completed, cancelled, rolled_back, "
                                   "interrupted (the gateway stopped)")
    reason: str | None = Field(description="Why it stopped (the threshold, the operator)")
    selector: dict[str, Any] = Field(description="How its devices were chosen")
    waves: list[int] = Field(description="Cumulative device counts per wave")
    max_failures: float = Field(description="The failure threshold (a share, or a count when >= 1)")
    probation_s: int | None = Field(description="The boards' health-check deadline, s")
    created_at: datetime = Field(description="When it was created")
    updated_at: datetime = Field(description="When its state last changed")


class RolloutDetail(Rollout):
    devices: list[RolloutDevice] = Field(description="Its devices, in wave order")
    counts: dict[str, int] = Field(description="Devices per state")


class RolloutList(BaseModel):
    rollouts: list[Rollout] = Field(description="Rollouts, newest first")


class OtaEvent(BaseModel):
    id: int = Field(description="The event's id (its order among events of the same time)")
    at: datetime = Field(description="When it happened (gateway clock)")
    rollout_id: int | None = Field(description="The rollout it belongs to")
    device_id: str | None = Field(description="Null: an event of the rollout itself (wave started, stopped...)")
    kind: str = Field(description="rollout_started, wave_started, wave_ended, device_<state>, rollout_<state>, "
                                  "retry_started, rollback_sent")
    data: dict[str, Any] = Field(description="Its details (reason, progress, counts...)")


class OtaEvents(BaseModel):
    events: list[OtaEvent] = Field(description="Oldest first")


async def _call(coro: Any) -> dict[str, Any]:
    """A service call; its refusals (InvalidInput: the reason) are 422 with the reason as detail."""
    try:
        out: dict[str, Any] = await coro
        return out
    except (reg.ReleaseNotFound, reg.RolloutNotFound) as e:
        raise HTTPException(404, str(e)) from None
    except InvalidInput as e:
        raise invalid_input(str(e)) from None


def _svc(request: Request) -> OtaService:
    svc: OtaService | None = getattr(request.app.state, "ota", None)
    if svc is None:
        raise HTTPException(503, "over-the-air updates need the ingest (the boards' broker): it is disabled")
    return svc


@router.get("/api/ota/releases", response_model=ReleaseList, summary="Registered releases, newest first")
async def list_releases(request: Request) -> dict[str, Any]:
    return {"releases": await reg.list_releases(request.app.state.pool)}


@router.post("/api/ota/releases", response_model=ReleaseDetail, status_code=201, dependencies=WRITE_DEPENDENCIES,
             responses=_WRITE,
             summary="Register a release of the releases directory (its signature verified with the public key)")
async def register_release(request: Request, body: RegisterRelease) -> dict[str, Any]:
    return await _call(_svc(request).register_release(body.version))


@router.get("/api/ota/releases/{version}", response_model=ReleaseDetail, responses=_NOT_FOUND,
            summary="One release and its manifest")
async def get_release(request: Request, version: str = Path(pattern=VERSION)) -> dict[str, Any]:
    try:
        return await reg.get_release(request.app.state.pool, version)
    except reg.ReleaseNotFound as e:
        raise HTTPException(404, str(e)) from None


@router.post("/api/ota/rollouts", response_model=RolloutDetail, status_code=201, dependencies=WRITE_DEPENDENCIES,
             responses=_WRITE,
             summary="Roll a release out to devices (by site, current version, list) in waves")
async def create_rollout(request: Request, body: NewRollout) -> dict[str, Any]:
    return await _call(_svc(request).create_rollout(body.version, site=body.site.upper() if body.site else None,
                                                    from_version=body.from_version, devices=body.devices,
                                                    waves=body.waves, max_failures=body.max_failures,
                                                    probation_s=body.probation_s))


@router.get("/api/ota/rollouts", response_model=RolloutList, summary="Rollouts, newest first")
async def list_rollouts(request: Request, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    return {"rollouts": await reg.list_rollouts(request.app.state.pool, limit=limit)}


async def _rollout(request: Request, rollout_id: int) -> dict[str, Any]:
    try:
        return await reg.get_rollout(request.app.state.pool, rollout_id)
    except reg.RolloutNotFound as e:
        raise HTTPException(404, str(e)) from None


@router.get("/api/ota/rollouts/{rollout_id}", response_model=RolloutDetail, responses=_NOT_FOUND,
            summary="A rollout: each device's state and progress")
async def get_rollout(request: Request, rollout_id: int = ROLLOUT_ID) -> dict[str, Any]:
    return await _rollout(request, rollout_id)


@router.post("/api/ota/rollouts/{rollout_id}/retry", response_model=RolloutDetail, 
             dependencies=WRITE_DEPENDENCIES, responses=_WRITE,
             summary="Send the release again to the failed devices only")
async def retry_rollout(request: Request, rollout_id: int = ROLLOUT_ID) -> dict[str, Any]:
    await _rollout(request, rollout_id)
    return await _call(_svc(request).retry_failed(rollout_id))


@router.post("/api/ota/rollouts/{rollout_id}/rollback", response_model=RolloutDetail, 
             dependencies=WRITE_DEPENDENCIES, responses=_WRITE,
             summary="Return the devices this rollout updated to their previous release")
async def rollback_rollout(request: Request, rollout_id: int = ROLLOUT_ID) -> dict[str, Any]:
    await _rollout(request, rollout_id)
    return await _call(_svc(request).rollback(rollout_id))


@router.post("/api/ota/rollouts/{rollout_id}/cancel", response_model=RolloutDetail, 
             dependencies=WRITE_DEPENDENCIES, responses=_WRITE,
             summary="Start no further device or wave (those updating finish)")
async def cancel_rollout(request: Request, rollout_id: int = ROLLOUT_ID) -> dict[str, Any]:
    await _rollout(request, rollout_id)
    return await _call(_svc(request).cancel(rollout_id))


@router.get("/api/ota/rollouts/{rollout_id}/events", response_model=OtaEvents, responses=_NOT_FOUND,
            summary="A rollout's history, oldest first")
async def rollout_events(request: Request, rollout_id: int = ROLLOUT_ID, limit: int = Query(500, ge=1, le=5000),
                         offset: int = Query(0, ge=0)) -> dict[str, Any]:
    await _rollout(request, rollout_id)
    return {"events": await reg.events(request.app.state.pool, rollout_id=rollout_id, limit=limit, offset=offset)}


@router.get("/api/devices/{device_id}/ota/events", response_model=OtaEvents,
            summary="A device's update history across rollouts (independent of lots), oldest first")
async def device_events(request: Request, device_id: str = Path(pattern=DEVICE_ID),
                        limit: int = Query(500, ge=1, le=5000), offset: int = Query(0, ge=0)) -> dict[str, Any]:
    return {"events": await reg.events(request.app.state.pool, device_id=device_id, limit=limit, offset=offset)}
