"""Consumer API under /api/consumer: products, QR scan, feedback (post one; list the recent ones).

A product's QR code carries a GS1 Digital Link URI, https://id.gs1.org/01/{GTIN-14}/10/{lot}. The
scan endpoint takes that URI (URL-encoded in the path, or as is) or the product id, and answers the
product with its lot's traceability summary. Feedback names the product and the scanned QR code:
they must designate the same product (400 otherwise); ratings are 1-5 (422 otherwise). Feedback is
stored by registry.feedback.add_feedback, linked to the lot (a `consumer_feedback` lot event).

"Active" products: their lot is on the market, state `inspected` (a closed lot's products are not).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import AliasChoices, ConfigDict, Field

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.models_common import RequestBody
from gateway.api.models_consumer import FeedbackOut, FeedbackPage, Product, ScanResult
from gateway.api.query import Limit, LotFilter, Offset, Since, Until
from registry import feedback, gs1, lots, products
from registry.lots import LOT_ID_PATTERN

router = APIRouter(prefix="/api/consumer", tags=["consumer"])
Context = Literal["home", "restaurant", "special_event", "gift"]
Rating = Annotated[int, Field(ge=1, le=5)]


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool  # type: ignore[no-any-return]


class FeedbackIn(RequestBody):
    model_config = ConfigDict(populate_by_name=True)
    product_id: int = Field(ge=1)
    qr_code: str = Field(min_length=1, max_length=512, description="the scanned QR payload (or product id)")
    overall_rating: Rating = Field(validation_alias=AliasChoices("overall_rating", "rating"))
    texture_rating: Rating | None = None
    flavor_rating: Rating | None = None
    freshness_rating: Rating | None = None
    comment: str | None = Field(default=None, max_length=2000)
    consumption_context: Context | None = None


async def resolve_qr(pool: asyncpg.Pool, qr: str) -> dict[str, Any] | str:
    """The product a QR payload (Digital Link URI or product id) designates, or why there is none."""
    q = qr.strip()
    if q.isascii() and q.isdigit() and len(q) <= 18:  # not '²' or '٣': str.isdigit() says yes, int() no or 3
        return await products.get_product(pool, int(q)) or f"product {q} not found"
    parsed = gs1.parse_digital_link(q) or gs1.parse_digital_link(unquote(q))
    if parsed is None:
        return (f"QR {q[:120]!r} is neither a product id nor a GS1 Digital Link URI "
                "(https://id.gs1.org/01/<GTIN-14>/10/<lot>)")
    gtin, lot_id = parsed
    return await products.find_by_gtin_lot(pool, gtin, lot_id) or f"no product with GTIN {gtin} in lot {lot_id}"


@router.get("/products", response_model=list[Product], summary="Products made from inspected lots")
async def list_products(request: Request,
                        lot_id: Annotated[str | None, Query(pattern=LOT_ID_PATTERN)] = None,
                        active: Annotated[bool | None, Query(description="true: lots on the market only")] = None,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0)] = 0) -> list[dict[str, Any]]:
    return await products.list_products(_pool(request), lot_id=lot_id, active=active, limit=limit, offset=offset)


@router.get("/scan/{qr:path}", response_model=ScanResult, responses={404: {"description": "Unknown QR code"}},
            summary="Scan a QR code: the product and its lot's traceability (gavage, SQAL, feedback)")
async def scan(qr: str, request: Request) -> dict[str, Any]:
    pool = _pool(request)
    found = await resolve_qr(pool, qr)
    if isinstance(found, str):
        raise HTTPException(status.HTTP_404_NOT_FOUND, found)
    lot = await lots.get_lot(pool, found["lot_id"])
    lot_out = {**lot, "gavage_days": lot["current_day"],
               "sqal_grade": products.majority_grade(lot.get("grade_distribution"))}
    return {"product": found, "lot": lot_out, "feedback": await products.feedback_summary(pool, found["lot_id"])}


@router.post("/feedback", response_model=FeedbackOut, status_code=status.HTTP_201_CREATED,
             dependencies=WRITE_DEPENDENCIES,
             responses={400: {"description": "QR code does not match the product"},
                        404: {"description": "Unknown product"}},
             summary="Consumer feedback on a scanned product (linked to its lot)")
async def post_feedback(body: FeedbackIn, request: Request) -> dict[str, Any]:
    pool = _pool(request)
    product = await products.get_product(pool, body.product_id)
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"product_id: product {body.product_id} not found")
    scanned = await resolve_qr(pool, body.qr_code)
    if isinstance(scanned, str) or scanned["id"] != product["id"]:
        what = scanned if isinstance(scanned, str) else f"it designates product {scanned['id']} (lot {scanned['lot_id']})"
        raise HTTPException(status.HTTP_400_BAD_REQUEST,
                            f"qr_code does not match product {body.product_id}: {what}")
    return await feedback.add_feedback(
        pool, rating=body.overall_rating, product_id=body.product_id, texture=body.texture_rating,
        flavor=body.flavor_rating, freshness=body.freshness_rating, comment=body.comment,
        context=body.consumption_context)


@router.get("/feedback", response_model=FeedbackPage, responses={404: {"description": "Unknown lot"}},
            summary="Recent consumer feedback across lots, newest first (paginated; by lot and time)")
async def recent_feedback(request: Request, lot_id: LotFilter = None, since: Since = None, until: Until = None,
                          limit: Limit = 50, offset: Offset = 0) -> dict[str, Any]:
    total, mean, rows = await feedback.recent_feedback(_pool(request), lot_id=lot_id, since=since, until=until,
                                                       limit=limit, offset=offset)
    return {"total": total, "mean_rating": mean, "limit": limit, "offset": offset, "feedback": rows}
