"""The supervisor: simulators as child processes, one asyncio task watching each.

- start(name, kind, params, ctx) builds the argv from the catalogue and spawns it in its own
  process group (start_new_session), stdout+stderr piped into the simulator's LogBuffer. Starting a
  name that is running answers `already_running` and changes nothing.
- stop(name): SIGTERM to the child, SIGKILL to its whole group after `stop_timeout`; whatever is
  left in the group once the child has exited is killed too (no straggling grandchild).
- Optional restart policy "on-failure": a child that exits non-zero (not stopped by us) is started
  again after a backoff, up to max_restarts; `restarts` counts it.
- Status per simulator: run id, pid, started_at, uptime, exit code, restarts, argv, config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from gateway.supervisor.catalogue import Catalogue, CommandSpec, RunContext
from gateway.supervisor.logs import LogBuffer
from gateway.supervisor.orphans import RUN_ENV, OwnerFile, preexec_deathsig, reap_orphans

log = logging.getLogger(__name__)

RestartPolicy = Literal["no", "on-failure"]
READ_CHUNK = 65536


class UnknownSimulator(LookupError):
    """No simulator of that name was ever started by this supervisor."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no simulator named {name!r}: start it first (see /simulators/list)")
        self.name = name


class StartError(RuntimeError):
    """The catalogue refused the parameters or the process could not be spawned."""


@dataclass
class Child:
    name: str
    kind: str
    logs: LogBuffer
    config: dict[str, Any] = field(default_factory=dict)
    spec: CommandSpec | None = None
    restart: RestartPolicy = "no"
    max_restarts: int = 3
    proc: asyncio.subprocess.Process | None = None
    run_id: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    started_mono: float = 0.0
    ended_at: datetime | None = None
    exit_code: int | None = None
    restarts: int = 0
    stopping: bool = False
    watcher: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def state(self) -> str:
        """running | stopping | restarting | stopped (on request) | exited (code 0) | failed."""
        if self.running:
            return "stopping" if self.stopping else "running"
        if self.watcher is not None and not self.watcher.done():
            return "restarting"
        if self.stopping or self.exit_code is None:
            return "stopped"
        return "exited" if self.exit_code == 0 else "failed"

    def info(self) -> dict[str, Any]:
        uptime = round(time.monotonic() - self.started_mono, 1) if self.running else None
        return {"device_id": self.name, "name": self.name, "kind": self.kind, "status": self.state(),
                "run_id": self.run_id, "pid": self.pid if self.running else None, "last_pid": self.pid,
                "started_at": self.started_at.isoformat() if self.started_at else None,
                "uptime_seconds": uptime, "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "exit_code": self.exit_code, "restarts": self.restarts, "restart_policy": self.restart,
                "config": self.config, "argv": list(self.spec.argv) if self.spec else [],
                "log_file": str(self.logs.path), "log_lines": self.logs.total}


def _params_dict(params: Any) -> dict[str, Any]:
    if is_dataclass(params) and not isinstance(params, type):
        return asdict(params)
    if hasattr(params, "model_dump"):
        return dict(params.model_dump())
    return dict(params) if isinstance(params, dict) else {"params": repr(params)}


class Supervisor:
    def __init__(self, data_dir: Path, catalogue: Catalogue | None = None, *, stop_timeout: float = 10.0,
                 log_lines: int = 1000, restart_backoff_s: float = 1.0, device_target: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.catalogue = catalogue or Catalogue()
        # the board SQAL devices emulate when the RunContext does not say (SQAL_DEVICE_TARGET)
        self.device_target = device_target
        self.stop_timeout = stop_timeout
        self.log_lines = log_lines
        self.restart_backoff_s = restart_backoff_s
        self.children: dict[str, Child] = {}
        self._lock = asyncio.Lock()
        self._owner: OwnerFile | None = None
        self.closed = False

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "supervisor"

    def open(self) -> list[int]:
        """Reap orphans of dead gateways (same data dir), then record our own children from now on."""
        reaped = reap_orphans(self.state_dir)
        self._owner = OwnerFile(self.state_dir)
        return reaped

    # ---- start ----

    async def start(self, name: str, kind: str, params: Any, ctx: RunContext, *, restart: RestartPolicy = "no",
                    max_restarts: int = 3) -> tuple[str, dict[str, Any]]:
        """-> ("started" | "already_running", status). Raises StartError (bad parameters, spawn failed)."""
        if self.closed:
            raise StartError("the supervisor is shutting down")
        async with self._lock:
            child = self.children.get(name)
            if child is not None and (child.running or (child.watcher is not None and not child.watcher.done())):
                return "already_running", child.info()
            if ctx.device_target is None and self.device_target is not None:
                ctx = replace(ctx, device_target=self.device_target)
            try:
                spec = self.catalogue.build(kind, params, ctx)
            except ValueError as exc:
                raise StartError(str(exc)) from exc
            if child is None:
                logs = LogBuffer(self.data_dir / "simulators" / "logs" / f"{name}.log", max_lines=self.log_lines)
                child = Child(name=name, kind=kind, logs=logs)
                self.children[name] = child
            child.kind, child.spec, child.config = kind, spec, _params_dict(params)
            child.restart, child.max_restarts, child.restarts = restart, max_restarts, 0
            child.stopping, child.exit_code, child.ended_at = False, None, None
            child.run_id = uuid.uuid4().hex[:12]
            child.done = asyncio.Event()
            await self._spawn(child)
            child.watcher = asyncio.create_task(self._watch(child), name=f"supervise-{name}")
            return "started", child.info()

    async def _spawn(self, child: Child) -> None:
        assert child.spec is not None and child.run_id is not None
        env = dict(os.environ)
        env.update(child.spec.env)
        env[RUN_ENV] = child.run_id
        env["PYTHONUNBUFFERED"] = "1"  # lines reach the log as they are printed
        try:
            proc = await asyncio.create_subprocess_exec(
                *child.spec.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, cwd=child.spec.cwd, start_new_session=True, preexec_fn=preexec_deathsig(os.getpid()))
        except OSError as exc:
            child.exit_code, child.ended_at = -1, datetime.now(UTC)
            child.logs.append(f"supervisor: cannot start {child.spec.argv[0]}: {exc}", child.run_id)
            raise StartError(f"cannot start {child.name}: {exc}") from exc
        child.proc, child.pid = proc, proc.pid
        child.started_at, child.started_mono = datetime.now(UTC), time.monotonic()
        if self._owner is not None:
            self._owner.add(child.run_id, child.name, proc.pid)
        child.logs.append(f"supervisor: started {child.kind} {child.name} pid {proc.pid} run {child.run_id}",
                          child.run_id)
        log.info("supervisor: started %s (%s) pid %d", child.name, child.kind, proc.pid)

    async def _pump(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        pending = b""
        while True:
            chunk = await proc.stdout.read(READ_CHUNK)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                child.logs.append(line.decode("utf-8", "replace"), child.run_id)
            if len(pending) > 4 * READ_CHUNK:  # a line without end: flush what we have
                child.logs.append(pending.decode("utf-8", "replace"), child.run_id)
                pending = b""
        if pending:
            child.logs.append(pending.decode("utf-8", "replace"), child.run_id)

    async def _watch(self, child: Child) -> None:
        try:
            while True:
                proc = child.proc
                assert proc is not None
                pump = asyncio.create_task(self._pump(child, proc))
                rc = await _exited(proc)
                _kill_group(proc.pid)  # the child is gone: nothing of its group may stay behind
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5.0)  # now the pipes close too
                try:
                    await asyncio.wait_for(asyncio.shield(pump), 2.0)
                except TimeoutError:
                    pump.cancel()
                child.exit_code, child.ended_at = rc, datetime.now(UTC)
                if self._owner is not None and child.run_id:
                    self._owner.remove(child.run_id)
                child.logs.append(f"supervisor: {child.name} exited with code {rc}", child.run_id)
                log.info("supervisor: %s exited with code %s", child.name, rc)
                if child.stopping or self.closed or child.restart == "no" or rc == 0 \
                        or child.restarts >= child.max_restarts:
                    return
                delay = min(30.0, self.restart_backoff_s * 2 ** child.restarts)
                child.restarts += 1
                child.logs.append(f"supervisor: restarting {child.name} in {delay:.1f}s "
                                  f"({child.restarts}/{child.max_restarts})", child.run_id)
                await asyncio.sleep(delay)
                if child.stopping or self.closed:
                    return
                child.exit_code = None
                await self._spawn(child)
        except StartError:
            return
        finally:
            child.done.set()

    # ---- stop ----

    async def stop(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """Graceful stop; returns the final status with `stopped` True if it was running."""
        child = self.children.get(name)
        if child is None:
            raise UnknownSimulator(name)
        was_running = child.running or (child.watcher is not None and not child.watcher.done())
        child.stopping = True
        proc = child.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(_exited(proc), self.stop_timeout if timeout is None else timeout)
            except TimeoutError:
                child.logs.append(f"supervisor: {name} ignored SIGTERM, killing its process group", child.run_id)
                _kill_group(proc.pid)
                await _exited(proc)
        if child.watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await child.watcher
        info = child.info()
        info["stopped"] = was_running
        return info

    async def stop_all(self, kinds: set[str] | None = None) -> list[dict[str, Any]]:
        names = [n for n, c in self.children.items() if kinds is None or c.kind in kinds]
        results = await asyncio.gather(*(self.stop(n) for n in names))
        return list(results)

    async def close(self) -> None:
        """Gateway shutdown: stop everything, then drop the owner file (nothing left to reap)."""
        self.closed = True
        await self.stop_all()
        for c in self.children.values():
            c.logs.close()
        if self._owner is not None:
            self._owner.close()

    # ---- observation ----

    def get(self, name: str) -> Child:
        try:
            return self.children[name]
        except KeyError:
            raise UnknownSimulator(name) from None

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).info()

    def list_status(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [c.info() for c in self.children.values() if kind is None or c.kind == kind]

    def running(self, kind: str | None = None) -> list[str]:
        return [n for n, c in self.children.items() if c.running and (kind is None or c.kind == kind)]


async def _exited(proc: asyncio.subprocess.Process, poll_s: float = 0.05) -> int:
    """The child's exit code as soon as it has exited. Not `proc.wait()`: that also waits for the
    stdout pipe to close, which a grandchild holding it can delay forever."""
    while proc.returncode is None:
        await asyncio.sleep(poll_s)
    return proc.returncode


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
