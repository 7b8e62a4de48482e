"""Traceability HTTP API under /api/traceability (include with `app.include_router(router)`).

EPCIS 2.0 (JSON-LD EPCISDocument, media type application/ld+json):
  GET /epcis/lots/{lot_id}/events, GET /epcis/products/{product_id}/events, GET /epcis/events (a time
  range across lots), with the EPCIS 2.0 REST binding's query parameters eventType, GE_eventTime,
  LT_eventTime, EQ_bizStep, MATCH_anyEPCClass, eventCountLimit and maxEventCount (413 when more
  events match, as the standard's QueryTooLargeException), and its paging: perPage, then the next
  page's URL in the `Link: <...>; rel="next"` header (its nextPageToken is bound to the query).
One step back / forward (Regulation (EU) 931/2011 fields): GET /lots/{lot_id}/trace,
  GET /products/{product_id}/trace, ?format=json (default) or csv.
Certificate: GET /lots/{lot_id}/certificate (HTML), GET /lots/{lot_id}/certificate.pdf.
Records: POST/GET /dispatches, GET /dispatches/{id}; PUT/GET /farms/{farmer_id}, GET /farms;
  GET /lots/{lot_id}/feedings (the raw feedings the EPCIS `rawData` links point to).

Registry refusals go through the app's RegistryError handler (404 unknown lot/product, 409 a lot
not on the market, 422 invalid input); query parameters are checked here (422 naming them).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse

from gateway.api import WRITE_DEPENDENCIES
from gateway.api.models_common import Timestamp
from gateway.api.query import LotId
from gateway.traceability import certificate, epcis, trace
from gateway.traceability.models import (
    BIG,
    Dispatch,
    DispatchCreated,
    DispatchIn,
    DispatchPage,
    EpcisDocument,
    Farm,
    FarmIn,
    FeedingsAnswer,
    TraceAnswer,
)
from gateway.traceability.settings import TraceConfig
from gateway.traceability.story import LotStory, load_lot_story
from registry import dispatches, farms, gavage, lots, products, traceability
from registry.errors import ProductNotFound
from registry.lots import LOT_ID_PATTERN

router = APIRouter(prefix="/api/traceability", tags=["traceability"])

MAX_LOTS_PER_RANGE = 200
MAX_EVENTS = 50_000
EPCIS_HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
CBV_BIZ_STEPS = frozenset((
    "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning", "creating_class_instance",
    "cycle_counting", "decommissioning", "departing", "destroying", "disassembling", "dispensing", "encoding",
    "entering_exiting", "holding", "inspecting", "installing", "killing", "loading", "other", "packing", "picking",
    "receiving", "removing", "repackaging", "repairing", "replacing", "reserving", "retail_selling", "shipping",
    "staging_outbound", "stock_taking", "stocking", "storing", "transporting", "unloading", "unpacking",
    "void_shipping", "sensor_reporting", "sampling"))

ProductId = Annotated[int, Path(ge=1, le=BIG, description="Product id (GET /api/consumer/products)")]
EventType = Literal["ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent"]


def _pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool  # type: ignore[no-any-return]


def _cfg(request: Request) -> TraceConfig:
    """The app's settings; the public URL is the request's unless SQAL_TRACE_PUBLIC_URL is set."""
    return TraceConfig.build(request.app.state.settings, str(request.base_url))


def invalid(where: str, name: str, msg: str) -> HTTPException:
    """A 422 in the shape the OpenAPI schema documents for 422 (pydantic's list), naming the parameter."""
    return HTTPException(422, [{"loc": [where, name], "msg": msg, "type": "value_error"}])


# ---- EPCIS ----

def epcis_query(
    event_type: Annotated[list[EventType] | None, Query(alias="eventType", description="Only these event types")] = None,
    ge_event_time: Annotated[Timestamp | None, Query(alias="GE_eventTime",
                                                         description="eventTime >= this (RFC 3339, with zone)")] = None,
    lt_event_time: Annotated[Timestamp | None, Query(alias="LT_eventTime",
                                                         description="eventTime < this (RFC 3339, with zone)")] = None,
    eq_biz_step: Annotated[list[str] | None, Query(alias="EQ_bizStep", max_length=50,
                                                   description="CBV business step(s): bare name or CBV URI")] = None,
    match_any_epc_class: Annotated[list[str] | None, Query(
        alias="MATCH_anyEPCClass", max_length=50,
        description="Events with one of these classes (GS1 Digital Link GTIN + lot; a trailing * matches a prefix)")
    ] = None,
    event_count_limit: Annotated[int | None, Query(alias="eventCountLimit", ge=1, le=MAX_EVENTS,
                                                   description="Return at most this many events (oldest first)")] = None,
    max_event_count: Annotated[int | None, Query(alias="maxEventCount", ge=1, le=MAX_EVENTS,
                                                 description="413 if more events than this match")] = None,
    per_page: Annotated[int | None, Query(alias="perPage", ge=1, le=MAX_EVENTS,
                                          description="Events per page (oldest first); the next page's URL "
                                                      "is in the Link header, rel=\"next\"")] = None,
    next_page_token: Annotated[str | None, Query(alias="nextPageToken", max_length=64,
                                                 description="As the Link header of the page before gave it")] = None,
) -> EpcisParams:
    if ge_event_time is not None and lt_event_time is not None and ge_event_time >= lt_event_time:
        raise invalid("query", "LT_eventTime", f"GE_eventTime ({ge_event_time.isoformat()}) must be before LT_eventTime "
                                 f"({lt_event_time.isoformat()})")
    steps = None
    if eq_biz_step:
        steps = frozenset(epcis.normalise_biz_step(s) for s in eq_biz_step)
        unknown = sorted(s for s in steps if s not in CBV_BIZ_STEPS and ":" not in s)
        if unknown:
            raise invalid("query", "EQ_bizStep", f"{', '.join(unknown)} is not a CBV business step "
                                     f"(e.g. commissioning, sensor_reporting, inspecting, shipping)")
    if match_any_epc_class:
        bad = [c for c in match_any_epc_class if len(c) > 500 or not c.strip() or " " in c]
        if bad:
            raise invalid("query", "MATCH_anyEPCClass", f"{bad[0][:80]!r} is not a class URI")
    q = epcis.EventQuery(event_types=frozenset(event_type) if event_type else None, ge_event_time=ge_event_time,
                         lt_event_time=lt_event_time, biz_steps=steps,
                         any_epc_class=tuple(match_any_epc_class) if match_any_epc_class else None,
                         event_count_limit=event_count_limit)
    if next_page_token is not None and per_page is None:
        raise invalid("query", "nextPageToken", "comes with the perPage of the query that gave it")
    return EpcisParams(q, max_event_count, per_page, next_page_token)


@dataclass(frozen=True)
class EpcisParams:
    query: epcis.EventQuery
    max_event_count: int | None
    per_page: int | None
    next_page_token: str | None


Params = Annotated[EpcisParams, Depends(epcis_query)]
_TOKEN = re.compile(r"^([0-9]{1,9})\.([0-9a-f]{16})$")


def _query_digest(request: Request) -> str:
    """What a page token is bound to: the path and every query parameter but the token itself."""
    items = sorted((k, v) for k, v in request.query_params.multi_items() if k != "nextPageToken")
    return hashlib.sha256(repr((request.url.path, items)).encode()).hexdigest()[:16]


def _page_start(request: Request, token: str | None) -> int:
    if token is None:
        return 0
    m = _TOKEN.match(token)
    if m is None or m.group(2) != _query_digest(request):
        raise invalid("query", "nextPageToken", "is not a token this query gave (take the Link header's URL "
                                                "whole: the token belongs to its path and parameters)")
    return int(m.group(1))


def _epcis_response(request: Request, events: list[epcis.Event], params: EpcisParams,
                    cfg: TraceConfig, md: epcis.MasterData) -> JSONResponse:
    query, max_count = params.query, params.max_event_count
    if max_count is not None:
        matching = len(replace(query, event_count_limit=None).apply(events))
        if matching > max_count:
            raise HTTPException(413, f"QueryTooLargeException: {matching} events match, more than "
                                     f"maxEventCount={max_count}; narrow the query or use eventCountLimit")
    selected = query.apply(events)
    headers = dict(EPCIS_HEADERS)
    if params.per_page is not None:
        # pages are slices of the same ordered answer (oldest first); events recorded meanwhile
        # can shift a page boundary, as with any offset paging
        start = _page_start(request, params.next_page_token)
        end = start + params.per_page
        if end < len(selected):
            token = f"{end}.{_query_digest(request)}"
            headers["Link"] = f'<{request.url.include_query_params(nextPageToken=token)}>; rel="next"'
        selected = selected[start:end]
    return JSONResponse(epcis.document(selected, cfg, md), media_type=epcis.MEDIA_TYPE, headers=headers)


_EPCIS_DOC: dict[int | str, dict[str, Any]] = {200: {
    "model": EpcisDocument, "description": "EPCISDocument (JSON-LD)",
    "content": {epcis.MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/EpcisDocument"}}}}}


@router.get("/epcis/lots/{lot_id}/events", responses={**_EPCIS_DOC, 404: {"description": "Unknown lot"}},
            summary="EPCIS 2.0 events of one lot, from commissioning to dispatch")
async def lot_epcis(lot_id: LotId, request: Request, params: Params) -> JSONResponse:
    cfg, md = _cfg(request), epcis.MasterData()
    story = await load_lot_story(_pool(request), lot_id)
    return _epcis_response(request, epcis.lot_events(story, cfg, md), params, cfg, md)


@router.get("/epcis/products/{product_id}/events", responses={**_EPCIS_DOC, 404: {"description": "Unknown product"}},
            summary="EPCIS 2.0 events of one product: its lot's history, its transformation, its dispatches")
async def product_epcis(product_id: ProductId, request: Request, params: Params) -> JSONResponse:
    story = await _product_story(request, product_id)
    cfg, md = _cfg(request), epcis.MasterData()
    return _epcis_response(request, epcis.product_events(story, product_id, cfg, md), params, cfg, md)


@router.get("/epcis/events", responses={**_EPCIS_DOC, 413: {"description": "Too many lots or events: narrow it"}},
            summary="EPCIS 2.0 events of every lot with activity in [GE_eventTime, LT_eventTime)")
async def range_epcis(request: Request, params: Params) -> JSONResponse:
    query = params.query
    pool, cfg, md = _pool(request), _cfg(request), epcis.MasterData()
    lot_ids = await traceability.lots_with_activity(pool, since=query.ge_event_time, until=query.lt_event_time,
                                                    limit=MAX_LOTS_PER_RANGE + 1)
    if len(lot_ids) > MAX_LOTS_PER_RANGE:
        raise HTTPException(413, f"more than {MAX_LOTS_PER_RANGE} lots have events in this range: narrow "
                                 "GE_eventTime / LT_eventTime")
    events: list[epcis.Event] = []
    for lot_id in lot_ids:
        events += epcis.lot_events(await load_lot_story(pool, lot_id), cfg, md)
    return _epcis_response(request, epcis.unique(events), params, cfg, md)


async def _product_story(request: Request, product_id: int) -> LotStory:
    product = await products.get_product(_pool(request), product_id)
    if product is None:
        raise ProductNotFound(product_id)
    story = await load_lot_story(_pool(request), product["lot_id"])
    if not any(p["id"] == product_id for p in story.products):  # past the story's first MAX_PRODUCTS
        story.products.append(product)
    return story


# ---- one step back / one step forward ----

TraceFormat = Annotated[Literal["json", "csv"], Query(description="json (default) or csv (a spreadsheet)")]


def _trace_response(answer: dict[str, Any], fmt: str, name: str) -> Any:
    if fmt == "csv":
        return Response(trace.to_csv(answer), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="trace_{name}.csv"'})
    return answer


_TRACE_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}


@router.get("/lots/{lot_id}/trace", response_model=TraceAnswer, responses=_TRACE_RESPONSES,
            summary="One step back (the farm) and forward (recipients) of a lot, with the 931/2011 fields")
async def lot_trace(lot_id: LotId, request: Request, format: TraceFormat = "json") -> Any:
    story = await load_lot_story(_pool(request), lot_id)
    return _trace_response(trace.trace(story, _cfg(request)), format, lot_id)


@router.get("/products/{product_id}/trace", response_model=TraceAnswer, responses=_TRACE_RESPONSES,
            summary="One step back (its lot and farm) and forward (recipients) of a product")
async def product_trace(product_id: ProductId, request: Request, format: TraceFormat = "json") -> Any:
    story = await _product_story(request, product_id)
    return _trace_response(trace.trace(story, _cfg(request), product_id), format, f"product_{product_id}")


# ---- certificate ----

async def _certificate(request: Request, lot_id: str) -> dict[str, Any]:
    story = await load_lot_story(_pool(request), lot_id)
    if story.lot["inspected_at"] is None:
        raise HTTPException(409, f"lot {lot_id} is '{story.lot['state']}': a certificate needs a closed SQAL "
                                 "inspection")
    return certificate.certificate_data(story, _cfg(request))


_CERT_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown lot"}, 409: {"description": "The lot's inspection is not closed"}}


@router.get("/lots/{lot_id}/certificate", response_class=Response,
            responses={**_CERT_RESPONSES, 200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
            summary="The lot certificate, one printable page (HTML)")
async def certificate_html(lot_id: LotId, request: Request) -> HTMLResponse:
    return HTMLResponse(certificate.render_html(await _certificate(request, lot_id)))


@router.get("/lots/{lot_id}/certificate.pdf", response_class=Response,
            responses={**_CERT_RESPONSES,
                       200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}},
            summary="The lot certificate as a one-page PDF")
async def certificate_pdf(lot_id: LotId, request: Request) -> Response:
    data = await _certificate(request, lot_id)
    pdf = certificate.render_pdf(data)
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="certificate_{lot_id}.pdf"'})


@router.get("/lots/{lot_id}/feedings", response_model=FeedingsAnswer,
            summary="The lot's gavage feedings as recorded (EPCIS rawData)",
            responses={404: {"description": "Unknown lot"}})
async def lot_feedings(lot_id: LotId, request: Request) -> dict[str, Any]:
    await lots.get_lot(_pool(request), lot_id)
    rows = await gavage.list_feedings(_pool(request), lot_id)
    return {"lot_id": lot_id, "total": len(rows), "feedings": rows}


# ---- dispatch records ----

@router.post("/dispatches", response_model=DispatchCreated, status_code=status.HTTP_201_CREATED,
             dependencies=WRITE_DEPENDENCIES,
             responses={404: {"description": "Unknown product"}, 409: {"description": "A lot not on the market"},
                        422: {"description": "Invalid record, or a reference already used for another one"}},
             summary="Record a dispatch (consignment) of products to a recipient")
async def create_dispatch(body: DispatchIn, request: Request, response: Response) -> dict[str, Any]:
    cfg = _cfg(request)
    sender_gln = body.sender_gln if body.sender_name else (body.sender_gln or cfg.sender_gln)
    out = await dispatches.create_dispatch(
        _pool(request), lines=[(x.product_id, x.quantity) for x in body.lines],
        sender_name=body.sender_name or cfg.sender_name, sender_address=body.sender_address or cfg.sender_address,
        sender_gln=sender_gln, recipient_name=body.recipient_name, recipient_address=body.recipient_address,
        recipient_gln=body.recipient_gln, dispatched_at=body.dispatched_at, reference=body.reference)
    if not out["new"]:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("/dispatches", response_model=DispatchPage, summary="Dispatch records, oldest first")
async def list_dispatches(request: Request, lot_id: Annotated[str | None, Query(pattern=LOT_ID_PATTERN)] = None,
                          product_id: Annotated[int | None, Query(ge=1, le=BIG)] = None,
                          since: Annotated[Timestamp | None, Query(description="dispatched_at >= this")] = None,
                          until: Annotated[Timestamp | None, Query(description="dispatched_at < this")] = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                          offset: Annotated[int, Query(ge=0, le=BIG)] = 0) -> dict[str, Any]:
    total, rows = await dispatches.list_dispatches(_pool(request), lot_id=lot_id, product_id=product_id, since=since,
                                                   until=until, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "dispatches": rows}


@router.get("/dispatches/{dispatch_id}", response_model=Dispatch, responses={404: {"description": "Unknown dispatch"}},
            summary="One dispatch record")
async def get_dispatch(dispatch_id: Annotated[int, Path(ge=1, le=BIG)], request: Request) -> dict[str, Any]:
    out = await dispatches.get_dispatch(_pool(request), dispatch_id)
    if out is None:
        raise HTTPException(404, f"dispatch {dispatch_id} not found")
    return out


# ---- farms ----

FarmerId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$",
                               description="The lots' farmer_id")]


@router.put("/farms/{farmer_id}", response_model=Farm, dependencies=WRITE_DEPENDENCIES,
            summary="Register (or update) the farm behind a farmer id: name, address, GLN")
async def put_farm(farmer_id: FarmerId, body: FarmIn, request: Request) -> dict[str, Any]:
    return await farms.upsert_farm(_pool(request), farmer_id, name=body.name, address=body.address, gln=body.gln)


@router.get("/farms/{farmer_id}", response_model=Farm, responses={404: {"description": "Farm not registered"}},
            summary="One farm")
async def get_farm(farmer_id: FarmerId, request: Request) -> dict[str, Any]:
    farm = await farms.get_farm(_pool(request), farmer_id)
    if farm is None:
        raise HTTPException(404, f"farm {farmer_id} not registered (PUT /api/traceability/farms/{farmer_id})")
    return farm


@router.get("/farms", response_model=list[Farm], summary="Registered farms, by farmer id")
async def list_farms(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     offset: Annotated[int, Query(ge=0, le=BIG)] = 0) -> list[dict[str, Any]]:
    return await farms.list_farms(_pool(request), limit=limit, offset=offset)
