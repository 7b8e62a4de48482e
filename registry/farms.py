"""Farms: the supplier a lot comes from (one step back), keyed by the lots' farmer_id.

Regulation (EU) 931/2011 asks for the supplier's name and address; a lot only carries the farmer's
id and name, so the address lives here. A farm may have a GS1 GLN (13 digits, mod-10 check digit).
"""

from __future__ import annotations

from typing import Any

from registry.base import Executor, _d, as_dict
from registry.errors import InvalidInput
from registry.gs1 import is_gln


def check_gln(gln: str | None, field: str = "gln") -> str | None:
    """None, or a 13-digit GLN with a valid GS1 check digit (InvalidInput naming `field` otherwise)."""
    if gln is None:
        return None
    if not is_gln(gln):
        raise InvalidInput(f"{field} must be 13 digits with a valid GS1 check digit, got {gln!r}")
    return gln


def check_text(value: str, field: str, max_len: int) -> str:
    v = value.strip()
    if not 1 <= len(v) <= max_len:
        raise InvalidInput(f"{field} must be 1 to {max_len} characters (not blank), got {len(v)}")
    return v


async def upsert_farm(db: Executor, farmer_id: str, *, name: str, address: str, gln: str | None = None) -> dict[str, Any]:
    """Create or replace the farm record of `farmer_id`."""
    fid = check_text(farmer_id, "farmer_id", 64)
    row = await db.fetchrow(
        """INSERT INTO farms (farmer_id, name, address, gln) VALUES ($1, $2, $3, $4)
           ON CONFLICT (farmer_id) DO UPDATE SET name = EXCLUDED.name, address = EXCLUDED.address,
               gln = EXCLUDED.gln, updated_at = now()
           RETURNING *""",
        fid, check_text(name, "name", 200), check_text(address, "address", 500), check_gln(gln))
    return _d(row)


async def get_farm(db: Executor, farmer_id: str) -> dict[str, Any] | None:
    return as_dict(await db.fetchrow("SELECT * FROM farms WHERE farmer_id = $1", farmer_id))


async def list_farms(db: Executor, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM farms ORDER BY farmer_id LIMIT $1 OFFSET $2", limit, offset)
    return [_d(r) for r in rows]
