"""A MicroPython process the host powers: started, watched, restarted after the exits a board would
come back from (its reset line, its watchdog), killed. One device (`emulation.device.EmulatedDevice`)
or a host of several (`emulation.host.DeviceHost`) is one such process."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

RESTART_PAUSE_S = 0.2  # between an exit and the restart: a crash loop must not spin the CPU


class PoweredProcess:
    """The process side: subclasses say what to run (`_spawn`), how to name an exit (`_reason`)
    and which exits restart it (`_restarts`). Thread-safe for one owner."""

    def __init__(self, log_path: Path, own_process_group: bool = False) -> None:
        self.log_path = log_path  # the process's stdout and stderr, appended across restarts
        # True: the terminal's Ctrl-C reaches only the host runner, which then stops the process
        # gracefully (offline status, DISCONNECT) instead of it dying mid-cycle
        self.own_process_group = own_process_group
        self.starts = 0  # process starts
        self.exits: list[tuple[int, str]] = []  # (returncode, reason) of every process exit
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._wanted = False

    @property
    def running(self) -> bool:
        p = self._proc
        return p is not None and p.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ---- for subclasses ----

    def _spawn(self) -> None:
        raise NotImplementedError

    def _reason(self, rc: int) -> str:
        raise NotImplementedError

    def _restarts(self, reason: str) -> bool:
        raise NotImplementedError

    def _popen(self, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
        """Start argv with stdout and stderr appended to the log (under self._lock)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(os.environ, **env), cwd=str(cwd),
                process_group=0 if self.own_process_group else None,
            )
        finally:
            log.close()
        self.starts += 1

    def _power_on(self, monitor_name: str) -> None:
        """Under self._lock: spawn, and watch the process from a thread (one per owner)."""
        self._spawn()
        if self._monitor is None or not self._monitor.is_alive():
            self._monitor = threading.Thread(target=self._watch, name=monitor_name, daemon=True)
            self._monitor.start()

    def _watch(self) -> None:
        while True:
            p = self._proc
            if p is None:
                return
            rc = p.wait()
            reason = self._reason(rc)
            with self._lock:
                if self._proc is not p:
                    continue  # a reset already replaced it
                self.exits.append((rc, reason))
                if not (self._wanted and self._restarts(reason)):
                    self._wanted = False
                    return
            time.sleep(RESTART_PAUSE_S)
            with self._lock:
                if not self._wanted or self._proc is not p:
                    continue
                self._spawn()

    # ---- power ----

    def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit; kill it after `timeout`."""
        p = self._proc
        if p is None:
            return None
        try:
            return p.wait(max(0.1, timeout))
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int | None:
        """Power cut: SIGKILL, no restart."""
        with self._lock:
            self._wanted = False
            p = self._proc
        if p is None:
            return None
        if p.poll() is None:
            p.kill()
        return p.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> Any:
        raise NotImplementedError
