"""Orchestrated scenarios (domain.md section 6): which simulators, which SQAL devices, which delays.

`Orchestrator` starts a scenario step by step through the supervisor and remembers the last one
for the status. Device sets and delays are v1's; `interval` overrides every device's
sample interval (tests and the demo use it to go fast), `profile` the scene's quality profile.
An option that a scenario does not use is refused (ScenarioError -> 422) rather than silently
ignored: a client must learn that its option had no effect.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.supervisor import (
    ConsumerParams,
    DeviceParams,
    GavageParams,
    RunContext,
    ShippingParams,
    StartError,
    Supervisor,
    UnknownSimulator,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DeviceSlot:
    device_id: str
    location: str
    interval: float


def _slots(*rows: tuple[str, str, float]) -> tuple[DeviceSlot, ...]:
    return tuple(DeviceSlot(d, loc, i) for d, loc, i in rows)


DEVICE_SETS: dict[str, tuple[DeviceSlot, ...]] = {
    "complete_demo": _slots(("ESP32_DEMO_LL_01", "Ligne A - Landes", 30), ("ESP32_DEMO_LL_02", "Ligne B - Landes", 35),
                            ("ESP32_DEMO_LS_01", "Landes Sud", 40), ("ESP32_DEMO_MT_01", "Mont-de-Marsan", 45)),
    "quality_focus": _slots(("ESP32_QF_LL_01", "Ligne A - Landes", 20), ("ESP32_QF_LL_02", "Ligne B - Landes", 25),
                            ("ESP32_QF_LS_01", "Landes Sud", 30), ("ESP32_QF_MT_01", "Mont-de-Marsan", 35),
                            ("ESP32_QF_BS_01", "Bayonne Sud", 40), ("ESP32_QF_PX_01", "Pays Basque", 45)),
    "multi_site": _slots(("ESP32_LL_01", "Ligne A - Landes", 30), ("ESP32_LL_02", "Ligne B - Landes", 45),
                         ("ESP32_LS_01", "Landes Sud", 35), ("ESP32_MT_01", "Mont-de-Marsan", 40)),
    "stress_test": tuple(DeviceSlot(f"ESP32_STRESS_{i:02d}", f"Stress test {i:02d}", 10) for i in range(1, 11)),
    "production_demo": _slots(("ESP32_DEMO_01", "Production line 1", 20), ("ESP32_DEMO_02", "Production line 2", 25)),
}
SQAL_SCENARIOS = ("multi_site", "stress_test", "production_demo")
ORCHESTRATED = ("complete_demo", "quality_focus", "gavage_realtime", "consumer_analysis")

# seconds waited after a step, before the next one (v1's delays)
DELAY_AFTER_GAVAGE = {"complete_demo": 2.0}
DELAY_AFTER_SQAL = {"complete_demo": 5.0, "quality_focus": 3.0}
CONSUMER_RATE_FACTOR = {"quality_focus": 2}  # "consumer at twice the rate"

# which options each orchestrated scenario uses
_GAVAGE_OPTS = {"nb_lots", "acceleration"}
_SQAL_OPTS = {"nb_sqal_devices", "interval", "profile"}
_CONSUMER_OPTS = {"feedbacks_per_hour", "min_rating", "max_rating", "use_active_lots"}
_SHIPPING_OPTS = {"shipments_per_hour"}  # complete_demo's dispatch office (emulation/shipping.py)
USES: dict[str, set[str]] = {
    "complete_demo": _GAVAGE_OPTS | _SQAL_OPTS | _SHIPPING_OPTS | _CONSUMER_OPTS,
    "quality_focus": _SQAL_OPTS | _CONSUMER_OPTS,
    "gavage_realtime": set(_GAVAGE_OPTS),
    "consumer_analysis": set(_CONSUMER_OPTS),
}
COMMON_OPTS = {"scenario_name", "duration", "seed"}


class ScenarioError(ValueError):
    """Options that do not fit the scenario; the message names the option."""


@dataclass
class ScenarioOptions:
    scenario_name: str = "complete_demo"
    duration: float = 0
    acceleration: float = 1440
    nb_lots: int = 3
    nb_sqal_devices: int | None = None  # None: every device of the scenario
    feedbacks_per_hour: float = 10
    min_rating: int = 1
    max_rating: int = 5
    use_active_lots: bool = True
    interval: float | None = None  # None: each device's own interval from the scenario
    profile: str = "default"
    shipments_per_hour: float = 60  # dispatches of products to customers (complete_demo)
    seed: int = 1
    explicit: set[str] = field(default_factory=set)  # options the caller set (the others are defaults)
    max_feedbacks_per_hour: float | None = None  # the HTTP API's cap on the consumer's effective rate


def check_options(o: ScenarioOptions) -> None:
    if o.scenario_name not in USES:
        raise ScenarioError(f"scenario_name {o.scenario_name!r} unknown; choose one of {', '.join(ORCHESTRATED)}")
    unused = sorted(o.explicit - USES[o.scenario_name] - COMMON_OPTS)
    if unused:
        raise ScenarioError(f"{', '.join(unused)} do(es) not apply to scenario {o.scenario_name!r} "
                            f"(it uses {', '.join(sorted(USES[o.scenario_name] | COMMON_OPTS))})")
    devices = DEVICE_SETS.get(o.scenario_name, ())
    if o.nb_sqal_devices is not None and devices and not 1 <= o.nb_sqal_devices <= len(devices):
        raise ScenarioError(f"nb_sqal_devices must be between 1 and {len(devices)} for {o.scenario_name}, "
                            f"got {o.nb_sqal_devices}")
    factor = CONSUMER_RATE_FACTOR.get(o.scenario_name, 1)
    if factor > 1 and o.max_feedbacks_per_hour and o.feedbacks_per_hour * factor > o.max_feedbacks_per_hour:
        cap = o.max_feedbacks_per_hour
        raise ScenarioError(f"feedbacks_per_hour must be at most {cap // factor:g} for {o.scenario_name} "
                            f"(its consumer runs at {factor}x that rate, {cap:g} at most), got {o.feedbacks_per_hour}")
    if o.min_rating > o.max_rating:
        raise ScenarioError(f"min_rating ({o.min_rating}) must not exceed max_rating ({o.max_rating})")


def device_seed(device_id: str, seed: int) -> int:
    """Each device its own stable random stream, shifted by the scenario seed."""
    return (zlib.crc32(device_id.encode()) + seed) % 2**31


def _brief(status: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"status": status, "run_id": info.get("run_id"), "pid": info.get("pid"), "started_at": info.get("started_at")}


class Orchestrator:
    def __init__(self, supervisor: Supervisor, *, delay_scale: float = 1.0) -> None:
        self.supervisor = supervisor
        self.delay_scale = delay_scale  # 1.0 = v1's delays; only embedding code changes it
        self.scenario: str | None = None
        self.started_at: datetime | None = None
        self.options: dict[str, Any] | None = None

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.delay_scale > 0:
            await asyncio.sleep(seconds * self.delay_scale)

    # ---- single simulators (also used by the control panel endpoints) ----

    async def start_gavage(self, p: GavageParams, ctx: RunContext) -> tuple[str, dict[str, Any]]:
        return await self.supervisor.start("gavage", "gavage", p, ctx)

    async def start_consumer(self, p: ConsumerParams, ctx: RunContext) -> tuple[str, dict[str, Any]]:
        return await self.supervisor.start("consumer", "consumer", p, ctx)

    async def start_shipping(self, p: ShippingParams, ctx: RunContext) -> tuple[str, dict[str, Any]]:
        return await self.supervisor.start("shipping", "shipping", p, ctx)

    async def start_device(self, p: DeviceParams, ctx: RunContext) -> tuple[str, dict[str, Any]]:
        # on-failure: a device whose process dies (not stopped by us) is powered up again
        return await self.supervisor.start(p.device_id, "sqal_device", p, ctx, restart="on-failure", max_restarts=5)

    async def start_devices(self, slots: tuple[DeviceSlot, ...], ctx: RunContext, *, interval: float | None,
                            profile: str, duration: float, seed: int) -> tuple[list[dict[str, Any]], list[str]]:
        results: list[dict[str, Any]] = []
        errors: list[str] = []
        for slot in slots:
            entry: dict[str, Any] = {"device_id": slot.device_id, "location": slot.location,
                                     "interval": interval if interval is not None else slot.interval}
            try:
                p = DeviceParams(device_id=slot.device_id, location=slot.location, interval=entry["interval"],
                                 profile=profile, seed=device_seed(slot.device_id, seed), duration=duration)
                status, info = await self.start_device(p, ctx)
                entry.update(_brief(status, info))
            except (StartError, ValueError) as exc:
                entry.update(status="error", error=str(exc))
                errors.append(f"{slot.device_id}: {exc}")
            results.append(entry)
        return results, errors

    # ---- SQAL-only scenarios (/scenarios/start) ----

    async def start_sqal_scenario(self, name: str, ctx: RunContext, *, interval: float | None = None,
                                  profile: str = "default", duration: float = 0, seed: int = 1) -> dict[str, Any]:
        if name not in SQAL_SCENARIOS:
            raise ScenarioError(f"scenario_name {name!r} unknown; choose one of {', '.join(SQAL_SCENARIOS)}")
        started = datetime.now(UTC)
        devices, errors = await self.start_devices(DEVICE_SETS[name], ctx, interval=interval, profile=profile,
                                                   duration=duration, seed=seed)
        running = sum(1 for d in devices if d["status"] in ("started", "already_running"))
        return {"scenario": name, "status": _overall(errors, running), "devices": devices, "errors": errors,
                "running_count": running, "started_at": started.isoformat()}

    # ---- orchestrated scenarios (/orchestrate/...) ----

    async def start(self, o: ScenarioOptions, ctx: RunContext, active_lots: Any = None) -> dict[str, Any]:
        """Start the scenario's steps in order with their delays. `active_lots`: async () -> int, for
        the consumer entry's active_lots_count."""
        check_options(o)
        name = o.scenario_name
        self.scenario, self.started_at = name, datetime.now(UTC)
        self.options = {k: v for k, v in o.__dict__.items() if k not in ("explicit", "max_feedbacks_per_hour")}
        errors: list[str] = []
        gavage: dict[str, Any] | None = None
        consumer: dict[str, Any] | None = None
        shipping: dict[str, Any] | None = None
        devices: list[dict[str, Any]] = []

        if "nb_lots" in USES[name]:
            try:
                status, info = await self.start_gavage(
                    GavageParams(nb_lots=o.nb_lots, acceleration=o.acceleration, duration=o.duration, seed=o.seed), ctx)
                gavage = _brief(status, info)
            except (StartError, ValueError) as exc:
                gavage = {"status": "error", "error": str(exc)}
                errors.append(f"gavage: {exc}")
            await self._sleep(DELAY_AFTER_GAVAGE.get(name, 0))

        if name in DEVICE_SETS:
            slots = DEVICE_SETS[name]
            if o.nb_sqal_devices is not None:
                slots = slots[:o.nb_sqal_devices]
            devices, dev_errors = await self.start_devices(slots, ctx, interval=o.interval, profile=o.profile,
                                                           duration=o.duration, seed=o.seed)
            errors += dev_errors
            await self._sleep(DELAY_AFTER_SQAL.get(name, 0))

        if "shipments_per_hour" in USES[name]:  # products of inspected lots go out to customers
            try:
                status, info = await self.start_shipping(
                    ShippingParams(shipments_per_hour=o.shipments_per_hour, duration=o.duration,
                                                seed=o.seed), ctx)
                shipping = _brief(status, info)
            except (StartError, ValueError) as exc:
                shipping = {"status": "error", "error": str(exc)}
                errors.append(f"shipping: {exc}")

        if "feedbacks_per_hour" in USES[name]:
            rate = o.feedbacks_per_hour * CONSUMER_RATE_FACTOR.get(name, 1)
            try:
                status, info = await self.start_consumer(
                    ConsumerParams(feedbacks_per_hour=rate, min_rating=o.min_rating, max_rating=o.max_rating,
                                   duration=o.duration, use_active_lots=o.use_active_lots, seed=o.seed), ctx)
                consumer = _brief(status, info)
                consumer["feedbacks_per_hour"] = rate
                if active_lots is not None:
                    consumer["active_lots_count"] = await active_lots()
            except (StartError, ValueError) as exc:
                consumer = {"status": "error", "error": str(exc)}
                errors.append(f"consumer: {exc}")

        running = len(self.supervisor.running())
        return {"scenario": name, "status": _overall(errors, running), "gavage": gavage, "sqal_devices": devices,
                "shipping": shipping, "consumer": consumer, "errors": errors, "running_count": running,
                "started_at": self.started_at.isoformat()}

    async def stop_all(self) -> dict[str, Any]:
        results = await self.supervisor.stop_all()
        stopped = [r for r in results if r.get("stopped")]
        return {"status": "stopped", "scenario": self.scenario,
                "gavage": any(r["kind"] == "gavage" for r in stopped),
                "consumer": any(r["kind"] == "consumer" for r in stopped),
                "shipping": any(r["kind"] == "shipping" for r in stopped),
                "sqal_devices": [r["device_id"] for r in stopped if r["kind"] == "sqal_device"],
                "stopped": [r["name"] for r in stopped], "total_stopped": len(stopped),
                "stopped_at": datetime.now(UTC).isoformat()}

    def simulator_status(self, name: str) -> dict[str, Any]:
        try:
            return self.supervisor.status(name)
        except UnknownSimulator:
            return {"name": name, "status": "not_found"}

    def status(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "options": self.options,
                "started_at": self.started_at.isoformat() if self.started_at else None,
                "gavage": self.simulator_status("gavage"), "consumer": self.simulator_status("consumer"),
                "shipping": self.simulator_status("shipping"),
                "sqal_devices": self.supervisor.list_status("sqal_device"),
                "running_count": len(self.supervisor.running())}


def _overall(errors: list[str], running: int) -> str:
    if not errors:
        return "running"
    return "partial" if running else "error"
