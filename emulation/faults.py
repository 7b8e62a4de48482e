"""Fault injection for emulated fleets: a small validated syntax, a schedule, and a TCP proxy.

Syntax (one fault per string, e.g. on the command line `--fault "broker-outage@30s:10s"`):

    KIND[=VALUE]@AT[:FOR][/WHO]

    broker-outage@30s:10s          the broker is unreachable from t=30 s for 10 s (through the proxy)
    partition@20s:15s/25%          25 % of the devices lose their network at t=20 s for 15 s
    partition@20s:15s/0-4,9        devices #0..#4 and #9 (0-based fleet indices)
    reboot@45s/10%                 10 % of the devices are power-cycled at t=45 s (flash kept)
    clock-skew=-3600@10s/all       device clocks run 3600 s behind from t=10 s (add :FOR to revert)
    i2c-errors=0.05@0s:60s/50%     5 % of I2C transactions fail on half the devices for 60 s

AT and FOR are durations: `30`, `30s`, `500ms`, `1.5m`. WHO is `all` (the default), `P%` (a share
of the fleet, picked deterministically from the fleet seed) or a list of indices and ranges.
Every parse error names the fault text and the part that is wrong (FaultError, a ValueError).

Broker outages go through `TcpProxy`, an asyncio TCP relay between the devices and the broker: the
fleet does not need to own the broker, and "down" means what a dead broker means to a device
(open connections reset, new ones refused) while the broker itself, and any subscriber connected to
it directly, stays up. Partitions use the emulated WLAN of each device (its link goes down, as when
the access point is lost), not the proxy.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KINDS: dict[str, dict[str, bool]] = {
    # kind: value needed, FOR needed, FOR allowed, WHO allowed
    "broker-outage": {"value": False, "for_required": True, "for_allowed": True, "who": False},
    "partition": {"value": False, "for_required": True, "for_allowed": True, "who": True},
    "reboot": {"value": False, "for_required": False, "for_allowed": False, "who": True},
    "clock-skew": {"value": True, "for_required": False, "for_allowed": True, "who": True},
    "i2c-errors": {"value": True, "for_required": False, "for_allowed": True, "who": True},
}
MAX_SKEW_S = 10 * 365 * 86400  # ten years: beyond that a typo, not a test


class FaultError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    kind: str
    at_s: float
    for_s: float | None = None
    value: float | None = None
    share: float | None = None          # WHO as a fraction of the fleet (0..1]
    indices: tuple[int, ...] | None = None  # WHO as explicit indices; both None = all
    text: str = ""

    def targets(self, n: int, seed: int = 1) -> list[int]:
        """Fleet indices hit by this fault in a fleet of n devices (sorted). Deterministic for seed."""
        if self.indices is not None:
            bad = [i for i in self.indices if i >= n]
            if bad:
                raise FaultError(f"fault {self.text!r}: device index {bad[0]} out of range (fleet of {n})")
            return sorted(set(self.indices))
        if self.share is None:
            return list(range(n))
        k = max(1, round(n * self.share))
        rng = random.Random(f"{seed}:{self.text}")
        return sorted(rng.sample(range(n), min(k, n)))


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_FAULT = re.compile(r"^(?P<kind>[a-z0-9-]+)(?:=(?P<value>[^@]*))?@(?P<at>[^:/]*)(?::(?P<for>[^/]*))?(?:/(?P<who>.*))?$")


def parse_duration(text: str, what: str = "duration") -> float:
    """'30', '30s', '500ms', '1.5m' -> seconds. FaultError naming `what` otherwise."""
    m = _DURATION.match(text.strip())
    if not m:
        raise FaultError(f"{what} {text!r} is not a duration like 30s, 500ms or 1.5m")
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "ms" else v * 60 if m.group(2) == "m" else v


def _parse_who(text: str, where: str) -> tuple[float | None, tuple[int, ...] | None]:
    t = text.strip()
    if t in ("", "all"):
        return None, None
    if t.endswith("%"):
        try:
            p = float(t[:-1])
        except ValueError:
            raise FaultError(f"{where}: share {t!r} is not a percentage like 25%") from None
        if not 0 < p <= 100:
            raise FaultError(f"{where}: share {t!r} must be within (0, 100]%")
        return p / 100, None
    out: list[int] = []
    for part in t.split(","):
        m = re.match(r"^(\d+)(?:-(\d+))?$", part.strip())
        if not m:
            raise FaultError(f"{where}: targets {t!r}: {part!r} is not an index or a range like 3-7 "
                             "(or use all, or a share like 25%)")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a:
            raise FaultError(f"{where}: range {part!r} runs backwards")
        out.extend(range(a, b + 1))
    return None, tuple(out)


def parse_fault(text: str) -> Fault:
    where = f"fault {text!r}"
    m = _FAULT.match(text.strip())
    if not m:
        raise FaultError(f"{where}: expected KIND[=VALUE]@AT[:FOR][/WHO], e.g. partition@20s:15s/25% "
                         f"(kinds: {', '.join(KINDS)})")
    kind = m.group("kind")
    rule = KINDS.get(kind)
    if rule is None:
        raise FaultError(f"{where}: unknown kind {kind!r} (kinds: {', '.join(KINDS)})")
    value: float | None = None
    if m.group("value") is not None:
        if not rule["value"]:
            raise FaultError(f"{where}: {kind} takes no =VALUE")
        try:
            value = float(m.group("value"))
        except ValueError:
            raise FaultError(f"{where}: value {m.group('value')!r} is not a number") from None
        if not math.isfinite(value):
            raise FaultError(f"{where}: value must be finite")
    elif rule["value"]:
        raise FaultError(f"{where}: {kind} needs a value, e.g. {kind}="
                         f"{'0.05' if kind == 'i2c-errors' else '-3600'}@10s")
    if kind == "i2c-errors" and value is not None and not 0 <= value <= 1:
        raise FaultError(f"{where}: i2c error rate must be within 0..1, got {value}")
    if kind == "clock-skew" and value is not None and abs(value) > MAX_SKEW_S:
        raise FaultError(f"{where}: clock skew {value} s is beyond +/-{MAX_SKEW_S} s")
    at = parse_duration(m.group("at"), f"{where}: start time")
    for_s: float | None = None
    if m.group("for") is not None:
        if not rule["for_allowed"]:
            raise FaultError(f"{where}: {kind} is instantaneous, it takes no :FOR")
        for_s = parse_duration(m.group("for"), f"{where}: length")
        if for_s <= 0:
            raise FaultError(f"{where}: length must be > 0")
    elif rule["for_required"]:
        raise FaultError(f"{where}: {kind} needs a length, e.g. {kind}@30s:10s")
    share: float | None = None
    indices: tuple[int, ...] | None = None
    if m.group("who") is not None:
        if not rule["who"]:
            raise FaultError(f"{where}: {kind} hits the whole fleet, it takes no /WHO")
        share, indices = _parse_who(m.group("who"), where)
    return Fault(kind, at, for_s, value, share, indices, text.strip())


def parse_faults(texts: Sequence[str]) -> list[Fault]:
    return [parse_fault(t) for t in texts]


@dataclass
class Event:
    t: float                 # seconds after the schedule starts
    what: str                # human-readable, for logs and the CLI
    action: Callable[[], object]


class Schedule:
    """Runs timed actions in a background thread; `log` keeps (elapsed_s, what, error|None)."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = sorted(events, key=lambda e: e.t)
        self.log: list[tuple[float, str, str | None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fault-schedule", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for ev in self.events:
            if self._stop.wait(max(0.0, self.t0 + ev.t - time.monotonic())):
                return
            err: str | None = None
            try:
                ev.action()
            except Exception as e:  # noqa: BLE001 - one failed injection must not stop the others
                err = f"{type(e).__name__}: {e}"
            self.log.append((round(time.monotonic() - self.t0, 2), ev.what, err))

    def pending(self) -> int:
        return len(self.events) - len(self.log)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class TcpProxy:
    """asyncio TCP relay host:port -> target, in its own thread. `down()` resets every relayed
    connection and stops listening (clients get ECONNREFUSED, as from a dead broker); `up()`
    listens again on the same port."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.host = host
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        self.port = port
        self.connections = 0     # accepted, in total
        self.outages = 0
        self.is_up = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.call_soon(ready.set)
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(5)
        self.up()

    def _call(self, coro: object, timeout: float = 10) -> None:
        assert self._loop is not None, "proxy not started"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def up(self) -> None:
        self._call(self._listen())

    def down(self) -> None:
        self._call(self._close_all())
        self.outages += 1

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True,
                                                      backlog=1024)
        self.is_up = True

    async def _close_all(self) -> None:
        self.is_up = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            t = w.transport
            if t is not None:
                t.abort()  # RST: what the peer of a crashed broker sees
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.is_up:
            writer.transport.abort()
            return
        self._writers.add(writer)  # at once: an outage starting while we dial the broker resets it too
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()  # broker really down: the device sees a reset
            return
        if not self.is_up or writer.transport.is_closing():
            uw.transport.abort()
            self._writers.discard(writer)
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.add(uw)

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.transport.abort()

        try:
            await asyncio.gather(pipe(reader, uw), pipe(ur, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(uw)

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._close_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._loop = None
