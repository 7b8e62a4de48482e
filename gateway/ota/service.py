"""The gateway's side of over-the-air updates: releases registered from the releases directory
(verified with the release public key), rollouts run by the engine (gateway/ota/rollout.py) in
threads, every step stored (registry/ota.py).

A rollout's devices are chosen by site, by current version and/or by list when it is created; its
engine runs in a thread of this process (the transfer is blocking MQTT request/response), and
its events are written to the database from the event loop.

One gateway drives a rollout at a time, whatever the number of replicas: the one that holds its
PostgreSQL advisory lock, on a connection kept for as long as it drives it. A gateway that dies
loses the connection and the lock with it; every gateway looks at start for rollouts left
`running` (or `created`) whose lock is free and resumes them (Rollout.resume: the boards are asked
where they stand, nothing is sent twice). A rollout that cannot be resumed (its release is gone
from the releases directory, or the gateway has no broker to reach the boards) is marked
`interrupted` instead, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import asyncpg

from gateway.config import Settings
from gateway.ota import release as rel
from gateway.ota.rollout import FAILED, Rollout, RolloutError, parse_waves, wave_sizes
from gateway.ota.uploader import Uploader
from registry import ota as reg
from registry.errors import InvalidInput

log = logging.getLogger(__name__)

LOCK_SPACE = 0x07A0  # first key of the rollouts' advisory locks (the second is the rollout id)
RUNNING_EVENTS = ("rollout_started", "rollout_resumed", "retry_started", "rollback_started", "wave_started")


class OtaService:
    def __init__(self, pool: asyncpg.Pool, broker_url: str | None, settings: Settings) -> None:
        self.pool = pool
        self.broker_url = broker_url
        self.settings = settings
        self.releases_dir = settings.ota_releases_dir or settings.data_dir / "releases"
        self._uploader: Uploader | None = None
        self._uploader_lock = threading.Lock()
        self._rollouts: dict[int, Rollout] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._claims: dict[int, Any] = {}  # rollout id -> the pooled connection holding its lock
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Resume the rollouts that a stopped gateway left running (and no live one drives)."""
        self._loop = asyncio.get_running_loop()
        for rid in await reg.unfinished_rollouts(self.pool):
            if not await self._claim(rid):
                continue  # another replica drives it
            try:
                engine = await self._engine(rid)
            except InvalidInput as e:  # the release left the releases directory
                await reg.set_rollout_state(self.pool, rid, "interrupted", f"not resumed: {e}")
                await self._release_claim(rid)
                continue
            log.warning("ota: resuming rollout %d of %s left running by a stopped gateway", rid, engine.release.version)
            self._run(rid, engine.resume)

    async def _claim(self, rollout_id: int) -> bool:
        """Take the rollout's advisory lock on a connection of our own, kept until it is let go."""
        if rollout_id in self._claims:
            return True
        conn = await self.pool.acquire()
        try:
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_SPACE, rollout_id)
        except BaseException:
            await self.pool.release(conn)
            raise
        if not got:
            await self.pool.release(conn)
            return False
        self._claims[rollout_id] = conn
        return True

    async def _release_claim(self, rollout_id: int) -> None:
        conn = self._claims.pop(rollout_id, None)
        if conn is not None:
            try:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_SPACE, rollout_id)
            finally:
                await self.pool.release(conn)

    async def _claimed(self, rollout_id: int) -> None:
        if not await self._claim(rollout_id):
            raise InvalidInput(f"rollout {rollout_id} is driven by another gateway replica: ask that one")

    async def close(self) -> None:
        for r in self._rollouts.values():
            r.cancel()
        for t in list(self._tasks.values()):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        for rid in list(self._claims):
            with contextlib.suppress(Exception):
                await self._release_claim(rid)
        if self._uploader is not None:
            await asyncio.to_thread(self._uploader.close)

    def _up(self) -> Uploader:
        with self._uploader_lock:
            if self._uploader is None:
                if not self.broker_url:
                    raise InvalidInput("over-the-air updates need the boards' broker (the ingest is disabled)")
                self._uploader = Uploader(self.broker_url, ca_file=str(self.settings.mqtt_ca_file)
                                          if self.settings.mqtt_ca_file else None)
            return self._uploader

    # ---- releases ----

    def _release_dir(self, version: str) -> Path:
        if not rel.VERSION_RE.match(version):
            raise InvalidInput(f"version {version!r}: numbers separated by dots")
        return self.releases_dir / version

    def load_release(self, version: str) -> rel.Release:
        d = self._release_dir(version)
        if not (d / rel.MANIFEST).is_file():
            raise InvalidInput(f"no release {version} in {self.releases_dir}")
        return rel.load(d)

    async def register_release(self, version: str) -> dict[str, Any]:
        """Verify the release in the releases directory with the public key, then record it."""
        key = self.settings.ota_public_key
        if not key:
            raise InvalidInput("SQAL_OTA_PUBLIC_KEY is not set: the gateway cannot verify a release")
        r = self.load_release(version)
        try:
            rel.verify(r, rel.parse_public(key))
        except rel.ReleaseError as e:
            raise InvalidInput(f"release {version} refused: {e}") from None
        import json

        return await reg.add_release(self.pool, version, json.loads(r.manifest), r.signature.hex())

    # ---- rollouts ----

    async def create_rollout(self, version: str, *, site: str | None = None, from_version: str | None = None,
                             devices: list[str] | None = None, waves: list[str] | None = None,
                             max_failures: float = 0.2, probation_s: int | None = None) -> dict[str, Any]:
        release_row = await reg.get_release(self.pool, version)  # registered, i.e. verified
        r = self.load_release(version)
        if r.signature.hex() != release_row["signature"]:
            raise InvalidInput(f"release {version} on disk differs from the one registered")
        try:
            waves = parse_waves(waves or ["1", "10%", "100%"])
        except RolloutError as e:
            raise InvalidInput(str(e)) from None
        ids = await reg.select_devices(self.pool, site=site, from_version=from_version, device_ids=devices,
                                       exclude_version=version)
        selector = {"site": site, "from_version": from_version, "devices": devices}
        probation = probation_s or self.settings.ota_probation_s
        row = await reg.create_rollout(self.pool, version, ids, selector=selector,
                                       waves=wave_sizes(waves, len(ids)) if ids else [],
                                       max_failures=max_failures, probation_s=probation)
        rid = int(row["id"])
        await self._claim(rid)  # new: nobody else can hold it
        engine = Rollout(self._up(), r, ids, waves=waves, max_failures=max_failures,
                         concurrency=self.settings.ota_concurrency, probation_s=probation,
                         on_event=self._sink(rid))
        self._rollouts[rid] = engine
        self._run(rid, engine.run)
        return await reg.get_rollout(self.pool, rid)

    async def _engine(self, rollout_id: int) -> Rollout:
        """The rollout's engine: in memory, or rebuilt from the registry (a restarted gateway)."""
        if rollout_id in self._rollouts:
            return self._rollouts[rollout_id]
        row = await reg.get_rollout(self.pool, rollout_id)
        engine = Rollout(self._up(), self.load_release(row["version"]), [d["device_id"] for d in row["devices"]],
                         max_failures=float(row["max_failures"]), concurrency=self.settings.ota_concurrency,
                         probation_s=row["probation_s"], on_event=self._sink(rollout_id))
        engine.sizes = [int(k) for k in row["waves"]]  # as created, whatever the waves' spec
        for d in row["devices"]:
            s = engine.table[d["device_id"]]
            s.wave, s.state, s.progress, s.reason, s.attempts = (d["wave"], d["state"], d["progress"], d["reason"],
                                                                 d["attempts"])
        engine.state, engine.reason = row["state"], row["reason"]
        self._rollouts[rollout_id] = engine
        return engine

    def _busy(self, rollout_id: int) -> bool:
        t = self._tasks.get(rollout_id)
        return t is not None and not t.done()

    async def retry_failed(self, rollout_id: int) -> dict[str, Any]:
        await self._claimed(rollout_id)
        engine = await self._engine(rollout_id)
        if self._busy(rollout_id):
            raise InvalidInput(f"rollout {rollout_id} is running: wait for it to end or cancel it")
        if not any(s.state in FAILED for s in engine.table.values()):
            await self._release_claim(rollout_id)
            raise InvalidInput(f"rollout {rollout_id} has no failed device")
        await reg.set_rollout_state(self.pool, rollout_id, "running", None)  # in the answer already
        self._run(rollout_id, engine.retry_failed)
        return await reg.get_rollout(self.pool, rollout_id)

    async def rollback(self, rollout_id: int) -> dict[str, Any]:
        await self._claimed(rollout_id)
        engine = await self._engine(rollout_id)
        if self._busy(rollout_id):
            engine.cancel()
            with contextlib.suppress(BaseException):
                await self._tasks[rollout_id]
            await self._claimed(rollout_id)  # the ended run let it go
        await reg.set_rollout_state(self.pool, rollout_id, "running", None)  # in the answer already
        self._run(rollout_id, engine.rollback)
        return await reg.get_rollout(self.pool, rollout_id)

    async def cancel(self, rollout_id: int) -> dict[str, Any]:
        await self._claimed(rollout_id)
        engine = await self._engine(rollout_id)
        engine.cancel()
        if not self._busy(rollout_id):
            await self._release_claim(rollout_id)  # nothing runs here to let it go at its end
        return await reg.get_rollout(self.pool, rollout_id)

    def _run(self, rollout_id: int, fn: Any) -> None:
        async def go() -> None:
            try:
                await asyncio.to_thread(fn)
            except Exception as e:  # recorded on the rollout, never raised into the loop
                log.exception("ota: rollout %d failed", rollout_id)
                await reg.set_rollout_state(self.pool, rollout_id, "stopped", f"internal error: {e}")
            finally:
                if self._tasks.get(rollout_id) is asyncio.current_task():
                    await self._release_claim(rollout_id)  # another replica may act on it now

        self._tasks[rollout_id] = asyncio.get_running_loop().create_task(go())

    def _sink(self, rollout_id: int) -> Any:
        """The engine's on_event (called from its threads): the event and the states it changed go to
        the registry from the event loop, in order."""
        loop = self._loop or asyncio.get_running_loop()
        lock = asyncio.Lock()

        async def store(device_id: str, kind: str, data: dict[str, Any]) -> None:
            engine = self._rollouts.get(rollout_id)
            async with lock:
                await reg.append_event(self.pool, kind, data, rollout_id=rollout_id, device_id=device_id or None)
                if engine is None:
                    return
                if device_id:
                    s = engine.table[device_id]
                    await reg.set_device_state(self.pool, rollout_id, device_id, state=s.state, wave=s.wave,
                                               progress=s.progress, reason=s.reason, attempts=s.attempts)
                elif kind in RUNNING_EVENTS:
                    await reg.set_rollout_state(self.pool, rollout_id, "running", None)
                    if kind == "wave_started":
                        for d in data.get("devices", []):
                            s = engine.table[d]
                            await reg.set_device_state(self.pool, rollout_id, d, state=s.state, wave=s.wave,
                                                       progress=s.progress, reason=s.reason, attempts=s.attempts)
                elif kind.startswith("rollout_"):
                    await reg.set_rollout_state(self.pool, rollout_id, kind[len("rollout_"):], engine.reason)

        def on_event(device_id: str, kind: str, data: dict[str, Any]) -> None:
            fut = asyncio.run_coroutine_threadsafe(store(device_id, kind, data), loop)
            try:
                fut.result(timeout=30)  # in order, and the registry is never behind the engine for long
            except Exception:  # a failed write costs that record, not the rollout
                log.exception("ota: storing event %s of rollout %d failed", kind, rollout_id)

        return on_event
