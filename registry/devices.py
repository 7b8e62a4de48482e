"""SQAL devices: one row per board, fed by its status (birth / last will), telemetry, command
results and samples. The ingest writes these in the same transaction as the batch they came with.

Status ordering: a status is applied only when it is not older than the one stored, compared by
(boot, ts) -- a replayed retained `offline` from an earlier boot cannot mark a live board offline,
whatever order replicas or reconnects deliver them in. A status without `ts` counts as newest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from registry.base import Executor, _conn, as_dict

SITE_PREFIXES = frozenset({"DEMO", "QF", "DOCKER"})


def site_of(device_id: str) -> str | None:
    """Site code from a device id (domain.md section 6): split on '_', part 1, or part 2 when part 1
    is DEMO/QF/DOCKER. ESP32_LL_01 -> LL, ESP32_DEMO_LL_01 -> LL, ESP32_QF_BS_01 -> BS; None if absent."""
    parts = device_id.split("_")
    idx = 2 if len(parts) > 1 and parts[1].upper() in SITE_PREFIXES else 1
    site = parts[idx] if len(parts) > idx else ""
    return site.upper() if site.isalpha() and 1 < len(site) <= 4 else None


def _ms(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts / 1000, UTC)


@dataclass
class DeviceTouch:
    """What one batch saw of one device's samples."""

    last_seen: datetime
    last_sample_at: datetime | None = None
    stored: int = 0
    duplicates: int = 0
    rejects: int = 0


async def touch_devices(db: Executor, touches: Mapping[str, DeviceTouch]) -> None:
    """Create/refresh devices seen in samples: last seen and counters. Rows updated in id order, so
    two replicas touching the same devices cannot deadlock. Reject counts only update existing rows
    (a spoofed id in a topic must not create a device)."""
    if not touches:
        return
    ids = sorted(touches)
    good = [i for i in ids if touches[i].stored or touches[i].duplicates]
    async with _conn(db) as conn:
        if good:
            await conn.execute(
                """INSERT INTO devices (id, site_code, first_seen, last_seen, last_sample_at, samples_stored, duplicates)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $3::timestamptz[],
                                        $4::timestamptz[], $5::bigint[], $6::bigint[])
                   ON CONFLICT (id) DO UPDATE SET
                       last_seen = GREATEST(devices.last_seen, EXCLUDED.last_seen),
                       last_sample_at = GREATEST(devices.last_sample_at, EXCLUDED.last_sample_at),
                       samples_stored = devices.samples_stored + EXCLUDED.samples_stored,
                       duplicates = devices.duplicates + EXCLUDED.duplicates""",
                good, [site_of(i) for i in good], [touches[i].last_seen for i in good],
                [touches[i].last_sample_at for i in good], [touches[i].stored for i in good],
                [touches[i].duplicates for i in good])
        rej = [i for i in ids if touches[i].rejects]
        if rej:
            await conn.execute(
                """UPDATE devices d SET rejects = d.rejects + u.n FROM unnest($1::text[], $2::bigint[]) AS u(id, n)
                   WHERE d.id = u.id""", rej, [touches[i].rejects for i in rej])


async def apply_status(db: Executor, status: Mapping[str, Any], received_at: datetime) -> bool:
    """Apply a decoded status (codec.decode_status). Returns False when it was older than the stored one."""
    device_id = str(status["device_id"])
    row = await db.fetchrow(
        # Newest wins by (boot, conn) -- the connection number, immune to clock jumps; the same key
        # replaces (a connection's will overrides its birth). Without conn: by (boot, ts) as before.
        """INSERT INTO devices AS d (id, site_code, location, firmware, boot, state, state_at, status_ts, degraded,
                                     safe_mode, status_conn, first_seen, last_seen)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $7, $7)
           ON CONFLICT (id) DO UPDATE SET
               location = COALESCE(EXCLUDED.location, d.location), firmware = EXCLUDED.firmware,
               boot = EXCLUDED.boot, state = EXCLUDED.state, state_at = EXCLUDED.state_at,
               status_ts = EXCLUDED.status_ts, degraded = EXCLUDED.degraded, safe_mode = EXCLUDED.safe_mode,
               status_conn = EXCLUDED.status_conn, last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen)
           WHERE d.boot IS NULL OR EXCLUDED.boot > d.boot
              OR (EXCLUDED.boot = d.boot AND CASE
                    WHEN EXCLUDED.status_conn IS NOT NULL AND d.status_conn IS NOT NULL
                        THEN EXCLUDED.status_conn >= d.status_conn
                    ELSE EXCLUDED.status_ts IS NULL OR d.status_ts IS NULL OR EXCLUDED.status_ts >= d.status_ts
                  END)
           RETURNING id""",
        device_id, site_of(device_id), status.get("location"), status.get("fw"), int(status["boot"]),
        status["state"], received_at, _ms(status.get("ts")), list(status.get("degraded") or []),
        bool(status.get("safe_mode", False)), status.get("conn"))
    return row is not None


async def apply_telemetry(db: Executor, telemetry: Mapping[str, Any], received_at: datetime) -> None:
    device_id = str(telemetry["device_id"])
    await db.execute(
        """INSERT INTO devices AS d (id, site_code, firmware, boot, telemetry, telemetry_at, first_seen, last_seen)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $6, $6)
           ON CONFLICT (id) DO UPDATE SET
               firmware = COALESCE(EXCLUDED.firmware, d.firmware),
               boot = GREATEST(d.boot, EXCLUDED.boot),
               telemetry = EXCLUDED.telemetry, telemetry_at = EXCLUDED.telemetry_at,
               last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen)
           WHERE d.telemetry_at IS NULL OR EXCLUDED.telemetry_at >= d.telemetry_at""",
        device_id, site_of(device_id), telemetry.get("fw"), int(telemetry["boot"]),
        json.dumps(dict(telemetry)), received_at)


async def apply_result(db: Executor, device_id: str, result: Mapping[str, Any], received_at: datetime) -> None:
    await db.execute(
        """INSERT INTO devices AS d (id, site_code, last_result, first_seen, last_seen)
           VALUES ($1, $2, $3::jsonb, $4, $4)
           ON CONFLICT (id) DO UPDATE SET last_result = EXCLUDED.last_result,
               last_seen = GREATEST(d.last_seen, EXCLUDED.last_seen)""",
        device_id, site_of(device_id), json.dumps({**result, "received_at": received_at.isoformat()}), received_at)


_COLS = """id, site_code, location, firmware, boot, state, state_at, status_ts, degraded, safe_mode, first_seen,
           last_seen, last_sample_at, samples_stored, duplicates, rejects, telemetry, telemetry_at, last_result"""


def _device(row: Any) -> dict[str, Any]:
    d = as_dict(row)
    assert d is not None
    for k in ("telemetry", "last_result"):
        if isinstance(d.get(k), str):
            d[k] = json.loads(d[k])
    return d


async def list_devices(db: Executor, *, site_code: str | None = None, state: str | None = None,
                       limit: int = 500, offset: int = 0) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"""SELECT {_COLS} FROM devices WHERE ($1::text IS NULL OR site_code = $1) AND ($2::text IS NULL OR state = $2)
            ORDER BY id LIMIT $3 OFFSET $4""", site_code, state, limit, offset)
    return [_device(r) for r in rows]


async def get_device(db: Executor, device_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(f"SELECT {_COLS} FROM devices WHERE id = $1", device_id)
    return None if row is None else _device(row)


async def devices_by_id(db: Executor, device_ids: list[str]) -> list[dict[str, Any]]:
    """The devices among `device_ids` that exist, by id, each as get_device gives it."""
    if not device_ids:
        return []
    rows = await db.fetch(f"SELECT {_COLS} FROM devices WHERE id = ANY($1::text[]) ORDER BY id", sorted(set(device_ids)))
    return [_device(r) for r in rows]


async def device_samples(db: Executor, device_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
    """A device's latest samples, ordered by (boot, seq) -- never by time, clocks jump."""
    rows = await db.fetch(
        """SELECT id, device_id, boot, seq, lot_id, link_kind, link_issue, measured_at, received_at, clock_synced,
                  score, grade, device_score, device_grade, weight_g, alerts
           FROM sqal_samples WHERE device_id = $1 ORDER BY boot DESC, seq DESC LIMIT $2""", device_id, limit)
    return [d for d in map(as_dict, rows) if d is not None]
