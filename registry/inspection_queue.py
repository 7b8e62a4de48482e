"""The inspection queue behind the gateway's dispatcher: ready lots go to free online SQAL devices,
and an inspection closes once the lot has enough samples.

Safe with several gateway replicas polling at once:
- a ready lot is claimed with `SELECT .. FOR UPDATE SKIP LOCKED`, so two replicas never take the
  same lot (the second one skips it, or sees it `inspecting` once the first commits);
- a device is claimed with `pg_try_advisory_xact_lock` on the same per-device key that
  `assign_device` takes, then re-checked for an open assignment under that lock, so a device is
  never given two lots; the try-lock never waits on the ingest, which updates device rows often;
- closing uses SKIP LOCKED on the lot row too, and `close_inspection` refuses a lot that is no
  longer `inspecting`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from registry import sample_hours
from registry.assignments import assign_device
from registry.base import Executor, _conn, as_dict
from registry.inspection import close_inspection
from registry.lifecycle import append_event
from registry.sample_hours import lot_sample_count

_DEVICE_KEY = "hashtext('sqal-device:' || $1)"  # the key registry.assignments.assign_device locks


async def assign_next(db: Executor) -> dict[str, Any] | None:
    """Assign the oldest ready lot to a free online device, in one transaction.

    Candidates: `ready` lots, and `inspecting` lots left without a device (`release_assignment`).
    Oldest = the lot whose state changed longest ago, then by id.
    Free online device: state online, not in safe mode, no degraded sensor, no open assignment;
    the one idle longest first. Returns the assignment (with `line` = the device location) or None
    when there is no ready lot or no free device."""
    async with _conn(db) as conn, conn.transaction():
        lot = await conn.fetchrow(
            """SELECT id FROM lots l
               WHERE l.state = 'ready' OR (l.state = 'inspecting' AND NOT EXISTS (
                   SELECT 1 FROM device_assignments a WHERE a.lot_id = l.id AND a.valid_to IS NULL))
               ORDER BY l.updated_at, l.id
               FOR UPDATE SKIP LOCKED LIMIT 1""")
        if lot is None:
            return None
        candidates = await conn.fetch(
            """SELECT d.id, d.location FROM devices d
               WHERE d.state = 'online' AND NOT d.safe_mode AND cardinality(d.degraded) = 0
                 AND NOT EXISTS (SELECT 1 FROM device_assignments a WHERE a.device_id = d.id AND a.valid_to IS NULL)
               ORDER BY (SELECT max(a.valid_to) FROM device_assignments a WHERE a.device_id = d.id) NULLS FIRST, d.id
               LIMIT 20""")
        for dev in candidates:
            if not await conn.fetchval(f"SELECT pg_try_advisory_xact_lock({_DEVICE_KEY})", dev["id"]):
                continue  # another replica is assigning this device right now
            busy = await conn.fetchval(
                "SELECT 1 FROM device_assignments WHERE device_id = $1 AND valid_to IS NULL", dev["id"])
            if busy:
                continue
            return await assign_device(conn, lot["id"], dev["id"], line=dev["location"])
        return None


async def open_inspections(db: Executor) -> list[dict[str, Any]]:
    """Every open assignment with its lot state, the lot's linked sample count and the device's
    state and last command result (what the dispatcher checks each poll)."""
    rows = await db.fetch(
        """SELECT a.id AS assignment_id, a.lot_id, a.device_id, a.valid_from, l.state AS lot_state,
                  d.state AS device_state, d.state_at AS device_state_at, d.last_result,
                  (SELECT COALESCE(sum(h.samples), 0) FROM sqal_sample_hours h WHERE h.lot_id = a.lot_id)
                    AS lot_samples
           FROM device_assignments a JOIN lots l ON l.id = a.lot_id LEFT JOIN devices d ON d.id = a.device_id
           WHERE a.valid_to IS NULL ORDER BY a.id""")
    out = []
    for r in rows:
        d = as_dict(r)
        assert d is not None
        if isinstance(d.get("last_result"), str):
            d["last_result"] = json.loads(d["last_result"])
        out.append(d)
    return out


async def close_if_complete(db: Executor, lot_id: str, min_samples: int) -> dict[str, Any] | None:
    """Close the lot's inspection when it has at least `min_samples` linked samples.

    Returns {"lot": the inspected lot, "assignments": [{"id", "device_id", "valid_from"}] that were open} or None
    (not enough samples, not inspecting any more, or another replica is closing it now)."""
    async with _conn(db) as conn, conn.transaction():
        lot = await conn.fetchrow("SELECT id, state FROM lots WHERE id = $1 FOR UPDATE SKIP LOCKED", lot_id)
        if lot is None or lot["state"] != "inspecting":
            return None
        n = await lot_sample_count(conn, lot_id)
        if n < min_samples:
            return None
        open_rows = await conn.fetch(
            "SELECT id, device_id, valid_from FROM device_assignments WHERE lot_id = $1 AND valid_to IS NULL ORDER BY id",
            lot_id)
        closed = await close_inspection(conn, lot_id)
    return {"lot": closed, "assignments": [dict(r) for r in open_rows]}


async def assignment_open(db: Executor, assignment_id: int) -> bool:
    return bool(await db.fetchval("SELECT valid_to IS NULL FROM device_assignments WHERE id = $1", assignment_id))


async def device_has_open_assignment(db: Executor, device_id: str) -> bool:
    return bool(await db.fetchval(
        "SELECT 1 FROM device_assignments WHERE device_id = $1 AND valid_to IS NULL", device_id))


async def device_sent_lot(db: Executor, device_id: str, lot_id: str, since: datetime) -> bool:
    """Did the device send a sample carrying this lot id since `since`? (proof it took the lot,
    even when its command result was overwritten by a later one)."""
    return await sample_hours.device_sent_lot(db, device_id, lot_id, since)


async def devices_holding_ended_lots(db: Executor) -> list[dict[str, Any]]:
    """Online devices whose latest assignment has ended but whose latest word since (telemetry or
    sample) still names that lot: they never applied (or never got) their clear_lot, e.g. it was
    pending in a gateway that restarted, or the lot was released while the device was offline.
    Rows: device_id, assignment_id, lot_id, valid_from, valid_to."""
    rows = await db.fetch(
        """SELECT d.id AS device_id, a.id AS assignment_id, a.lot_id, a.valid_from, a.valid_to
           FROM devices d
           JOIN LATERAL (SELECT x.id, x.lot_id, x.valid_from, x.valid_to FROM device_assignments x
                         WHERE x.device_id = d.id ORDER BY x.valid_from DESC, x.id DESC LIMIT 1) a
             ON a.valid_to IS NOT NULL
           LEFT JOIN LATERAL (SELECT h.requested_lot_id, h.last_received_at AS received_at FROM sqal_sample_hours h
                              WHERE h.device_id = d.id ORDER BY h.last_received_at DESC LIMIT 1) s ON true
           WHERE d.state = 'online'
             AND ((d.telemetry->>'lot_id' = a.lot_id AND d.telemetry_at > a.valid_to)
                  OR (s.requested_lot_id = a.lot_id AND s.received_at > a.valid_to))""")
    return [dict(r) for r in rows]


async def release_assignment(db: Executor, assignment_id: int, reason: str) -> bool:
    """End one open assignment now (e.g. its device went offline): the lot stays `inspecting` with no
    device, and `assign_next` gives it to another device. False when it was already closed."""
    async with _conn(db) as conn, conn.transaction():
        row = await conn.fetchrow(
            """UPDATE device_assignments SET valid_to = now()
               WHERE id = $1 AND valid_to IS NULL AND valid_from < now() RETURNING lot_id, device_id""",
            assignment_id)
        if row is None:
            return False
        await append_event(conn, row["lot_id"], "sqal", "unassigned",
                           {"device_id": row["device_id"], "assignment_id": assignment_id, "reason": reason},
                           f"device {row['device_id']} released: {reason}")
    return True


async def lots_needing_products(db: Executor, limit: int = 50) -> list[dict[str, Any]]:
    """Inspected lots with no product yet that are compliant: more than half of their samples
    graded and not REJECT (ungraded samples count against)."""
    rows = await db.fetch(
        """SELECT l.id, l.sample_count, l.grade_distribution FROM lots l
           WHERE l.state = 'inspected' AND l.sample_count > 0
             AND NOT EXISTS (SELECT 1 FROM products p WHERE p.lot_id = l.id)
             AND 2 * (SELECT COALESCE(sum(value::int), 0) FROM jsonb_each_text(l.grade_distribution)
                      WHERE key NOT IN ('REJECT', 'none')) > l.sample_count
           ORDER BY l.inspected_at, l.id LIMIT $1""", limit)
    return [d for d in map(as_dict, rows) if d is not None]
