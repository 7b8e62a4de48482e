"""Response models of the gateway's status routes: /health (gateway/app.py), /api/ingest/status
(gateway/ingest/service.py), /api/dispatch/status (gateway/dispatch.py), /api/gavage/stream-stats
(gateway/api/gavage_ws.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="ok, or degraded (HTTP 503) when the database does not "
                                                          "answer")
    database: str = Field(description="ok, or error: <why>")
    version: str | None = Field(default=None, description="The gateway's version (absent when degraded)")


class IngestStatus(BaseModel):
    broker_url: str | None = Field(description="The MQTT broker of the devices, without password")
    engine: Literal["embedded", "external"] = Field(description="embedded message engine, or SQAL_NATS_URL")
    nats_servers: list[str] = Field(description="The engine's URLs, without password")
    connected: bool = Field(description="Connected to the engine")
    subscribed: bool = Field(description="Subscribed to the device subjects")
    last_error: str | None = Field(description="The last connection error, if any")
    in_hand: int = Field(description="Messages received and not yet acknowledged")
    redelivered: int = Field(description="Messages the engine delivered again")
    queue_depth: int = Field(description="Messages waiting for the next database batch")
    committed_batches: int = Field(description="Batches committed since the start")
    realtime_subscribers: int = Field(description="Clients on /ws/realtime")


class DispatchStatus(BaseModel):
    """The dispatcher's counters; only `enabled` when it is off (no broker, or SQAL_DISPATCH_ENABLED=false)."""

    enabled: bool = Field(description="The dispatcher runs")
    inspection_samples: int | None = Field(default=None, description="Samples that close a lot's inspection")
    poll_s: float | None = Field(default=None, description="Seconds between two polls")
    mqtt_connected: bool | None = Field(default=None, description="Its MQTT client is connected")
    pending_commands: int | None = Field(default=None, description="Commands sent and not yet confirmed")
    assigned: int | None = Field(default=None, description="Lots assigned to a device")
    closed: int | None = Field(default=None, description="Inspections closed")
    released: int | None = Field(default=None, description="Assignments released (device offline)")
    products: int | None = Field(default=None, description="Products made from inspected lots")
    commands_sent: int | None = Field(default=None, description="Commands sent to devices")
    commands_resent: int | None = Field(default=None, description="Commands sent again")
    commands_confirmed: int | None = Field(default=None, description="Commands the device confirmed")
    commands_failed: int | None = Field(default=None, description="Commands that failed or timed out")
    errors: int | None = Field(default=None, description="Failed polls")
    last_error: str | None = Field(default=None, description="The last failed poll's error")
    polls: int | None = Field(default=None, description="Polls since the start")
    events: list[str] = Field(default_factory=list, description="The last 20 events, oldest first")


class GavageStreamStats(BaseModel):
    connections_total: int = Field(description="Connections to /ws/gavage since the start")
    connections_open: int = Field(description="Connections open now")
    messages: int = Field(description="Messages received")
    saved: int = Field(description="Feedings saved")
    duplicates: int = Field(description="Feedings already recorded (acknowledged duplicate)")
    errors: int = Field(description="Messages refused")
