"""Host side of an emulation host: K emulated SQAL devices in one MicroPython process.

Opt-in for large fleets (`Fleet(per_process=K)`, `sqal fleet --per-process K`); the default stays one
process per device (`emulation.device.EmulatedDevice`), which is what a board is: its own heap, and
a crash takes one device. A `DeviceHost` runs `micropython emulation/host_main.py <flash dirs>`
(emulation/mpboard/host.py) and restarts the whole process only when the process itself dies (its
last-resort watchdog, a crash of the interpreter). Resets, watchdog expiries, power cycles and App
crashes of one device are handled inside the process and restart only that device.

A `HostedDevice` is an `EmulatedDevice` (same flash dir, config.json, emulation.json, control.json)
whose lifecycle belongs to its host: faults go through its control file as before; a power cycle
(`reset()`) is a counter in control.json that the device's board turns into a reset without a clean
shutdown. Boots and exits are read from files the host writes in the flash dir (`host_boots`,
`host_exits`).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emulation.device import (
    EMULATION_HEAP_MARGIN,
    ESP32_FREE_HEAP,
    REPO_ROOT,
    EmulatedDevice,
    code_heap_bytes,
    ensure_mpy_cache,
)
from emulation.mpboard import exitcodes
from emulation.process import PoweredProcess
from emulation.targets import micropython_binary

HOST_MAIN = REPO_ROOT / "emulation" / "host_main.py"
# Per device in a host: the ESP32's data heap + the emulation margin, as in a one-device process,
# plus room for garbage. Why the extra: one collection marks every device's live data, so fewer,
# larger collections are cheaper per device than the one-device heap's (~1.4 forced a second).
HOST_GARBAGE_ROOM = 96 * 1024
HOST_GC_MS = 1000  # the firmware's per-cycle collection, coalesced: at most one per second per host


def host_heap(k: int) -> str:
    """-X heapsize for a host of k devices: the code heap once, each device's budget k times."""
    per = ESP32_FREE_HEAP + EMULATION_HEAP_MARGIN + HOST_GARBAGE_ROOM
    return f"{(code_heap_bytes() + k * per + 1023) // 1024}k"


class HostedDevice(EmulatedDevice):
    """One device of a DeviceHost: EmulatedDevice's flash dir and faults, its host's lifecycle."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.host: DeviceHost | None = None
        self._power = 0

    # EmulatedDevice keeps these as attributes; a hosted device reads what its host wrote
    @property  # type: ignore[override]
    def starts(self) -> int:
        try:
            return int((self.flash_dir / "host_boots").read_text() or 0) + self._starts_before
        except (FileNotFoundError, ValueError):
            return self._starts_before

    @starts.setter
    def starts(self, value: int) -> None:
        self._starts_before = value

    @property  # type: ignore[override]
    def exits(self) -> list[tuple[int, str]]:
        codes = {"stopped": exitcodes.STOPPED, "config_error": exitcodes.CONFIG_ERROR,
                 "reset": exitcodes.RESET, "watchdog": -exitcodes.WATCHDOG_SIGNAL}
        try:
            lines = (self.flash_dir / "host_exits").read_text().split()
        except FileNotFoundError:
            lines = []
        return [(codes.get(r, -signal.SIGKILL if r == "power" else 1), r) for r in lines]

    @exits.setter
    def exits(self, value: list[tuple[int, str]]) -> None:
        pass

    def prepare(self) -> None:
        super().prepare()
        for name in ("host_boots", "host_exits"):
            (self.flash_dir / name).unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        h = self.host
        if h is None or not h.running:
            return False
        ex = self.exits
        return not ex or ex[-1][1] not in ("stopped", "config_error")

    @property
    def pid(self) -> int | None:
        return self.host.pid if self.host is not None else None

    def start(self) -> None:
        if self.host is None:
            raise RuntimeError(f"{self.device_id}: a hosted device is started by its DeviceHost")
        self.host.start()

    def reset(self) -> None:
        """Power cycle this device alone: its host drops its tasks and sockets and boots it again."""
        self._power += 1
        self._set_control(power=self._power)

    def kill(self) -> int | None:
        """A hosted device cannot lose power alone for good: the whole host is killed."""
        return self.host.kill() if self.host is not None else None

    def stop(self, timeout: float = 10.0) -> int | None:
        self.request_stop()
        return self.host.wait(timeout) if self.host is not None else None


class DeviceHost(PoweredProcess):
    """One MicroPython process running several HostedDevices; restarted when it dies."""

    def __init__(self, name: str, devices: Sequence[HostedDevice], log_path: Path, *, heap: str | None = None,
                 stagger_s: float = 0.04, gc_ms: int = HOST_GC_MS, own_process_group: bool = False) -> None:
        super().__init__(log_path, own_process_group)
        self.name = name
        self.devices = list(devices)
        for d in self.devices:
            d.host = self
        self.heap = heap
        self.stagger_ms = int(stagger_s * 1000)
        self.gc_ms = gc_ms

    def start(self) -> None:
        for d in self.devices:
            if not (d.flash_dir / "config.json").exists():
                d.prepare()
        with self._lock:
            self._wanted = True
            if self.running:
                return
            for d in self.devices:
                d.control.pop("stop", None)
                d._write_control()
            self._power_on(f"host-{self.name}")

    def _spawn(self) -> None:
        cache = ensure_mpy_cache()
        if self.heap is None:
            self.heap = host_heap(len(self.devices))
        self._popen([micropython_binary(), "-X", f"heapsize={self.heap}", str(HOST_MAIN),
                     "--stagger-ms", str(self.stagger_ms), "--gc-ms", str(self.gc_ms),
                     *[str(d.flash_dir) for d in self.devices]],
                    self.log_path.parent, {"MICROPYPATH": f"{cache}:.frozen"})

    def _reason(self, rc: int) -> str:
        if rc == exitcodes.STOPPED:
            return "stopped"
        if rc == -exitcodes.WATCHDOG_SIGNAL:
            return "watchdog"
        return "killed" if not self._wanted else "crash"

    def _restarts(self, reason: str) -> bool:
        # the process itself died (its last-resort watchdog, an interpreter crash): power it again
        return reason in ("watchdog", "crash")

    def request_stop(self) -> None:
        with self._lock:
            self._wanted = False
        for d in self.devices:
            d.request_stop()

    def stop(self, timeout: float = 20.0) -> int | None:
        self.request_stop()
        return self.wait(timeout)
