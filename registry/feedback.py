"""Products (what a consumer scans) and consumer feedback, linked to the lot."""

from __future__ import annotations

import re
from typing import Any

from registry.base import Executor, _conn, _d, as_dict
from registry.errors import InvalidInput, LotNotFound, ProductNotFound
from registry.lifecycle import append_event

GTIN_RE = re.compile(r"^\d{14}$")
CONTEXTS = ("home", "restaurant", "special_event", "gift")


def gtin_check_digit_ok(gtin: str) -> bool:
    """GS1 mod-10: weights 3,1,3,... from the right, excluding the check digit."""
    digits = [int(c) for c in gtin]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits[:-1])))
    return (10 - total % 10) % 10 == digits[-1]


def digital_link(gtin: str, lot_id: str) -> str:
    """The GS1 Digital Link URI a QR code carries: GTIN (01) and batch/lot (10)."""
    return f"https://id.gs1.org/01/{gtin}/10/{lot_id}"


async def create_product(db: Executor, lot_id: str, gtin: str) -> dict[str, Any]:
    """A product of an inspected lot (idempotent on (gtin, lot))."""
    if not GTIN_RE.match(gtin) or not gtin_check_digit_ok(gtin):
        raise InvalidInput(f"gtin must be 14 digits with a valid GS1 check digit, got {gtin!r}")
    async with _conn(db) as conn, conn.transaction():
        lot = await conn.fetchrow("SELECT id, state, inspected_at FROM lots WHERE id = $1 FOR KEY SHARE", lot_id)
        if lot is None:
            raise LotNotFound(lot_id)
        if lot["inspected_at"] is None:
            raise InvalidInput(f"lot {lot_id} is '{lot['state']}': only inspected lots become products")
        row = await conn.fetchrow(
            """INSERT INTO products (lot_id, gtin, qr_uri) VALUES ($1, $2, $3)
               ON CONFLICT (gtin, lot_id) DO NOTHING RETURNING *""", lot_id, gtin, digital_link(gtin, lot_id))
        if row is None:
            row = await conn.fetchrow("SELECT * FROM products WHERE gtin = $1 AND lot_id = $2", gtin, lot_id)
        else:
            await append_event(conn, lot_id, "consumer", "product_created",
                               {"product_id": row["id"], "gtin": gtin, "qr_uri": row["qr_uri"]},
                               f"product {row['id']} (GTIN {gtin})")
    return _d(row)


async def add_feedback(db: Executor, *, rating: int, product_id: int | None = None, lot_id: str | None = None,
                       texture: int | None = None, flavor: int | None = None, freshness: int | None = None,
                       comment: str | None = None, context: str | None = None) -> dict[str, Any]:
    """Consumer feedback on a product (its lot is implied) or directly on a lot."""
    for name, v in (("rating", rating), ("texture", texture), ("flavor", flavor), ("freshness", freshness)):
        if v is not None and not 1 <= v <= 5:
            raise InvalidInput(f"{name} must be between 1 and 5, got {v}")
    if context is not None and context not in CONTEXTS:
        raise InvalidInput(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    async with _conn(db) as conn, conn.transaction():
        if product_id is not None:
            plot = await conn.fetchval("SELECT lot_id FROM products WHERE id = $1", product_id)
            if plot is None:
                raise ProductNotFound(product_id)
            if lot_id is not None and lot_id != plot:
                raise InvalidInput(f"product {product_id} belongs to lot {plot}, not {lot_id}")
            lot_id = plot
        if lot_id is None:
            raise InvalidInput("feedback needs a product_id or a lot_id")
        if await conn.fetchval("SELECT 1 FROM lots WHERE id = $1", lot_id) is None:
            raise LotNotFound(lot_id)
        row = await conn.fetchrow(
            """INSERT INTO consumer_feedback (product_id, lot_id, rating, texture, flavor, freshness, comment, context)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
            product_id, lot_id, rating, texture, flavor, freshness, comment, context)
        await append_event(conn, lot_id, "consumer", "consumer_feedback",
                           {"feedback_id": row["id"], "product_id": product_id, "rating": rating,
                            "texture": texture, "flavor": flavor, "freshness": freshness, "context": context},
                           f"consumer rated {rating}/5")
    return _d(row)


async def lot_feedback(db: Executor, lot_id: str) -> list[dict[str, Any]]:
    """Every consumer feedback on the lot (on its products or on the lot itself), oldest first."""
    async with _conn(db) as conn:
        if await conn.fetchval("SELECT 1 FROM lots WHERE id = $1", lot_id) is None:
            raise LotNotFound(lot_id)
        rows = await conn.fetch("SELECT * FROM consumer_feedback WHERE lot_id = $1 ORDER BY created_at, id", lot_id)
    return [d for d in map(as_dict, rows) if d is not None]
