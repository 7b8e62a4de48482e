"""Reading products for consumers: list, look up by id or by GS1 Digital Link, the lot's SQAL verdict.

Products are created by `registry.feedback.create_product` (inspected lots only). A product is
"active" while its lot is on the market: state `inspected` (not closed).
"""

from __future__ import annotations

from typing import Any

from registry.base import Executor, as_dict

GRADE_ORDER = ("A+", "A", "B", "C", "REJECT")
# The products a compliant lot can yield; item reference i+1 of the GTINs (reference 0 is the lot itself).
PRODUCT_RANGE = ("foie gras entier cru", "foie gras entier mi-cuit", "bloc de foie gras", "escalopes",
                 "terrine", "foie gras au torchon", "lobe extra", "medaillon")

_SELECT = """SELECT p.id, p.lot_id, p.gtin, p.qr_uri, p.created_at, l.state AS lot_state,
                    l.farmer_name, l.site_code, l.genetics, l.grade_distribution, l.itm, l.itm_grade,
                    l.mean_liver_weight_g, l.sample_count, l.inspected_at
             FROM products p JOIN lots l ON l.id = p.lot_id"""


def majority_grade(distribution: dict[str, int] | None) -> str | None:
    """The lot's SQAL grade: the most frequent sample grade (ties go to the worse grade, so a lot
    is never shown better than its samples); None without graded samples."""
    if not distribution:
        return None
    graded = {g: n for g, n in distribution.items() if g in GRADE_ORDER and n > 0}
    if not graded:
        return None
    return max(graded, key=lambda g: (graded[g], GRADE_ORDER.index(g)))


def _product(row: Any) -> dict[str, Any]:
    d = as_dict(row)
    assert d is not None
    d["sqal_grade"] = majority_grade(d.get("grade_distribution"))
    d["active"] = d["lot_state"] == "inspected"
    return d


async def list_products(db: Executor, *, lot_id: str | None = None, active: bool | None = None,
                        limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    rows = await db.fetch(
        _SELECT + """ WHERE ($1::text IS NULL OR p.lot_id = $1)
                        AND ($2::boolean IS NULL OR (l.state = 'inspected') = $2)
                      ORDER BY p.id LIMIT $3 OFFSET $4""", lot_id, active, limit, offset)
    return [_product(r) for r in rows]


async def get_product(db: Executor, product_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(_SELECT + " WHERE p.id = $1", product_id)
    return None if row is None else _product(row)


async def find_by_gtin_lot(db: Executor, gtin: str, lot_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(_SELECT + " WHERE p.gtin = $1 AND p.lot_id = $2", gtin, lot_id)
    return None if row is None else _product(row)


async def feedback_summary(db: Executor, lot_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        """SELECT count(*) AS count, round(avg(rating), 2) AS average_rating
           FROM consumer_feedback WHERE lot_id = $1""", lot_id)
    return {"count": int(row["count"]),
            "average_rating": float(row["average_rating"]) if row["average_rating"] is not None else None}
