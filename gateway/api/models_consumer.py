"""Response models of the consumer API (/api/consumer, gateway/api/consumer.py); FeedbackOut also
on /api/lots/{lot_id}/feedback."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Product(BaseModel):
    id: int = Field(description="Product id (also accepted as a QR payload)")
    lot_id: str = Field(description="The lot it was made from")
    gtin: str = Field(description="GTIN-14 of the product")
    qr_uri: str = Field(description="GS1 Digital Link URI: the QR code's payload")
    created_at: datetime = Field(description="When the product was made (after the lot's inspection)")
    active: bool = Field(description="The lot is on the market (inspected, not closed)")
    lot_state: str = Field(description="The lot's state")
    farmer_name: str = Field(description="The farmer who raised the lot")
    site_code: str = Field(description="The lot's site code (LL, LS, MT, BS, PX...)")
    genetics: str = Field(description="Mulard, Barbarie or Pekin")
    sqal_grade: str | None = Field(description="Most frequent SQAL grade of the lot's samples")
    itm: float | None = Field(description="The lot's ITM: maize per duck (g) / mean liver weight (g)")
    itm_grade: str | None = Field(description="The lot's ITM grade: A+, A, B, C")


class LotSummary(BaseModel):
    id: str = Field(description="Lot id, LOT_YYYYMMDD_XXXX")
    state: str = Field(description="The lot's state")
    farmer_name: str = Field(description="The farmer who raised it")
    site_code: str = Field(description="Its site code")
    genetics: str = Field(description="Mulard, Barbarie or Pekin")
    nb_ducks: int = Field(description="Ducks in the lot")
    gavage_days: int = Field(description="Gavage days recorded")
    gavage_started_at: datetime | None = Field(description="First feeding")
    gavage_ended_at: datetime | None = Field(description="When the gavage ended (ready)")
    inspected_at: datetime | None = Field(description="When the SQAL inspection was closed")
    sample_count: int = Field(description="SQAL samples of the lot")
    grade_distribution: dict[str, int] | None = Field(description="Samples per SQAL grade")
    sqal_grade: str | None = Field(description="Most frequent SQAL grade")
    mean_liver_weight_g: float | None = Field(description="Mean liver weight of its samples (g)")
    itm: float | None = Field(description="ITM: maize per duck (g) / mean liver weight (g)")
    itm_grade: str | None = Field(description="ITM grade: A+, A, B, C")


class FeedbackSummary(BaseModel):
    count: int = Field(description="Feedbacks on the lot")
    average_rating: float | None = Field(description="Their mean rating (1-5); null when there is none")


class ScanResult(BaseModel):
    product: Product = Field(description="The scanned product")
    lot: LotSummary = Field(description="Its lot's traceability summary")
    feedback: FeedbackSummary = Field(description="Consumer feedback on the lot so far")


class FeedbackOut(BaseModel):
    id: int = Field(description="Feedback id")
    product_id: int | None = Field(description="The product it is about")
    lot_id: str = Field(description="The product's lot")
    rating: int = Field(description="Overall rating, 1-5")
    texture: int | None = Field(description="Texture rating, 1-5")
    flavor: int | None = Field(description="Flavor rating, 1-5")
    freshness: int | None = Field(description="Freshness rating, 1-5")
    comment: str | None = Field(description="The consumer's comment, as written")
    context: str | None = Field(description="home, restaurant, special_event or gift")
    created_at: datetime = Field(description="When it was left")


class RecentFeedback(FeedbackOut):
    product_gtin: str | None = Field(description="The product's GTIN-14; null for feedback on a lot")
    sqal_grade: str | None = Field(description="The lot's SQAL grade (most frequent grade of its samples)")


class FeedbackPage(BaseModel):
    total: int = Field(description="Feedback matching the filters")
    mean_rating: float | None = Field(description="Their mean rating; null when there is none")
    limit: int = Field(description="Page size")
    offset: int = Field(description="Page start")
    feedback: list[RecentFeedback] = Field(description="This page, newest first")
