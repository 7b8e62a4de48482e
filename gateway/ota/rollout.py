"""A rollout: one release to a set of devices, in waves, stopped by a failure threshold.

    waves ["1", "10%", "100%"]  first 1 device, then up to 10 % of the set in all, then the rest;
                                a wave starts only when the one before ended (every device of it
                                confirmed, failed, rolled back or lost)
    max_failures 0.2            the rollout stops after a wave in which the devices that failed
                                (refused, rolled back by themselves, lost) exceed this share of the
                                devices tried so far (a number >= 1: that many devices); the devices
                                not reached stay "skipped" and keep their version
    retry_failed()              sends the release again to the failed devices only (their boards
                                refuse nothing twice for no reason: a rolled-back release is tried
                                again from the start)
    rollback()                  sends ota_rollback to the devices this rollout confirmed
    resume()                    goes on after a gateway restart from the states it had stored:
                                devices that ended keep their state, the ones it was updating are
                                followed again (the uploader asks each board where it stands
                                first), the waves not started run as usual

Every step of every device goes through `on_event(device_id, kind, data)`: the gateway stores them
(registry/ota.py: the rollout's history and each device's own, lot-independent one).
Devices are updated `concurrency` at a time within a wave; the transfer itself is the uploader's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gateway.ota.release import Release
from gateway.ota.uploader import Progress, Uploader

FAILED = ("failed", "rolled_back", "lost")
ENDED = ("confirmed",) + FAILED
DEFAULT_WAVES = ("1", "10%", "100%")


class RolloutError(ValueError):
    pass


def parse_waves(waves: Sequence[str]) -> list[str]:
    """Check wave specs: a count ("5") or a share ("10%"), cumulative, the last one 100% in effect."""
    out = []
    for w in waves:
        w = str(w).strip()
        try:
            v = float(w[:-1]) if w.endswith("%") else int(w)
        except ValueError:
            raise RolloutError(f"wave {w!r}: a device count (5) or a share of the devices (10%)") from None
        if v <= 0 or (w.endswith("%") and v > 100):
            raise RolloutError(f"wave {w!r}: must be > 0 (and a share at most 100%)")
        out.append(w)
    if not out:
        raise RolloutError("at least one wave")
    return out


def wave_sizes(waves: Sequence[str], n: int) -> list[int]:
    """Cumulative device counts per wave for n devices; the last wave always reaches all n."""
    sizes: list[int] = []
    for w in parse_waves(waves):
        k = -(-int(float(w[:-1]) * n) // 100) if w.endswith("%") else int(w)  # a share rounds up
        k = max(min(k, n), sizes[-1] if sizes else 0)
        if not sizes or k > sizes[-1]:
            sizes.append(k)
    if not sizes or sizes[-1] < n:
        sizes.append(n)
    return sizes


@dataclass
class DeviceState:
    device_id: str
    wave: int | None = None
    state: str = "skipped"  # skipped (not reached yet), queued, downloading, verifying, pending, confirmed, failed, rolled_back, lost
    progress: int = 0
    reason: str | None = None
    attempts: int = 0


@dataclass
class Rollout:
    uploader: Uploader
    release: Release
    devices: list[str]
    waves: list[str] = field(default_factory=lambda: list(DEFAULT_WAVES))
    max_failures: float = 0.2
    concurrency: int = 10
    probation_s: int | None = None
    confirm_timeout: float = 180.0
    on_event: Callable[[str, str, dict[str, Any]], None] = lambda _d, _k, _data: None
    state: str = "created"  # created, running, stopped (threshold), completed, cancelled
    reason: str | None = None
    current_wave: int = 0

    def __post_init__(self) -> None:
        if not self.devices:
            raise RolloutError("a rollout needs at least one device")
        if len(set(self.devices)) != len(self.devices):
            raise RolloutError("a device is listed twice")
        if self.max_failures < 0:
            raise RolloutError("max_failures must be >= 0")
        self.sizes = wave_sizes(self.waves, len(self.devices))
        self.table = {d: DeviceState(d) for d in self.devices}
        self._lock = threading.Lock()
        self._cancel = threading.Event()

    # ---- reading ----

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"state": self.state, "reason": self.reason, "wave": self.current_wave,
                    "waves": list(self.sizes), "version": self.release.version,
                    "devices": [vars(s).copy() for s in self.table.values()]}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for s in self.table.values():
                out[s.state] = out.get(s.state, 0) + 1
        return out

    # ---- running ----

    def cancel(self) -> None:
        """No new wave and no new device starts; devices already updating finish."""
        self._cancel.set()

    def _threshold(self, failed: int, tried: int) -> bool:
        if self.max_failures >= 1:
            return failed >= self.max_failures
        return tried > 0 and failed / tried > self.max_failures

    def run(self) -> str:
        """Run the waves until done or stopped. Returns the final state."""
        return self._waves(resumed=False)

    def resume(self) -> str:
        """Go on from the stored device states (a gateway restarted mid-rollout)."""
        return self._waves(resumed=True)

    def _waves(self, resumed: bool) -> str:
        with self._lock:
            self.state = "running"
            self.reason = None
        self.on_event("", "rollout_resumed" if resumed else "rollout_started",
                      {"version": self.release.version, "waves": self.sizes, "devices": len(self.devices)})
        start = 0
        for i, size in enumerate(self.sizes, 1):
            if self._cancel.is_set():
                return self._end("cancelled", "cancelled by the operator")
            wave = [d for d in self.devices[start:size] if not (resumed and self.table[d].state in ENDED)]
            start = size
            if not wave:
                continue  # a wave that ended before the restart
            with self._lock:
                self.current_wave = i
                for d in wave:
                    self.table[d].wave = i
                    self.table[d].state = "queued"
            self.on_event("", "wave_started", {"wave": i, "devices": wave})
            self._update_all(wave)
            tried = [s for s in self.table.values() if s.wave is not None]
            failed = [s for s in tried if s.state in FAILED]
            self.on_event("", "wave_ended", {"wave": i, "failed": len(failed), "tried": len(tried)})
            if self._threshold(len(failed), len(tried)):
                return self._end("stopped", f"{len(failed)} of {len(tried)} devices failed after wave {i} "
                                            f"(threshold {self.max_failures:g})")
        return self._end("completed", None)

    def retry_failed(self) -> str:
        """The failed devices only, in one wave; the rollout is then completed or stopped again."""
        with self._lock:
            again = [s.device_id for s in self.table.values() if s.state in FAILED]
            self.state = "running"
            self.reason = None
        self.on_event("", "retry_started", {"devices": again})
        self._update_all(again)
        tried = [s for s in self.table.values() if s.wave is not None]
        failed = [s for s in tried if s.state in FAILED]
        if failed:
            return self._end("stopped", f"{len(failed)} of {len(tried)} devices still failed after the retry")
        if any(s.wave is None for s in self.table.values()):
            return self._end("stopped", "retried; devices not reached yet: resume the rollout")
        return self._end("completed", None)

    def rollback(self) -> dict[str, str]:
        """ota_rollback to every device this rollout confirmed; {device: result}."""
        out: dict[str, str] = {}
        with self._lock:
            targets = [s.device_id for s in self.table.values() if s.state == "confirmed"]
            self.state, self.reason = "running", None
        self.on_event("", "rollback_started", {"devices": targets})

        def one(d: str) -> None:
            try:
                r = self.uploader.command(d, "ota_rollback")
                out[d] = "ok" if r["ok"] else str(r.get("error"))
            except TimeoutError as e:
                out[d] = str(e)
            with self._lock:
                if out[d] == "ok":
                    self.table[d].state = "rolled_back"
                    self.table[d].reason = "rollback requested by the operator"
            self.on_event(d, "rollback_sent", {"result": out[d]})

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(one, targets))
        self._end("rolled_back", "rollback requested by the operator")
        return out

    def _end(self, state: str, reason: str | None) -> str:
        with self._lock:
            self.state, self.reason = state, reason
        self.on_event("", "rollout_" + state, {"reason": reason, "counts": self.counts()})
        return state

    def _update_all(self, devices: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(devices)))) as pool:
            list(pool.map(self._update_one, devices))

    def _update_one(self, device_id: str) -> None:
        if self._cancel.is_set():
            return
        with self._lock:
            self.table[device_id].attempts += 1
            self.table[device_id].state = "downloading"
        last = {"state": ""}

        def progress(p: Progress) -> None:
            with self._lock:
                s = self.table[device_id]
                s.state, s.progress, s.reason = p.state, p.progress, p.reason
            # every change of state is an event; progress within a download is not (the table has it)
            if p.state != last["state"]:
                last["state"] = p.state
                self.on_event(device_id, "device_" + p.state, {"progress": p.progress, "reason": p.reason})

        try:
            p = self.uploader.update(device_id, self.release, probation_s=self.probation_s, on_progress=progress,
                                     confirm_timeout=self.confirm_timeout)
        except Exception as e:  # noqa: BLE001 - one device's failure is its own, never the rollout's
            p = Progress(device_id, state="failed", reason=f"{type(e).__name__}: {e}")
        progress(p)
