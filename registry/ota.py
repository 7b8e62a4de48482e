"""Over-the-air updates in the registry (migration 007, docs/ota.md): releases, rollouts, each
device's state in a rollout, and the event history (per rollout, and per device whatever its lots).

The gateway's rollout engine (gateway/ota/service.py) writes here; nothing here talks to a board.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from registry.base import Executor, _conn, as_dict
from registry.errors import InvalidInput, RegistryError

ROLLOUT_STATES = ("created", "running", "stopped", "completed", "cancelled", "rolled_back", "interrupted")


class ReleaseNotFound(RegistryError):
    pass


class RolloutNotFound(RegistryError):
    pass


def _row(r: Any) -> dict[str, Any]:
    d = as_dict(r)
    assert d is not None
    for k in ("manifest", "selector", "waves"):
        if isinstance(d.get(k), str):
            d[k] = json.loads(d[k])
    return d


# ---- releases ----

async def add_release(db: Executor, version: str, manifest: dict[str, Any], signature: str) -> dict[str, Any]:
    """Record a release (verified by the caller). The same version again with the same signature is
    the same release; with another one it is refused: a version is never rebuilt."""
    files = manifest.get("files") or []
    size = sum(int(f["size"]) for f in files)
    row = await db.fetchrow(
        """INSERT INTO ota_releases (version, manifest, signature, size, files) VALUES ($1, $2::jsonb, $3, $4, $5)
           ON CONFLICT (version) DO NOTHING
           RETURNING version, manifest::text AS manifest, signature, size, files, registered_at""",
        version, json.dumps(manifest), signature, size, len(files))
    if row is None:
        row = await db.fetchrow("SELECT version, manifest::text AS manifest, signature, size, files, registered_at "
                                "FROM ota_releases WHERE version = $1", version)
        assert row is not None
        if row["signature"] != signature:
            raise InvalidInput(f"release {version} is registered already with another signature: "
                               "a version is never rebuilt")
    return _row(row)


async def get_release(db: Executor, version: str) -> dict[str, Any]:
    row = await db.fetchrow("SELECT version, manifest::text AS manifest, signature, size, files, registered_at "
                            "FROM ota_releases WHERE version = $1", version)
    if row is None:
        raise ReleaseNotFound(f"release {version} not registered")
    return _row(row)


async def list_releases(db: Executor) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT version, size, files, registered_at FROM ota_releases ORDER BY registered_at DESC")
    return [_row(r) for r in rows]


# ---- choosing devices ----

async def select_devices(db: Executor, *, site: str | None = None, from_version: str | None = None,
                         device_ids: Sequence[str] | None = None, exclude_version: str | None = None) -> list[str]:
    """Device ids by site, by current version (the firmware the device last reported), by list;
    the criteria combine. `exclude_version` leaves out the devices that run it already."""
    rows = await db.fetch(
        """SELECT id FROM devices
           WHERE ($1::text IS NULL OR site_code = $1) AND ($2::text IS NULL OR firmware = $2)
             AND ($3::text[] IS NULL OR id = ANY($3::text[]))
             AND ($4::text IS NULL OR firmware IS DISTINCT FROM $4)
           ORDER BY id""",
        site, from_version, list(device_ids) if device_ids is not None else None, exclude_version)
    return [str(r["id"]) for r in rows]


# ---- rollouts ----

_ROLLOUT_COLS = ("id, version, state, reason, selector::text AS selector, waves::text AS waves, max_failures, "
                 "probation_s, created_at, updated_at")


async def create_rollout(db: Executor, version: str, devices: Sequence[str], *, selector: dict[str, Any],
                         waves: Sequence[int], max_failures: float, probation_s: int | None) -> dict[str, Any]:
    await get_release(db, version)
    if not devices:
        raise InvalidInput("no device matches: a rollout needs at least one device")
    async with _conn(db) as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO ota_rollouts (version, state, selector, waves, max_failures, probation_s)
                VALUES ($1, 'created', $2::jsonb, $3::jsonb, $4, $5) RETURNING {_ROLLOUT_COLS}""",
            version, json.dumps(selector), json.dumps(list(waves)), max_failures, probation_s)
        assert row is not None
        await conn.executemany(
            "INSERT INTO ota_rollout_devices (rollout_id, device_id, position, state) VALUES ($1, $2, $3, 'skipped')",
            [(row["id"], d, i) for i, d in enumerate(devices)])
    return _row(row)


async def set_rollout_state(db: Executor, rollout_id: int, state: str, reason: str | None) -> None:
    if state not in ROLLOUT_STATES:
        raise InvalidInput(f"rollout state {state!r}")
    await db.execute("UPDATE ota_rollouts SET state = $2, reason = $3, updated_at = now() WHERE id = $1",
                     rollout_id, state, reason)


async def set_device_state(db: Executor, rollout_id: int, device_id: str, *, state: str, wave: int | None,
                           progress: int, reason: str | None, attempts: int) -> None:
    await db.execute(
        """UPDATE ota_rollout_devices SET state = $3, wave = $4, progress = $5, reason = $6, attempts = $7,
                  updated_at = now() WHERE rollout_id = $1 AND device_id = $2""",
        rollout_id, device_id, state, wave, max(0, min(100, progress)), reason, attempts)


async def get_rollout(db: Executor, rollout_id: int) -> dict[str, Any]:
    row = await db.fetchrow(f"SELECT {_ROLLOUT_COLS} FROM ota_rollouts WHERE id = $1", rollout_id)
    if row is None:
        raise RolloutNotFound(f"rollout {rollout_id} not found")
    out = _row(row)
    devs = await db.fetch(
        """SELECT device_id, wave, state, progress, reason, attempts, updated_at FROM ota_rollout_devices
           WHERE rollout_id = $1 ORDER BY position""", rollout_id)
    out["devices"] = [_row(d) for d in devs]
    counts: dict[str, int] = {}
    for d in out["devices"]:
        counts[d["state"]] = counts.get(d["state"], 0) + 1
    out["counts"] = counts
    return out


async def list_rollouts(db: Executor, *, limit: int = 50) -> list[dict[str, Any]]:
    rows = await db.fetch(f"SELECT {_ROLLOUT_COLS} FROM ota_rollouts ORDER BY id DESC LIMIT $1", limit)
    return [_row(r) for r in rows]


async def unfinished_rollouts(db: Executor) -> list[int]:
    """Rollouts a gateway was driving (or about to): resumed by the one that takes their lock."""
    rows = await db.fetch("SELECT id FROM ota_rollouts WHERE state IN ('running', 'created') ORDER BY id")
    return [int(r["id"]) for r in rows]


# ---- events ----

async def append_event(db: Executor, kind: str, data: dict[str, Any], *, rollout_id: int | None = None,
                       device_id: str | None = None) -> None:
    await db.execute("INSERT INTO ota_events (rollout_id, device_id, kind, data) VALUES ($1, $2, $3, $4::jsonb)",
                     rollout_id, device_id or None, kind, json.dumps(data))


async def events(db: Executor, *, rollout_id: int | None = None, device_id: str | None = None,
                 limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
    """Oldest first: a rollout's (all its devices' and its own) or a device's (every rollout)."""
    if rollout_id is None and device_id is None:
        raise InvalidInput("events of a rollout or of a device")
    rows = await db.fetch(
        """SELECT id, at, rollout_id, device_id, kind, data::text AS data FROM ota_events
           WHERE ($1::bigint IS NULL OR rollout_id = $1) AND ($2::text IS NULL OR device_id = $2)
           ORDER BY at, id LIMIT $3 OFFSET $4""", rollout_id, device_id, limit, offset)
    return [_row(r) for r in rows]
