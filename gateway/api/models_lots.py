"""Response models of the lot registry API (/api/lots, gateway/api/lots.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway.api.models_consumer import FeedbackOut
from registry.lifecycle import STATES

State = Literal["created", "gavage", "ready", "inspecting", "inspected", "suspended", "closed"]
assert set(STATES) == set(State.__args__)  # type: ignore[attr-defined]
Grade = Literal["A+", "A", "B", "C", "REJECT"]


class Lot(BaseModel):
    id: str = Field(description="Lot id, LOT_YYYYMMDD_XXXX")
    farmer_id: str = Field(description="The farmer's id")
    farmer_name: str = Field(description="The farmer's name")
    site_code: str = Field(description="Site code (LL, LS, MT, BS, PX...)")
    genetics: str = Field(description="Mulard, Barbarie or Pekin")
    nb_ducks: int = Field(description="Ducks in the lot")
    planned_duration_days: int = Field(description="Planned gavage days")
    state: State = Field(description="Lifecycle state")
    suspended_from: str | None = Field(default=None, description="The state a suspended lot resumes to")
    quality_profile: str | None = Field(default=None, description="Quality profile of the emulated products, if "
                                                                  "set")
    created_at: datetime = Field(description="When the lot was created")
    updated_at: datetime = Field(description="Its last change")
    gavage_started_at: datetime | None = Field(default=None, description="First feeding")
    gavage_ended_at: datetime | None = Field(default=None, description="When the gavage ended (ready)")
    current_day: int = Field(description="Last gavage day recorded")
    maize_total_per_duck_g: float = Field(description="Maize fed per duck so far (g)")
    mean_weight_g: float | None = Field(default=None, description="Mean duck weight at the last feeding (g)")
    live_ducks: int | None = Field(default=None, description="Ducks alive at the last feeding")
    mortality_pct: float | None = Field(default=None, description="Mortality at the last feeding (%)")
    inspection_started_at: datetime | None = Field(default=None, description="When it was assigned to a SQAL "
                                                                             "device")
    inspected_at: datetime | None = Field(default=None, description="When the SQAL inspection was closed")
    grade_distribution: dict[str, int] | None = Field(default=None, description="Samples per SQAL grade (once "
                                                                                "inspected)")
    sample_count: int = Field(description="SQAL samples linked to the lot")
    mean_liver_weight_g: float | None = Field(default=None, description="Mean liver weight of its samples (g)")
    itm: float | None = Field(default=None, description="ITM: maize per duck (g) / mean liver weight (g)")
    itm_grade: Literal["A+", "A", "B", "C"] | None = Field(default=None, description="ITM grade")
    closed_at: datetime | None = Field(default=None, description="When the lot was closed (terminal)")


class FeedingOut(BaseModel):
    new: bool = Field(description="false when this (lot, day, moment) was already recorded: nothing changed")
    lot: Lot = Field(description="The lot after the feeding")


class Assignment(BaseModel):
    id: int = Field(description="Assignment id")
    lot_id: str = Field(description="The lot")
    device_id: str = Field(description="The SQAL device inspecting it")
    line: str | None = Field(description="The production line")
    valid_from: datetime = Field(description="Start of the interval")
    valid_to: datetime | None = Field(description="End of the interval; null: open until the next assignment")
    created_at: datetime = Field(description="When it was recorded")


class Event(BaseModel):
    id: int = Field(description="Event id")
    at: datetime = Field(description="When it happened")
    stage: Literal["registry", "gavage", "sqal", "consumer"] = Field(description="The chain's stage")
    type: str = Field(description="lot_created, gavage_feeding, mark_ready, assign, sqal_sample, "
                                  "close_inspection, product_created, consumer_feedback...")
    data: dict[str, Any] = Field(description="The event's details")
    description: str = Field(description="The event in words")


class Timeline(BaseModel):
    lot_id: str = Field(description="The lot")
    state: State = Field(description="Its state now")
    total: int = Field(description="Events of the lot")
    limit: int = Field(description="Page size")
    offset: int = Field(description="Page start")
    first_at: datetime | None = Field(description="First event")
    last_at: datetime | None = Field(description="Last event")
    duration_s: float = Field(description="Seconds from the first event to the last")
    events_by_stage: dict[str, int] = Field(description="Events per stage")
    feedings: int = Field(description="Gavage feedings")
    samples: int = Field(description="SQAL samples")
    feedbacks: int = Field(description="Consumer feedbacks")
    events: list[Event] = Field(description="This page of events, oldest first")


class Stats(BaseModel):
    total_lots: int = Field(description="Lots in the registry")
    active_lots: int = Field(description="Lots in progress (created, gavage, ready, inspecting)")
    completed_lots: int = Field(description="Lots whose inspection is closed")
    total_ducks: int = Field(description="Ducks in all lots")
    average_gavage_days: float | None = Field(description="Mean gavage days of lots whose gavage ended")
    avg_itm: float | None = Field(description="Mean ITM of lots that have one; null until one has")
    average_consumer_rating: float | None = Field(description="Mean rating of all feedback; null when none")


class LotSample(BaseModel):
    id: int = Field(description="Sample id")
    device_id: str = Field(description="The SQAL device")
    boot: int = Field(description="Device boot counter")
    seq: int = Field(description="Sequence number within the boot")
    link_kind: Literal["explicit", "assignment"] = Field(description="Linked by the lot id it carried, or by the "
                                                                      "device's assignment")
    measured_at: datetime | None = Field(description="Device time; null when its clock was not trusted")
    received_at: datetime = Field(description="When the gateway received it")
    clock_synced: bool = Field(description="The device clock was synchronised")
    score: float | None = Field(description="The gateway's grade score (authoritative)")
    grade: Grade | None = Field(description="The gateway's grade")
    device_score: float | None = Field(description="The device's provisional score, kept beside it")
    device_grade: str | None = Field(description="The device's provisional grade")
    weight_g: float | None = Field(description="Measured weight (g)")
    volume_cm3: float | None = Field(description="Measured volume (cm3)")
    alerts: list[str] = Field(description="Alerts raised on the sample")


class LotSamples(BaseModel):
    lot_id: str = Field(description="The lot")
    total: int = Field(description="Samples of the lot (with the grade filter, if any)")
    limit: int = Field(description="Page size")
    offset: int = Field(description="Page start")
    samples: list[LotSample] = Field(description="This page, in measurement order")


class LotFeedbacks(BaseModel):
    lot_id: str = Field(description="The lot")
    total: int = Field(description="Feedbacks on the lot")
    mean_rating: float | None = Field(description="Their mean rating; null when there is none")
    feedback: list[FeedbackOut] = Field(description="Every feedback, oldest first")
