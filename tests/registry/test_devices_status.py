"""Device status ordering: (boot, conn) decides, not the device clock (docs/contract.md, section 5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from registry import devices

DEV = "ESP32_DEMO_LL_01"


def status(state: str, boot: int, conn: int | None, ts: int) -> dict[str, Any]:
    s: dict[str, Any] = {"device_id": DEV, "state": state, "boot": boot, "fw": "0.1.0", "ts": ts}
    if conn is not None:
        s["conn"] = conn
    return s


async def state_of(pool: Any) -> tuple[str, int | None]:
    row = await pool.fetchrow("SELECT state, status_conn FROM devices WHERE id = $1", DEV)
    return row["state"], row["status_conn"]


async def test_will_of_a_connection_overrides_its_birth_and_stale_wills_are_ignored(db_pool: Any) -> None:
    now = datetime.now(UTC)
    assert await devices.apply_status(db_pool, status("online", 1, 1, 5_000), now)
    # the broker publishes connection 1's will: same (conn, ts) as its birth -> offline
    assert await devices.apply_status(db_pool, status("offline", 1, 1, 5_000), now)
    assert await state_of(db_pool) == ("offline", 1)
    # connection 2 after an NTP step backwards: its ts is smaller, its conn is newer -> online
    assert await devices.apply_status(db_pool, status("online", 1, 2, 1_000), now)
    assert await state_of(db_pool) == ("online", 2)
    # connection 1's will delivered late (retained copy, redelivery): refused, nothing changes
    assert not await devices.apply_status(db_pool, status("offline", 1, 1, 5_000), now)
    assert await state_of(db_pool) == ("online", 2)
    # a new boot always wins, whatever its conn
    assert await devices.apply_status(db_pool, status("online", 2, 1, 0), now)
    assert await state_of(db_pool) == ("online", 1)


async def test_status_without_conn_falls_back_to_ts(db_pool: Any) -> None:
    now = datetime.now(UTC)
    assert await devices.apply_status(db_pool, status("online", 3, None, 2_000), now)
    assert not await devices.apply_status(db_pool, status("offline", 3, None, 1_000), now)
    assert await devices.apply_status(db_pool, status("offline", 3, None, 2_000), now)
    assert await state_of(db_pool) == ("offline", None)
