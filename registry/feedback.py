"""Products (what a consumer scans) and consumer feedback, linked to the lot; the recent feedback
across lots (the control panel's Consumer tab, GET /api/consumer/feedback)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registry import gs1
from registry.base import Executor, _conn, _d, as_dict
from registry.errors import InvalidInput, LotNotFound, ProductNotFound
from registry.lifecycle import append_event
from registry.products import majority_grade

CONTEXTS = ("home", "restaurant", "special_event", "gift")


async def create_product(db: Executor, lot_id: str, gtin: str) -> dict[str, Any]:
    """A product of an inspected lot (idempotent on (gtin, lot))."""
    if not gs1.is_gtin(gtin):
        raise InvalidInput(f"gtin must be 14 digits with a valid GS1 check digit, got {gtin!r}")
    async with _conn(db) as conn, conn.transaction():
        lot = await conn.fetchrow("SELECT id, state, inspected_at FROM lots WHERE id = $1 FOR KEY SHARE", lot_id)
        if lot is None:
            raise LotNotFound(lot_id)
        if lot["inspected_at"] is None:
            raise InvalidInput(f"lot {lot_id} is '{lot['state']}': only inspected lots become products")
        row = await conn.fetchrow(
            """INSERT INTO products (lot_id, gtin, qr_uri) VALUES ($1, $2, $3)
               ON CONFLICT (gtin, lot_id) DO NOTHING RETURNING *""", lot_id, gtin, gs1.digital_link(gtin, lot_id))
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


async def recent_feedback(db: Executor, *, lot_id: str | None = None, since: datetime | None = None,
                          until: datetime | None = None, limit: int = 50,
                          offset: int = 0) -> tuple[int, float | None, list[dict[str, Any]]]:
    """Consumer feedback across lots, newest first (in the order it was recorded): (total matching,
    their mean rating or None, this page). Each row is the feedback with its product's GTIN and its
    lot's SQAL grade (`sqal_grade`: the most frequent grade of the lot's samples). Filters: one lot
    (LotNotFound when there is no such lot), `since` <= created_at < `until`."""
    if limit < 1 or offset < 0:
        raise InvalidInput(f"limit must be >= 1 and offset >= 0, got {limit} and {offset}")
    where = """($1::text IS NULL OR f.lot_id = $1) AND ($2::timestamptz IS NULL OR f.created_at >= $2)
               AND ($3::timestamptz IS NULL OR f.created_at < $3)"""
    async with _conn(db) as conn:
        if lot_id is not None and await conn.fetchval("SELECT 1 FROM lots WHERE id = $1", lot_id) is None:
            raise LotNotFound(lot_id)
        head = await conn.fetchrow(
            f"SELECT count(*) AS total, round(avg(f.rating), 2) AS mean FROM consumer_feedback f WHERE {where}",
            lot_id, since, until)
        rows = await conn.fetch(
            f"""SELECT f.id, f.created_at, f.lot_id, f.product_id, p.gtin AS product_gtin, f.rating, f.texture,
                       f.flavor, f.freshness, f.context, f.comment, l.grade_distribution
                FROM consumer_feedback f JOIN lots l ON l.id = f.lot_id
                LEFT JOIN products p ON p.id = f.product_id
                WHERE {where} ORDER BY f.id DESC LIMIT $4 OFFSET $5""",
            lot_id, since, until, limit, offset)
    out = []
    for r in rows:
        d = _d(r)
        d["sqal_grade"] = majority_grade(d.pop("grade_distribution"))
        out.append(d)
    mean = head["mean"]
    return int(head["total"]), (float(mean) if mean is not None else None), out
