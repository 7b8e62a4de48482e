"""Which lot a SQAL device (line) inspects, over a time interval [valid_from, valid_to).

Samples that carry no lot id are linked through these intervals by their measurement time, so a
late reading still lands in the right lot after the assignment ended. Intervals of one device
never overlap: assignments of a device are serialised by an advisory lock on the device id, an
open assignment is closed where the next one starts, and a real overlap is refused.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from registry.base import Executor, _conn, as_dict
from registry.errors import AssignmentConflict, InvalidInput
from registry.lifecycle import transition

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$")


async def assign_device(db: Executor, lot_id: str, device_id: str, *, line: str | None = None,
                        valid_from: datetime | None = None, valid_to: datetime | None = None) -> dict[str, Any]:
    """Assign a ready (or already inspecting) lot to a device; the lot moves to `inspecting`.

    valid_from defaults to now; valid_to None keeps the assignment open until the next assignment
    of the device, the lot's inspection close, or the lot's close. A still-open assignment of the
    device to another lot that started earlier is closed at valid_from.
    """
    if not DEVICE_ID_RE.match(device_id):
        raise InvalidInput(f"device_id must match {DEVICE_ID_RE.pattern}, got {device_id!r}")
    async with _conn(db) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sqal-device:' || $1))", device_id)
        start = valid_from or await conn.fetchval("SELECT now()")
        if valid_to is not None and valid_to <= start:
            raise InvalidInput(f"valid_to ({valid_to.isoformat()}) must be after valid_from ({start.isoformat()})")
        overlap = await conn.fetchrow(
            """SELECT id, lot_id, valid_from, valid_to FROM device_assignments
               WHERE device_id = $1 AND tstzrange(valid_from, valid_to) && tstzrange($2, $3)
                 AND NOT (valid_to IS NULL AND valid_from < $2)
               LIMIT 1""", device_id, start, valid_to)
        if overlap is not None:
            raise AssignmentConflict(
                f"device {device_id} is already assigned to lot {overlap['lot_id']} from "
                f"{overlap['valid_from'].isoformat()} to {overlap['valid_to'].isoformat() if overlap['valid_to'] else 'open'}")
        # Lock order: lot row first (inside transition), then the device's open assignment.
        await transition(conn, lot_id, "assign", data={"device_id": device_id, "line": line,
                                                       "valid_from": start.isoformat(),
                                                       "valid_to": valid_to.isoformat() if valid_to else None},
                         set_sql="inspection_started_at = COALESCE(inspection_started_at, now())",
                         description=f"assigned to device {device_id}{' (' + line + ')' if line else ''}")
        await conn.execute("UPDATE device_assignments SET valid_to = $2 "
                           "WHERE device_id = $1 AND valid_to IS NULL AND valid_from < $2", device_id, start)
        row = await conn.fetchrow(
            """INSERT INTO device_assignments (lot_id, device_id, line, valid_from, valid_to)
               VALUES ($1, $2, $3, $4, $5) RETURNING *""", lot_id, device_id, line, start, valid_to)
    d = as_dict(row)
    assert d is not None
    return d


async def end_assignments(db: Executor, lot_id: str) -> int:
    """End the lot's open assignments now; returns how many were open."""
    status = await db.execute("UPDATE device_assignments SET valid_to = now() "
                              "WHERE lot_id = $1 AND valid_to IS NULL AND valid_from < now()", lot_id)
    return int(status.split()[-1])


async def list_assignments(db: Executor, *, lot_id: str | None = None, device_id: str | None = None) -> list[dict[str, Any]]:
    rows = await db.fetch(
        """SELECT * FROM device_assignments WHERE ($1::text IS NULL OR lot_id = $1)
           AND ($2::text IS NULL OR device_id = $2) ORDER BY valid_from, id""", lot_id, device_id)
    return [d for d in map(as_dict, rows) if d is not None]
