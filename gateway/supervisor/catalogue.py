"""The fixed catalogue of commands the supervisor may run: the project's own simulators.

Each entry turns typed, validated parameters into an argv list (never a shell, never a string from
a request) plus environment. Secrets (the API token) go through the child's environment, not argv,
so they do not show in `ps`. Tests may `register()` a test-only entry through this Python API; the
HTTP API has no way to add one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$")
DEVICE_PASSWORD_ENV = "SQAL_DEVICE_MQTT_PASSWORD"  # read by emulation.run_device
RESERVED_NAMES = frozenset({"gavage", "consumer", "shipping"})  # supervisor names of the singleton simulators


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.match(device_id):
        raise ValueError(f"device_id {device_id!r} must match {DEVICE_ID.pattern}")
    if device_id.lower() in RESERVED_NAMES:
        raise ValueError(f"device_id {device_id!r} is reserved (the {device_id.lower()} simulator)")
    return device_id


def check_location(location: str) -> str:
    if len(location) > 64 or not location.isprintable():
        raise ValueError("location must be printable text of at most 64 characters")
    return location


def profile_names() -> tuple[str, ...]:
    from emulation.peripherals import profiles

    return tuple(profiles.names())


@dataclass(frozen=True)
class DeviceParams:
    device_id: str
    location: str = ""
    interval: float = 30.0
    profile: str = "default"
    seed: int = 1
    duration: float = 0.0

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        check_location(self.location)
        if not 0.1 <= self.interval <= 86400:
            raise ValueError(f"interval must be between 0.1 and 86400 s, got {self.interval}")
        if self.profile not in profile_names():
            raise ValueError(f"profile {self.profile!r} unknown; choose one of {', '.join(profile_names())}")
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0, got {self.duration}")


@dataclass(frozen=True)
class GavageParams:
    nb_lots: int = 3
    acceleration: float = 1440
    duration: float = 0
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.nb_lots <= 10:
            raise ValueError(f"nb_lots must be between 1 and 10, got {self.nb_lots}")
        # the HTTP API keeps v1's 1-10000; the demo and tests may go faster through Python
        if not 1 <= self.acceleration <= 1_000_000:
            raise ValueError(f"acceleration must be between 1 and 1000000, got {self.acceleration}")
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0, got {self.duration}")


@dataclass(frozen=True)
class ConsumerParams:
    feedbacks_per_hour: float = 10
    min_rating: int = 3
    max_rating: int = 5
    duration: float = 0
    use_active_lots: bool = True
    seed: int = 1

    def __post_init__(self) -> None:
        # the HTTP API keeps v1's 1-100; the demo and tests may go faster through Python
        if not 1 <= self.feedbacks_per_hour <= 36000:
            raise ValueError(f"feedbacks_per_hour must be between 1 and 36000, got {self.feedbacks_per_hour}")
        if not 1 <= self.min_rating <= self.max_rating <= 5:
            raise ValueError(f"ratings must satisfy 1 <= min_rating ({self.min_rating}) <= max_rating "
                             f"({self.max_rating}) <= 5")
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0, got {self.duration}")


@dataclass(frozen=True)
class ShippingParams:
    shipments_per_hour: float = 60
    duration: float = 0
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.shipments_per_hour <= 36000:
            raise ValueError(f"shipments_per_hour must be between 1 and 36000, got {self.shipments_per_hour}")
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0, got {self.duration}")


@dataclass(frozen=True)
class RunContext:
    """Where the children find the gateway: its HTTP base URL, the MQTT broker, the data dir."""

    api_url: str
    broker_url: str | None  # never with credentials in it: it goes into argv
    data_dir: Path
    api_token: str | None = None
    # the broker authenticates devices: each emulated device gets its own login from this
    # CredentialStore directory, through its environment (never argv, never the gateway's login)
    device_credentials: Path | None = None
    # the board the SQAL devices emulate (emulation/targets.py: unix64, esp32, esp32-psram); None:
    # the supervisor's own (SQAL_DEVICE_TARGET), filled in by Supervisor.start
    device_target: str | None = None


@dataclass(frozen=True)
class CommandSpec:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


Builder = Callable[[Any, RunContext], CommandSpec]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _token_env(ctx: RunContext) -> dict[str, str]:
    return {"SQAL_API_TOKEN": ctx.api_token} if ctx.api_token else {}


def sqal_device(p: DeviceParams, ctx: RunContext) -> CommandSpec:
    if not ctx.broker_url:
        raise ValueError("no MQTT broker for SQAL devices: the ingest is disabled and SQAL_MQTT_URL is unset")
    flash = ctx.data_dir / "devices" / p.device_id
    env = {}
    if ctx.device_credentials is not None:
        from gateway.boards.provision import CredentialStore, ProvisionError

        try:
            env[DEVICE_PASSWORD_ENV] = CredentialStore(ctx.device_credentials).simulated(p.device_id)
        except ProvisionError as exc:
            raise ValueError(str(exc)) from None
    target: list[str] = []
    if ctx.device_target is not None:
        from emulation import targets

        target = ["--target", targets.get(ctx.device_target).name]  # ValueError names the known ones
    return CommandSpec([sys.executable, "-m", "emulation.run_device", "--device-id", p.device_id,
                        "--location", p.location, "--broker", ctx.broker_url, "--interval", _num(p.interval),
                        "--profile", p.profile, "--seed", str(p.seed), "--flash-dir", str(flash),
                        "--duration", _num(p.duration), *target], env=env)


def gavage(p: GavageParams, ctx: RunContext) -> CommandSpec:
    return CommandSpec([sys.executable, "-m", "emulation.gavage", "--api", ctx.api_url, "--nb-lots", str(p.nb_lots),
                        "--acceleration", _num(p.acceleration), "--duration", _num(p.duration),
                        "--seed", str(p.seed)], env=_token_env(ctx))


def consumer(p: ConsumerParams, ctx: RunContext) -> CommandSpec:
    return CommandSpec([sys.executable, "-m", "emulation.consumer", "--api", ctx.api_url,
                        "--feedbacks-per-hour", _num(p.feedbacks_per_hour), "--min-rating", str(p.min_rating),
                        "--max-rating", str(p.max_rating), "--duration", _num(p.duration),
                        "--use-active-lots" if p.use_active_lots else "--no-use-active-lots",
                        "--seed", str(p.seed)], env=_token_env(ctx))


def shipping(p: ShippingParams, ctx: RunContext) -> CommandSpec:
    return CommandSpec([sys.executable, "-m", "emulation.shipping", "--api", ctx.api_url,
                        "--shipments-per-hour", _num(p.shipments_per_hour), "--duration", _num(p.duration),
                        "--seed", str(p.seed)], env=_token_env(ctx))


class Catalogue:
    """kind -> builder. Kinds: sqal_device, gavage, consumer, shipping."""

    def __init__(self) -> None:
        self._builders: dict[str, Builder] = {"sqal_device": sqal_device, "gavage": gavage, "consumer": consumer,
                                              "shipping": shipping}

    def register(self, kind: str, builder: Builder) -> None:
        """Python API only (tests, embedding): replace or add an entry."""
        self._builders[kind] = builder

    def kinds(self) -> list[str]:
        return sorted(self._builders)

    def build(self, kind: str, params: Any, ctx: RunContext) -> CommandSpec:
        try:
            builder = self._builders[kind]
        except KeyError:
            raise ValueError(f"no simulator kind {kind!r} in the catalogue ({', '.join(self.kinds())})") from None
        spec = builder(params, ctx)
        if not spec.argv or not all(isinstance(a, str) for a in spec.argv):
            raise ValueError(f"catalogue entry {kind!r} built an invalid argv")
        return spec
