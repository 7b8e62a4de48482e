"""Request and answer models of the traceability API (every answer field described, for /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.api.models_common import RequestBody, Timestamp
from registry.dispatches import MAX_LINES, MAX_QUANTITY

BIG = 2**63 - 1
Gln = Annotated[str | None, Field(default=None, pattern=r"^\d{13}$", description="GS1 GLN, 13 digits")]


# ---- EPCIS ----

class EpcisBody(BaseModel):
    eventList: list[dict[str, Any]] = Field(description="The EPCIS 2.0 events, in eventTime order")


class EpcisDocument(BaseModel):
    """An EPCISDocument (GS1 EPCIS 2.0, JSON-LD); the events follow GS1's JSON schema."""

    model_config = ConfigDict(populate_by_name=True)

    context: list[str | dict[str, str]] = Field(alias="@context", description="GS1's EPCIS 2.0 context URL, then "
                                                "the `sqal:` prefix of the extension terms")
    type: Literal["EPCISDocument"] = Field(description="Always EPCISDocument")
    schemaVersion: str = Field(description="EPCIS version of the document: 2.0")
    creationDate: datetime = Field(description="When this document was made")
    sender: str = Field(description="The business operator that exports it")
    epcisHeader: dict[str, Any] | None = Field(
        default=None, description="Master data naming the locations, parties and classes the events use")
    epcisBody: EpcisBody = Field(description="The events")


# ---- one step back / one step forward ----

class TraceRecord(BaseModel):
    direction: Literal["back", "forward"] = Field(description="back: from the supplier; forward: to a recipient")
    description_of_food: str = Field(description="931/2011 (a): what the food is")
    quantity: int | None = Field(description="931/2011 (b): how much, in `unit`")
    unit: str = Field(description="Unit of the quantity: live ducks, units (of the product)")
    lot_reference: str = Field(description="931/2011 (g): the lot")
    gtin: str = Field(description="GTIN-14 of the lot class or of the product")
    digital_link: str = Field(description="GS1 Digital Link URI of GTIN + lot")
    dispatch_date: datetime | None = Field(description="931/2011 (h): when it was dispatched")
    dispatch_reference: str | None = Field(description="The consignment's reference")
    sender_name: str | None = Field(description="931/2011 (c): who dispatched it")
    sender_address: str | None = Field(description="Its address")
    sender_gln: str | None = Field(description="Its GLN, when known")
    recipient_name: str = Field(description="931/2011 (e): to whom")
    recipient_address: str = Field(description="Its address")
    recipient_gln: str | None = Field(description="Its GLN, when known")
    product_id: int | None = Field(description="The product (forward records)")
    missing: list[str] = Field(description="931/2011 fields this record cannot fill")


class TraceAnswer(BaseModel):
    regulation: str = Field(description="The regulations the records answer")
    generated_at: datetime = Field(description="When this answer was made")
    subject: dict[str, Any] = Field(description="The lot or product asked about, its lot, state and farm")
    one_step_back: list[TraceRecord] = Field(description="Where it came from")
    one_step_forward: list[TraceRecord] = Field(description="Where it went, one record per dispatch line")
    complete: bool = Field(description="Every record has every 931/2011 field")


# ---- raw feedings ----

class FeedingRecord(BaseModel):
    lot_id: str = Field(description="The lot")
    day: int = Field(description="Gavage day (1..)")
    moment: Literal["morning", "evening"] = Field(description="Feeding of the day")
    planned_dose_g: float = Field(description="Planned maize dose per duck, g")
    actual_dose_g: float = Field(description="Maize given per duck, g")
    mean_weight_g: float | None = Field(description="Mean live weight, g")
    live_ducks: int | None = Field(description="Ducks alive")
    mortality_pct: float | None = Field(description="Cumulative mortality, %")
    temperature_c: float | None = Field(description="Barn temperature, C")
    humidity_pct: float | None = Field(description="Barn relative humidity, %")
    simulated_at: datetime | None = Field(description="The feeding's own time, as the farm reported it")
    received_at: datetime = Field(description="When the gateway recorded it")


class FeedingsAnswer(BaseModel):
    lot_id: str = Field(description="The lot")
    total: int = Field(description="Feedings recorded")
    feedings: list[FeedingRecord] = Field(description="By day, morning first")


# ---- dispatch records ----

class DispatchLineIn(RequestBody):
    product_id: int = Field(ge=1, le=BIG, description="The product (GET /api/consumer/products)")
    quantity: int = Field(ge=1, le=MAX_QUANTITY, description="Units of the product")


class DispatchIn(RequestBody):
    reference: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$",
                                  description="Despatch advice number; generated when left out. Posting a "
                                              "reference again with the same content is a no-op (retries)")
    dispatched_at: Timestamp | None = Field(default=None, description="When it left, RFC 3339 with a time zone "
                                                                   "(default: now)")
    recipient_name: str = Field(min_length=1, max_length=200, examples=["Epicerie fine Lafitte"])
    recipient_address: str = Field(min_length=1, max_length=500,
                                   examples=["12 rue des Arceaux, 33000 Bordeaux, France"])
    recipient_gln: Gln = None
    sender_name: str | None = Field(default=None, min_length=1, max_length=200,
                                    description="Default: SQAL_TRACE_SENDER_NAME")
    sender_address: str | None = Field(default=None, min_length=1, max_length=500,
                                       description="Default: SQAL_TRACE_SENDER_ADDRESS")
    sender_gln: Gln = None
    lines: list[DispatchLineIn] = Field(min_length=1, max_length=MAX_LINES, description="Products and quantities")


class DispatchLine(BaseModel):
    product_id: int = Field(description="The product")
    lot_id: str = Field(description="Its lot")
    gtin: str = Field(description="Its GTIN-14")
    quantity: int = Field(description="Units dispatched")


class Dispatch(BaseModel):
    id: int = Field(description="Dispatch id")
    reference: str = Field(description="Despatch advice number")
    dispatched_at: datetime = Field(description="When it left")
    sender_name: str = Field(description="Who dispatched it")
    sender_address: str = Field(description="Its address")
    sender_gln: str | None = Field(description="Its GLN")
    recipient_name: str = Field(description="To whom")
    recipient_address: str = Field(description="Its address")
    recipient_gln: str | None = Field(description="Its GLN")
    created_at: datetime = Field(description="When it was recorded")
    lines: list[DispatchLine] = Field(description="Products and quantities")


class DispatchCreated(Dispatch):
    new: bool = Field(description="False: this reference was already recorded with the same content")


class DispatchPage(BaseModel):
    total: int = Field(description="Dispatches matching the filters")
    limit: int = Field(description="Page size asked")
    offset: int = Field(description="Page start asked")
    dispatches: list[Dispatch] = Field(description="This page, oldest first")


# ---- farms ----

class FarmIn(RequestBody):
    name: str = Field(min_length=1, max_length=200, examples=["EARL Dupont"])
    address: str = Field(min_length=1, max_length=500, examples=["Lieu-dit Bordenave, 40500 Saint-Sever, France"])
    gln: Gln = None


class Farm(BaseModel):
    farmer_id: str = Field(description="The lots' farmer_id")
    name: str = Field(description="Farm (or farmer) name")
    address: str = Field(description="Its address")
    gln: str | None = Field(description="Its GLN")
    updated_at: datetime = Field(description="Last change")
