"""Shared pieces of the control panel API: where children find the gateway, request field types."""

from __future__ import annotations

import secrets
import zlib
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import HTTPException, Request
from pydantic import AfterValidator, Field

from gateway.auth import mqtt_auth_enabled
from gateway.credentials import credentials_dir
from gateway.scenarios import Orchestrator
from gateway.supervisor import RunContext, Supervisor
from gateway.supervisor.catalogue import check_device_id, check_location, profile_names

PREFIX = "/api/control-panel"
TAG_SQAL = "Control Panel - SQAL Simulators"
TAG_GAVAGE = "Control Panel - Gavage Simulator"
TAG_CONSUMER = "Control Panel - Consumer Simulator"
TAG_ORCHESTRATE = "Control Panel - Orchestrated Scenarios"
TAGS_METADATA = [
    {"name": TAG_SQAL, "description": "Emulated SQAL devices (real firmware on MicroPython) as supervised processes."},
    {"name": TAG_GAVAGE, "description": "The gavage (feeding) simulator: creates lots, feeds them over /ws/gavage."},
    {"name": TAG_CONSUMER, "description": "The consumer simulator: scans product QR codes and leaves feedback."},
    {"name": TAG_ORCHESTRATE, "description": "Scenarios chaining gavage -> SQAL -> consumer on one lot id."},
]


def _profile(value: str) -> str:
    names = profile_names()
    if value not in names:
        raise ValueError(f"profile {value!r} unknown; choose one of {', '.join(names)}")
    return value


def _device_id(value: str) -> str:
    return check_device_id(value)


def _location(value: str) -> str:
    return check_location(value)


DeviceId = Annotated[str, AfterValidator(_device_id),
                     Field(description="Device id, ^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$", examples=["ESP32_DEMO_LL_01"])]
Location = Annotated[str, AfterValidator(_location), Field(description="Printable, at most 64 characters",
                                                           examples=["Ligne A - Landes"])]
Profile = Annotated[str, AfterValidator(_profile),
                    Field(description="Quality profile of the emulated product scene: default (the trade's mix), "
                                      "premium, good, acceptable, low, defective")]
Duration = Annotated[float, Field(ge=0, le=7 * 86400, description="Seconds to run; 0 = until stopped")]
Seed = Annotated[int | None, Field(ge=0, le=2**31 - 1, description="Random seed; omitted = a fresh one per start "
                                                                      "(reported in the status config)")]
Interval = Annotated[float, Field(ge=0.2, le=3600, description="Seconds between two samples of a device")]


def supervisor(request: Request) -> Supervisor:
    sup: Supervisor | None = getattr(request.app.state, "supervisor", None)
    if sup is None:
        raise HTTPException(503, "the simulator supervisor is not running (gateway starting or stopping)")
    return sup


def orchestrator(request: Request) -> Orchestrator:
    orch: Orchestrator | None = getattr(request.app.state, "orchestrator", None)
    if orch is None:
        raise HTTPException(503, "the simulator supervisor is not running (gateway starting or stopping)")
    return orch


def api_url(state: Any) -> str:
    """The gateway's own base URL as the children reach it: set by the server once bound (port 0
    resolves then), else from the settings; a wildcard bind is reached on loopback."""
    url: str | None = getattr(state, "api_url", None)
    if url:
        return url
    s = state.settings
    host = "127.0.0.1" if s.http_host in ("0.0.0.0", "", "::") else s.http_host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{s.http_port}"


def run_context(request: Request) -> RunContext:
    return context_for(request.app.state)


def context_for(state: Any) -> RunContext:
    """RunContext from an app's state (the demo command and tests start scenarios without a request)."""
    settings = state.settings
    ingest = getattr(state, "ingest", None)
    broker = (ingest.broker_url if ingest is not None else None) or settings.mqtt_url
    device_broker, needs_login = device_broker_url(broker)
    authenticates = mqtt_auth_enabled(settings) or needs_login
    return RunContext(api_url=api_url(state), broker_url=device_broker, data_dir=settings.data_dir,
                      api_token=settings.api_token,
                      device_credentials=credentials_dir(settings) if broker and authenticates else None)


def device_broker_url(url: str | None) -> tuple[str | None, bool]:
    """(the broker URL without any login in it, whether it had one). SQAL_MQTT_URL carries the
    gateway's own login when the broker authenticates: devices get their own, never that one."""
    if url is None:
        return None, False
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, False
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])), True


def fresh_seed(seed: int | None, salt: str = "") -> int:
    """The caller's seed, or a new one drawn per start (reported in the status `config`)."""
    if seed is not None:
        return seed
    return (secrets.randbelow(2**31) ^ zlib.crc32(salt.encode())) % 2**31


# ---- answers in v1's shapes (gateway/api/models_control.py) ----

LABELS = {"gavage": "Gavage simulator", "consumer": "Consumer simulator"}
RUNNING_STATES = ("running", "stopping")  # a live process (what running_count counts)


def label(name: str) -> str:
    return LABELS.get(name, f"Simulator {name}")


def process_status(info: dict[str, Any]) -> dict[str, Any]:
    """A supervisor status (Child.info) with v1's SimulatorStatus fields added:
    container_name, created_at, whole uptime_seconds, location, interval, config_profile."""
    name = str(info.get("name") or info.get("device_id"))
    if info.get("status") == "not_found":
        return {"device_id": name, "name": name, "container_name": name, "kind": name, "status": "not_found"}
    cfg = info.get("config") or {}
    sqal = info.get("kind") == "sqal_device"
    uptime = info.get("uptime_seconds")
    return {**info, "container_name": name, "created_at": info.get("started_at"),
            "uptime_seconds": int(uptime) if uptime is not None else None,
            "location": cfg.get("location") if sqal else None, "interval": cfg.get("interval") if sqal else None,
            "config_profile": cfg.get("profile") if sqal else None}


def start_answer(outcome: str, info: dict[str, Any]) -> dict[str, Any]:
    """The answer of a start: `status` is what the request did, `state` the process's state."""
    name = str(info["name"])
    message = (f"{label(name)} started (pid {info.get('pid')})" if outcome == "started"
               else f"{label(name)} is already running (pid {info.get('pid')})")
    return {**process_status(info), "status": outcome, "state": info["status"], "container_id": info.get("run_id"),
            "message": message}


def stop_answer(info: dict[str, Any]) -> dict[str, Any]:
    """The answer of a stop (Supervisor.stop's status, with `stopped`)."""
    name = str(info["name"])
    stopped = bool(info.get("stopped"))
    return {**process_status(info), "status": "stopped" if stopped else "not_running", "state": info["status"],
            "stopped": stopped, "message": f"{label(name)} stopped" if stopped else f"{label(name)} is not running"}


def step_answer(name: str, step: dict[str, Any]) -> dict[str, Any]:
    """A scenario step (orchestrator entry: status, run_id, pid, started_at | error) with the
    v1's container_name, container_id and message."""
    status = step.get("status")
    message = {"started": f"{label(name)} started", "already_running": f"{label(name)} is already running"}.get(
        str(status), f"{label(name)} failed to start: {step.get('error')}")
    return {**step, "container_name": name, "container_id": step.get("run_id"), "message": message}
