"""No child outlives the gateway.

Two guards:
- `preexec_deathsig`: each child asks the kernel (prctl PR_SET_PDEATHSIG) for SIGTERM when the
  gateway dies, even by SIGKILL; the simulators stop cleanly on SIGTERM.
- `OwnerFile`: each running supervisor keeps `<data_dir>/supervisor/owner-<pid>.json` listing the
  run ids of its children; every child carries its run id in the environment variable
  SQAL_SUPERVISOR_RUN (inherited by its own children, e.g. the MicroPython process of an emulated
  device). A gateway starting later reads the files whose owner is dead and kills every process
  still carrying one of their run ids. Matching on that marker, not on a pid, means a recycled
  pid never gets someone else's process killed, and a live replica sharing the data dir keeps its
  children.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

RUN_ENV = "SQAL_SUPERVISOR_RUN"
_PR_SET_PDEATHSIG = 1
_libc: Any = None
with contextlib.suppress(OSError, TypeError):
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = getattr(_libc, "prctl", None)


def preexec_deathsig(parent_pid: int) -> Any:
    """A preexec_fn for Popen: SIGTERM on parent death; exits at once if the parent already died
    between fork and prctl (the race the man page warns about)."""

    def _fn() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return _fn


def _proc_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class OwnerFile:
    """The run ids this supervisor has started and not yet seen end, kept on disk."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.path = self.dir / f"owner-{self.pid}.json"
        self.started = _proc_start(self.pid)
        self.runs: dict[str, dict[str, Any]] = {}

    def add(self, run_id: str, name: str, pid: int) -> None:
        self.runs[run_id] = {"name": name, "pid": pid}
        self._save()

    def remove(self, run_id: str) -> None:
        if self.runs.pop(run_id, None) is not None:
            self._save()

    def _save(self) -> None:
        data = {"owner_pid": self.pid, "owner_started": self.started, "runs": self.runs}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def close(self) -> None:
        """Clean shutdown: every child was stopped, nothing to reap later."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _dead_owner_runs(directory: Path, me: int) -> tuple[set[str], list[Path]]:
    runs: set[str] = set()
    files: list[Path] = []
    for f in sorted(directory.glob("owner-*.json")):
        try:
            data = json.loads(f.read_text())
            owner, started = int(data["owner_pid"]), data.get("owner_started")
            run_ids = set(data.get("runs", {}))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("supervisor: unreadable owner file %s removed", f)
            files.append(f)
            continue
        if owner == me:
            continue
        alive_started = _proc_start(owner)
        if alive_started is not None and started is not None and abs(alive_started - started) < 1.0:
            continue  # a live replica's children: not ours to touch
        runs |= run_ids
        files.append(f)
    return runs, files


def reap_orphans(directory: Path, grace_s: float = 3.0) -> list[int]:
    """Kill processes left by dead supervisors (SIGTERM, then SIGKILL after grace_s); returns their pids."""
    if not directory.is_dir():
        return []
    runs, files = _dead_owner_runs(directory, os.getpid())
    victims: list[psutil.Process] = []
    if runs:
        for p in psutil.process_iter():
            try:
                if p.environ().get(RUN_ENV) in runs:
                    victims.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    for p in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _gone, alive = psutil.wait_procs(victims, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    pids = sorted(p.pid for p in victims)
    if pids:
        log.warning("supervisor: killed %d orphaned simulator process(es) of a previous gateway: %s", len(pids), pids)
    return pids
