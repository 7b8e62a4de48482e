"""What the gavage and consumer simulators share: CLI argument types, the API token, one log line
per action, stop on SIGTERM/SIGINT, reconnect backoff with jitter.

The simulators are plain clients of the gateway API (they never touch the database) and are run
by the gateway's supervisor as child processes: stdout is their log, SIGTERM their stop button.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TextIO
from urllib.parse import urlsplit


def api_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"--api must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def bounded(kind: Callable[[str], float | int], lo: float, hi: float, name: str) -> Callable[[str], float | int]:
    """An argparse type: a number of `kind` within [lo, hi], with a message naming the option."""

    def parse(value: str) -> float | int:
        try:
            v = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind.__name__}, got {value!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{name} must be between {lo:g} and {hi:g}, got {value}")
        return v

    return parse


def token(explicit: str | None = None) -> str | None:
    """Bearer token: --token, else SQAL_API_TOKEN (the supervisor passes it in the environment)."""
    return explicit or os.environ.get("SQAL_API_TOKEN") or None


def auth_headers(tok: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"} if tok else {}


def ws_url(api: str, path: str) -> str:
    parts = urlsplit(api)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"


class ActionLog:
    """One line per action on stdout (flushed: the supervisor streams it live)."""

    def __init__(self, name: str, out: TextIO | None = None) -> None:
        self.name = name
        self.out = out or sys.stdout
        self.lines: list[str] = []  # kept for in-process tests; bounded

    def __call__(self, action: str, **fields: object) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        kv = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{now} {self.name} {action}" + (f" {kv}" if kv else "")
        self.lines.append(line)
        del self.lines[:-10000]
        print(line, file=self.out, flush=True)


def install_stop(stop: asyncio.Event) -> None:
    """SIGTERM / SIGINT set `stop`: the simulator finishes its current step, closes its
    connections and exits 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class Backoff:
    """Exponential backoff with full jitter: 0.2 s, 0.4 s ... capped at 10 s; reset on success."""

    def __init__(self, rng: random.Random, base: float = 0.2, cap: float = 10.0) -> None:
        self.rng, self.base, self.cap, self.attempt = rng, base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.attempt)
        self.attempt += 1
        return delay / 2 + self.rng.uniform(0, delay / 2)

    def reset(self) -> None:
        self.attempt = 0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when stopped meanwhile."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def paced(stop: asyncio.Event, interval_s: float, duration: float, log: ActionLog,
                action: Callable[[], Awaitable[object]]) -> None:
    """Run `action` once a slot, every `interval_s` from now, until `stop` is set or `duration`
    seconds have passed (0: no end). The first slot is immediate; a late action skips the missed
    slots rather than burst."""
    start = time.monotonic()
    deadline = start + duration if duration > 0 else None
    slot = start
    while not stop.is_set():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            log("duration_reached", seconds=duration)
            return
        wait = slot - now if deadline is None else min(slot - now, deadline - now)
        if await sleep_or_stop(stop, wait):
            return
        if time.monotonic() < slot:
            continue  # woke for the deadline
        await action()
        slot = max(slot + interval_s, time.monotonic())
