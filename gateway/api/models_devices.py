"""Response models of /api/devices and /api/ingest/rejects (gateway/api/devices.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Device(BaseModel):
    """A SQAL board (real or emulated) as the ingest sees it."""

    id: str = Field(description="Device id, e.g. ESP32_DEMO_LL_01")
    site_code: str | None = Field(description="Site code from the id (LL, LS, MT, BS, PX...); null if none")
    location: str | None = Field(description="Location the device reports in its status")
    firmware: str | None = Field(description="Firmware version it reports")
    boot: int | None = Field(description="Its boot counter (the dedupe key's first half)")
    state: Literal["online", "offline", "unknown"] = Field(description="From its last status (birth / last will)")
    state_at: datetime | None = Field(description="When the gateway applied that status")
    status_ts: datetime | None = Field(description="The status message's own time (device clock)")
    degraded: list[str] = Field(description="Sensors the device reports as degraded")
    safe_mode: bool = Field(description="The device runs in safe mode")
    first_seen: datetime = Field(description="First message from it")
    last_seen: datetime = Field(description="Last message from it")
    last_sample_at: datetime | None = Field(description="When its last stored sample arrived")
    samples_stored: int = Field(description="Samples stored")
    duplicates: int = Field(description="Samples received again and ignored (same boot and seq)")
    rejects: int = Field(description="Messages refused (see /api/ingest/rejects)")
    telemetry: dict[str, Any] | None = Field(description="Its last telemetry message, as decoded")
    telemetry_at: datetime | None = Field(description="When that telemetry arrived")
    last_result: dict[str, Any] | None = Field(description="Its last command result, as decoded")


class DeviceList(BaseModel):
    devices: list[Device] = Field(description="Devices by id")
    count: int = Field(description="Devices in this page")


class DeviceSample(BaseModel):
    id: int = Field(description="Sample id")
    device_id: str = Field(description="The device")
    boot: int = Field(description="Device boot counter")
    seq: int = Field(description="Sequence number within the boot")
    lot_id: str | None = Field(description="The lot it is linked to; null when unlinked")
    link_kind: Literal["explicit", "assignment", "none"] = Field(description="How it was linked to the lot")
    link_issue: str | None = Field(description="unknown_lot or no_assignment when it could not be linked")
    measured_at: datetime | None = Field(description="Device time; null when its clock was not trusted")
    received_at: datetime = Field(description="When the gateway received it")
    clock_synced: bool = Field(description="The device clock was synchronised")
    score: float | None = Field(description="The gateway's grade score (authoritative)")
    grade: str | None = Field(description="The gateway's grade: A+, A, B, C, REJECT")
    device_score: float | None = Field(description="The device's provisional score")
    device_grade: str | None = Field(description="The device's provisional grade")
    weight_g: float | None = Field(description="Measured weight (g)")
    alerts: list[str] = Field(description="Alerts raised on the sample")


class DeviceSamples(BaseModel):
    device_id: str = Field(description="The device")
    samples: list[DeviceSample] = Field(description="Newest (boot, seq) first")
    count: int = Field(description="Samples in this answer")


class Reject(BaseModel):
    id: int = Field(description="Reject id")
    received_at: datetime = Field(description="When it arrived")
    source: Literal["mqtt", "ws"] = Field(description="Transport it came on")
    topic: str | None = Field(description="MQTT topic, or the WebSocket path")
    device_id: str | None = Field(description="Device id from the topic/path when it parsed")
    reason_key: str = Field(description="The field the reason is about, indices removed: 'tof.dist'")
    reason: str = Field(description="Why it was refused")
    payload_size: int = Field(description="Size of the payload before truncation (bytes)")
    truncated: bool = Field(description="The stored payload was truncated")
    payload_text: str | None = Field(default=None, description="The stored payload, when it is UTF-8 text")
    payload_hex: str | None = Field(default=None, description="The stored payload in hex, when it is not text")


class Rejects(BaseModel):
    rejects: list[Reject] = Field(description="Newest first")
    by_reason: dict[str, int] = Field(description="Count of every reject by reason_key")
