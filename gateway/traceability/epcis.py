"""A lot's life as GS1 EPCIS 2.0 events (JSON-LD), in an EPCISDocument a partner can capture.

Mapping (docs/traceability.md has the full table):

| registry record | EPCIS event |
|---|---|
| lot created | ObjectEvent ADD, bizStep commissioning, quantity = ducks, readPoint the farm, bizLocation the site, ILMD genetics, farmer, planned duration |
| each gavage feeding | ObjectEvent OBSERVE, bizStep sensor_reporting, sensorElementList (dose, mean weight, live ducks, mortality, barn climate), rawData -> the gateway's feedings |
| gavage end (ready) | ObjectEvent OBSERVE, bizStep shipping, farm -> processor (source / destination), gavage aggregates (maize per duck, weights, mortality, climate min/mean/max) |
| inspection closed | ObjectEvent OBSERVE, bizStep inspecting, disposition conformant / non_conformant, one sensorElement per SQAL device (deviceID) and one for the lot (grade counts, score, liver weight, ITM) |
| each product of the lot | TransformationEvent, transformationID of the lot, input the lot class, output the product class, ILMD grade and ITM |
| each dispatch | ObjectEvent OBSERVE, bizStep shipping, disposition in_transit, quantity per product, source / destination parties and locations, despatch advice |

Event ids are name-based (ids.event_id) on the registry record each event comes from, and every
event is built only from records that no longer change once written (a feeding, a closed
inspection, a product, a dispatch), so exporting a lot twice gives the same events.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.traceability import ids
from gateway.traceability.settings import TraceConfig
from gateway.traceability.story import LotStory
from registry.products import GRADE_ORDER, majority_grade

EPCIS_CONTEXT_URL = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
SCHEMA_VERSION = "2.0"
MEDIA_TYPE = "application/ld+json"
EVENT_TYPES = ("ObjectEvent", "AggregationEvent", "TransactionEvent", "TransformationEvent", "AssociationEvent")
VTYPE_LOCATION = "urn:epcglobal:epcis:vtype:BusinessLocation"
VTYPE_READ_POINT = "urn:epcglobal:epcis:vtype:ReadPoint"
VTYPE_PARTY = "urn:epcglobal:epcis:vtype:SourceDest"
VTYPE_CLASS = "urn:epcglobal:epcis:vtype:EPCClass"
MDA_NAME = "urn:epcglobal:cbv:mda#name"
MDA_DESCRIPTION = "urn:epcglobal:cbv:mda#descriptionShort"
# UN/CEFACT Recommendation 20 unit codes
GRAM, CELSIUS, PERCENT, DAY = "GRM", "CEL", "P1", "DAY"
CBV_PREFIXES = ("https://ref.gs1.org/cbv/BizStep-", "urn:epcglobal:cbv:bizstep:")


def ts(dt: datetime) -> str:
    """RFC 3339 UTC time with milliseconds (xsd:dateTimeStamp)."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tz_offset(dt: datetime, zone: str) -> str:
    """The local UTC offset of `zone` at `dt`, as eventTimeZoneOffset wants it: +01:00."""
    off = dt.astimezone(ZoneInfo(zone)).utcoffset()
    minutes = int(off.total_seconds() // 60) if off is not None else 0
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _num(v: Any, digits: int = 3) -> float | None:
    return None if v is None else round(float(v), digits)


def report(type_: str, measure: str | None = None, **values: Any) -> dict[str, Any]:
    """A sensorReport: measurement type (CBV name), our `sqal:measure` name, values without the Nones."""
    out: dict[str, Any] = {"type": type_}
    if measure is not None:
        out["sqal:measure"] = measure
    for k, v in values.items():
        if v is not None:
            out["sqal:" + k[5:] if k.startswith("sqal_") else k] = v
    return out


def compliant(lot: dict[str, Any]) -> bool:
    """The dispatcher's rule: more than half of the samples graded and not REJECT."""
    dist = lot.get("grade_distribution") or {}
    good = sum(n for g, n in dist.items() if g not in ("REJECT", "none"))
    return int(lot.get("sample_count") or 0) > 0 and 2 * good > int(lot["sample_count"])


@dataclass(order=True)
class Event:
    at: datetime
    id: str
    body: dict[str, Any] = field(compare=False)

    @property
    def type(self) -> str:
        return str(self.body["type"])

    def epc_classes(self) -> set[str]:
        out: set[str] = set()
        for key in ("quantityList", "inputQuantityList", "outputQuantityList"):
            out.update(q["epcClass"] for q in self.body.get(key, ()))
        return out


@dataclass
class MasterData:
    """Names (and addresses) of the ids the events use, by vocabulary type."""

    entries: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)

    def add(self, vtype: str, uri: str, attributes: dict[str, str | None]) -> str:
        attrs = [{"id": k, "attribute": v} for k, v in attributes.items() if v]
        self.entries.setdefault(vtype, {}).setdefault(uri, attrs)
        return uri

    def vocabulary_list(self) -> list[dict[str, Any]]:
        return [{"type": vtype, "vocabularyElementList": [
                    {"id": uri, "attributes": attrs} for uri, attrs in sorted(items.items())]}
                for vtype, items in sorted(self.entries.items())]


class LotMapper:
    """Builds the events of one lot (`events()`); names what it uses in `md`."""

    def __init__(self, story: LotStory, cfg: TraceConfig, md: MasterData | None = None) -> None:
        self.s, self.cfg, self.md = story, cfg, md if md is not None else MasterData()
        lot = story.lot
        self.lot_id = story.lot_id
        self.voc = ids.vocabulary_uri(cfg.id_base)
        self.lot_class = ids.lot_class_uri(cfg.company_prefix, self.lot_id)
        self.md.add(VTYPE_CLASS, self.lot_class, {MDA_DESCRIPTION: f"{ids.LOT_DESCRIPTION} ({lot['genetics']})"})
        farm = story.farm or {}
        gln = farm.get("gln")
        farm_name = farm.get("name") or f"{lot['farmer_name']} (gaveur {lot['farmer_id']})"
        self.farm_location = ids.farm_location_uri(cfg.id_base, lot["farmer_id"], gln)
        self.farm_party = ids.farm_party_uri(cfg.id_base, lot["farmer_id"], gln)
        for vtype in (VTYPE_LOCATION, VTYPE_READ_POINT):
            self.md.add(vtype, self.farm_location, {MDA_NAME: farm_name, self.voc + "address": farm.get("address")})
        self.md.add(VTYPE_PARTY, self.farm_party, {MDA_NAME: farm_name, self.voc + "address": farm.get("address")})
        site = lot["site_code"]
        self.site_location = ids.site_location_uri(cfg.id_base, site)
        site_name = f"Site {site} ({ids.SITE_NAMES[site]})" if site in ids.SITE_NAMES else f"Site {site}"
        for vtype in (VTYPE_LOCATION, VTYPE_READ_POINT):
            self.md.add(vtype, self.site_location, {MDA_NAME: site_name})
        self.processor_party = self._party(cfg.sender_name, cfg.sender_address, cfg.sender_gln)

    # ---- helpers ----

    def _party(self, name: str, address: str, gln: str | None) -> str:
        uri = ids.party_uri(self.cfg.id_base, name, address, gln)
        return self.md.add(VTYPE_PARTY, uri, {MDA_NAME: name, self.voc + "address": address})

    def _party_location(self, name: str, address: str, gln: str | None) -> str:
        uri = ids.party_location_uri(self.cfg.id_base, name, address, gln)
        for vtype in (VTYPE_LOCATION, VTYPE_READ_POINT):
            self.md.add(vtype, uri, {MDA_NAME: name, self.voc + "address": address})
        return uri

    def _product_class(self, gtin: str) -> str:
        uri = ids.class_uri(gtin, self.lot_id)
        self.md.add(VTYPE_CLASS, uri, {MDA_DESCRIPTION: ids.product_description(
            gtin, self.cfg.company_prefix, self.s.lot["genetics"])})
        return uri

    def _event(self, type_: str, at: datetime, kind: str, key: Sequence[object], **body: Any) -> Event:
        eid = ids.event_id(self.cfg.id_base, kind, *key)
        out: dict[str, Any] = {"type": type_, "eventID": eid, "eventTime": ts(at),
                               "eventTimeZoneOffset": tz_offset(at, self.cfg.timezone)}
        out.update((k, v) for k, v in body.items() if v is not None)
        return Event(at, eid, out)

    def raw(self, path: str) -> str:
        return f"{self.cfg.public_url}{path}"

    # ---- the events ----

    def events(self) -> list[Event]:
        out = [self.commissioning(), *self.feedings()]
        for ev in (self.handoff(), self.inspection()):
            if ev is not None:
                out.append(ev)
        out += [self.transformation(p) for p in self.s.products]
        out += [self.dispatch(d) for d in self.s.dispatches]
        return sorted(out)

    def commissioning(self) -> Event:
        lot = self.s.lot
        return self._event(
            "ObjectEvent", lot["created_at"], "commissioning", [self.lot_id],
            action="ADD", bizStep="commissioning", disposition="active",
            quantityList=[{"epcClass": self.lot_class, "quantity": lot["nb_ducks"]}],
            readPoint={"id": self.farm_location}, bizLocation={"id": self.site_location},
            ilmd={"sqal:lotId": self.lot_id, "sqal:genetics": lot["genetics"], "sqal:farmerId": lot["farmer_id"],
                  "sqal:farmerName": lot["farmer_name"], "sqal:siteCode": lot["site_code"],
                  "sqal:plannedDurationDays": lot["planned_duration_days"]})

    def feedings(self) -> list[Event]:
        raw = self.raw(f"/api/traceability/lots/{self.lot_id}/feedings")
        out = []
        for f in self.s.feedings:
            at = f["simulated_at"] or f["received_at"]
            reports = [
                report("Mass", "maize_dose_per_duck", value=_num(f["actual_dose_g"], 1), uom=GRAM),
                report("Mass", "planned_maize_dose_per_duck", value=_num(f["planned_dose_g"], 1), uom=GRAM),
            ]
            if f["mean_weight_g"] is not None:
                reports.append(report("Mass", "mean_live_weight", value=_num(f["mean_weight_g"], 1), uom=GRAM))
            if f["live_ducks"] is not None:
                reports.append(report("Count", "live_ducks", value=f["live_ducks"]))
            if f["mortality_pct"] is not None:
                reports.append(report("Dimensionless", "cumulative_mortality", value=_num(f["mortality_pct"]),
                                      uom=PERCENT))
            if f["temperature_c"] is not None:
                reports.append(report("Temperature", "barn_temperature", value=_num(f["temperature_c"], 2), uom=CELSIUS))
            if f["humidity_pct"] is not None:
                reports.append(report("RelativeHumidity", "barn_humidity", value=_num(f["humidity_pct"], 2),
                                      uom=PERCENT))
            qty: dict[str, Any] = {"epcClass": self.lot_class}
            if f["live_ducks"] is not None:
                qty["quantity"] = f["live_ducks"]
            out.append(self._event(
                "ObjectEvent", at, "feeding", [self.lot_id, f["day"], f["moment"]],
                action="OBSERVE", bizStep="sensor_reporting", quantityList=[qty],
                readPoint={"id": self.farm_location}, bizLocation={"id": self.farm_location},
                sensorElementList=[{"sensorMetadata": {"time": ts(at), "rawData": raw}, "sensorReport": reports}],
                **{"sqal:gavageDay": f["day"], "sqal:moment": f["moment"]}))
        return out

    def handoff(self) -> Event | None:
        """End of gavage (ready for slaughter): the lot leaves the farm for the processor, with the
        gavage's aggregates."""
        lot = self.s.lot
        if lot["gavage_ended_at"] is None:
            return None
        fs = self.s.feedings
        reports = [report("Mass", "maize_total_per_duck", value=_num(lot["maize_total_per_duck_g"], 1), uom=GRAM)]
        weights = [float(f["mean_weight_g"]) for f in fs if f["mean_weight_g"] is not None]
        if weights:
            reports.append(report("Mass", "mean_live_weight", value=_num(weights[-1], 1), minValue=_num(min(weights), 1),
                                  maxValue=_num(max(weights), 1), uom=GRAM))
        if lot["live_ducks"] is not None:
            reports.append(report("Count", "live_ducks", value=lot["live_ducks"]))
        if lot["mortality_pct"] is not None:
            reports.append(report("Dimensionless", "cumulative_mortality", value=_num(lot["mortality_pct"]),
                                  uom=PERCENT))
        reports.append(report("Time", "gavage_duration", value=lot["current_day"], uom=DAY))
        for key, kind, measure, unit in (("temperature_c", "Temperature", "barn_temperature", CELSIUS),
                                         ("humidity_pct", "RelativeHumidity", "barn_humidity", PERCENT)):
            vals = [float(f[key]) for f in fs if f[key] is not None]
            if vals:
                reports.append(report(kind, measure, minValue=_num(min(vals), 2), maxValue=_num(max(vals), 2),
                                      meanValue=_num(statistics.fmean(vals), 2),
                                      sDev=_num(statistics.stdev(vals), 2) if len(vals) > 1 else None, uom=unit))
        meta: dict[str, Any] = {"rawData": self.raw(f"/api/traceability/lots/{self.lot_id}/feedings")}
        if lot["gavage_started_at"] is not None:
            meta["startTime"] = ts(lot["gavage_started_at"])
        meta["endTime"] = ts(lot["gavage_ended_at"])
        qty: dict[str, Any] = {"epcClass": self.lot_class}
        if lot["live_ducks"] is not None:
            qty["quantity"] = lot["live_ducks"]
        site_party = self.processor_party
        return self._event(
            "ObjectEvent", lot["gavage_ended_at"], "gavage_end", [self.lot_id],
            action="OBSERVE", bizStep="shipping", disposition="in_transit", quantityList=[qty],
            readPoint={"id": self.farm_location},
            sourceList=[{"type": "owning_party", "source": self.farm_party},
                        {"type": "location", "source": self.farm_location}],
            destinationList=[{"type": "owning_party", "destination": site_party},
                             {"type": "location", "destination": self.site_location}],
            sensorElementList=[{"sensorMetadata": meta, "sensorReport": reports}])

    def inspection(self) -> Event | None:
        lot, insp = self.s.lot, self.s.inspection
        if lot["inspected_at"] is None or insp is None:
            return None
        samples_raw = self.raw(f"/api/lots/{self.lot_id}/samples")
        elements = []
        for dev in insp["devices"]:
            meta: dict[str, Any] = {"deviceID": ids.device_uri(self.cfg.id_base, dev["device_id"]),
                                    "rawData": samples_raw}
            if dev["first_at"] is not None:
                meta["startTime"], meta["endTime"] = ts(dev["first_at"]), ts(dev["last_at"])
            elements.append({"sensorMetadata": meta, "sensorReport": self._sample_reports(dev, dev["grades"])})
        whole = insp["lot"]
        lot_reports = self._sample_reports(whole, lot["grade_distribution"] or {}, samples=lot["sample_count"],
                                           weight_mean=lot["mean_liver_weight_g"])
        lot_reports.append(report("Mass", "maize_total_per_duck", value=_num(lot["maize_total_per_duck_g"], 1),
                                  uom=GRAM))
        if lot["itm"] is not None:
            lot_reports.append(report("Dimensionless", "itm", value=_num(lot["itm"]), sqal_grade=lot["itm_grade"]))
        meta = {"rawData": samples_raw, "endTime": ts(lot["inspected_at"])}
        if lot["inspection_started_at"] is not None:
            meta["startTime"] = ts(lot["inspection_started_at"])
        elements.append({"sensorMetadata": meta, "sensorReport": lot_reports})
        return self._event(
            "ObjectEvent", lot["inspected_at"], "inspection", [self.lot_id],
            action="OBSERVE", bizStep="inspecting", disposition="conformant" if compliant(lot) else "non_conformant",
            quantityList=[{"epcClass": self.lot_class}],
            readPoint={"id": self.site_location}, bizLocation={"id": self.site_location},
            sensorElementList=elements,
            **{"sqal:sqalGrade": majority_grade(lot["grade_distribution"]), "sqal:itm": _num(lot["itm"]),
               "sqal:itmGrade": lot["itm_grade"], "sqal:sampleCount": lot["sample_count"]})

    @staticmethod
    def _sample_reports(s: dict[str, Any], grades: dict[str, int], samples: int | None = None,
                        weight_mean: float | None = None) -> list[dict[str, Any]]:
        out = [report("Count", "samples_inspected", value=s["samples"] if samples is None else samples)]
        for g in (*GRADE_ORDER, "none"):
            if grades.get(g):
                out.append(report("Count", "samples_graded", value=grades[g], sqal_grade=g))
        if s["score_mean"] is not None:
            out.append(report("Dimensionless", "quality_score", meanValue=_num(s["score_mean"]),
                              minValue=_num(s["score_min"]), maxValue=_num(s["score_max"]), sDev=_num(s["score_sd"])))
        wmean = s["weight_mean"] if weight_mean is None else weight_mean
        if wmean is not None:
            out.append(report("Mass", "liver_weight", meanValue=_num(wmean, 1), minValue=_num(s["weight_min"], 1),
                              maxValue=_num(s["weight_max"], 1), sDev=_num(s["weight_sd"], 1), uom=GRAM))
        return out

    def transformation(self, product: dict[str, Any]) -> Event:
        """One event per product; the lot's products share the transformationID, the input is the lot
        class (no quantity: the lot's count is on its commissioning and gavage-end events)."""
        lot = self.s.lot
        return self._event(
            "TransformationEvent", product["created_at"], "transformation", [self.lot_id, product["gtin"]],
            transformationID=ids.transformation_uri(self.cfg.id_base, self.lot_id),
            inputQuantityList=[{"epcClass": self.lot_class}],
            outputQuantityList=[{"epcClass": self._product_class(product["gtin"])}],
            bizStep="commissioning", disposition="active",
            readPoint={"id": self.site_location}, bizLocation={"id": self.site_location},
            ilmd={"sqal:lotId": self.lot_id,
                  "sqal:productDescription": ids.product_description(product["gtin"], self.cfg.company_prefix,
                                                                     lot["genetics"]),
                  **({"sqal:sqalGrade": g} if (g := majority_grade(lot["grade_distribution"])) else {}),
                  **({"sqal:itm": _num(lot["itm"]), "sqal:itmGrade": lot["itm_grade"]} if lot["itm"] is not None
                     else {})})

    def dispatch(self, d: dict[str, Any]) -> Event:
        """The whole consignment (all its lines, other lots' too: an event is never cut in parts)."""
        lines = []
        for line in d["lines"]:
            uri = ids.class_uri(line["gtin"], line["lot_id"])
            if line["lot_id"] == self.lot_id:
                self._product_class(line["gtin"])
            else:
                self.md.add(VTYPE_CLASS, uri, {MDA_DESCRIPTION: ids.product_description(
                    line["gtin"], self.cfg.company_prefix)})
            lines.append({"epcClass": uri, "quantity": line["quantity"]})
        sender = self._party(d["sender_name"], d["sender_address"], d["sender_gln"])
        sender_loc = self._party_location(d["sender_name"], d["sender_address"], d["sender_gln"])
        recipient = self._party(d["recipient_name"], d["recipient_address"], d["recipient_gln"])
        recipient_loc = self._party_location(d["recipient_name"], d["recipient_address"], d["recipient_gln"])
        return self._event(
            "ObjectEvent", d["dispatched_at"], "dispatch", [d["id"]],
            action="OBSERVE", bizStep="shipping", disposition="in_transit", quantityList=lines,
            readPoint={"id": sender_loc},
            bizTransactionList=[{"type": "desadv",
                                 "bizTransaction": ids.despatch_advice_uri(self.cfg.id_base, d["reference"])}],
            sourceList=[{"type": "owning_party", "source": sender}, {"type": "location", "source": sender_loc}],
            destinationList=[{"type": "owning_party", "destination": recipient},
                             {"type": "location", "destination": recipient_loc}],
            **{"sqal:dispatchReference": d["reference"]})


def lot_events(story: LotStory, cfg: TraceConfig, md: MasterData) -> list[Event]:
    return LotMapper(story, cfg, md).events()


def product_events(story: LotStory, product_id: int, cfg: TraceConfig, md: MasterData) -> list[Event]:
    """The product's lot up to its inspection, the product's own transformation and the dispatches
    with a line of this product."""
    m = LotMapper(story, cfg, md)
    product = next(p for p in story.products if p["id"] == product_id)
    out = [m.commissioning(), *m.feedings()]
    for ev in (m.handoff(), m.inspection()):
        if ev is not None:
            out.append(ev)
    out.append(m.transformation(product))
    out += [m.dispatch(d) for d in story.dispatches if any(x["product_id"] == product_id for x in d["lines"])]
    return sorted(out)


def normalise_biz_step(value: str) -> str:
    """A CBV business step as the documents write it (bare name), from the bare name or a CBV URI."""
    for prefix in CBV_PREFIXES:
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


@dataclass(frozen=True)
class EventQuery:
    """The EPCIS query parameters this export understands (EPCIS 2.0 REST binding names)."""

    event_types: frozenset[str] | None = None  # eventType
    ge_event_time: datetime | None = None  # GE_eventTime
    lt_event_time: datetime | None = None  # LT_eventTime
    biz_steps: frozenset[str] | None = None  # EQ_bizStep
    any_epc_class: tuple[str, ...] | None = None  # MATCH_anyEPCClass (exact URI, or a prefix ending in *)
    event_count_limit: int | None = None  # eventCountLimit: the first N events (eventTime order)

    def matches(self, ev: Event) -> bool:
        if self.event_types is not None and ev.type not in self.event_types:
            return False
        if self.ge_event_time is not None and ev.at < self.ge_event_time:
            return False
        if self.lt_event_time is not None and ev.at >= self.lt_event_time:
            return False
        if self.biz_steps is not None and ev.body.get("bizStep") not in self.biz_steps:
            return False
        if self.any_epc_class is not None:
            classes = ev.epc_classes()
            if not any(_class_match(pattern, c) for pattern in self.any_epc_class for c in classes):
                return False
        return True

    def apply(self, events: Iterable[Event]) -> list[Event]:
        out = sorted(ev for ev in events if self.matches(ev))
        return out[: self.event_count_limit] if self.event_count_limit is not None else out


def _class_match(pattern: str, uri: str) -> bool:
    return uri.startswith(pattern[:-1]) if pattern.endswith("*") else uri == pattern


def unique(events: Iterable[Event]) -> list[Event]:
    """A dispatch of several lots appears in each lot's events: keep one of each id."""
    seen: dict[str, Event] = {}
    for ev in events:
        seen.setdefault(ev.id, ev)
    return sorted(seen.values())


def document(events: Sequence[Event], cfg: TraceConfig, md: MasterData,
             now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict[str, Any]:
    """The EPCISDocument (JSON-LD): standard context + our `sqal:` extension prefix, the master data
    naming the locations, parties and classes the events use, and the events in eventTime order."""
    used = _used_ids(events)
    md_used = MasterData({vt: {u: a for u, a in items.items() if u in used} for vt, items in md.entries.items()})
    header_list = [v for v in md_used.vocabulary_list() if v["vocabularyElementList"]]
    doc: dict[str, Any] = {
        "@context": [EPCIS_CONTEXT_URL, {"sqal": ids.vocabulary_uri(cfg.id_base)}],
        "type": "EPCISDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": ts(now()),
        "sender": cfg.sender_name,
    }
    if header_list:
        doc["epcisHeader"] = {"epcisMasterData": {"vocabularyList": header_list}}
    doc["epcisBody"] = {"eventList": [ev.body for ev in events]}
    return doc


def _used_ids(events: Iterable[Event]) -> set[str]:
    used: set[str] = set()
    for ev in events:
        b = ev.body
        used |= ev.epc_classes()
        for key in ("readPoint", "bizLocation"):
            if key in b:
                used.add(b[key]["id"])
        used.update(s["source"] for s in b.get("sourceList", ()))
        used.update(d["destination"] for d in b.get("destinationList", ()))
    return used
