"""EPCIS 2.0 export: every kind of event validates against GS1's schema (zero errors) and uses only
terms of GS1's JSON-LD context; the mapping carries what the registry knows; ids are stable; a
document with a required field removed fails; the query parameters filter, and bad ones get 4xx."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from gateway.traceability import epcis, ids
from gateway.traceability.schema import EpcisChecker
from registry import lots
from registry.gs1 import make_gtin
from tests.traceability.conftest import ARTIFACTS, check_valid
from tests.traceability.helpers import DEVICES, PREFIX, SAMPLES, full_lot, gavage_lot

ID_BASE = "https://sqal.example"
API = "/api/traceability"


def events_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["epcisBody"]["eventList"])


def by_step(doc: dict[str, Any], step: str) -> list[dict[str, Any]]:
    return [e for e in events_of(doc) if e.get("bizStep") == step]


def reports(element: dict[str, Any], measure: str) -> list[dict[str, Any]]:
    return [r for r in element["sensorReport"] if r.get("sqal:measure") == measure]


async def get_doc(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    r = await client.get(path, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/ld+json")
    assert r.headers["GS1-EPCIS-Version"] == "2.0.0"
    return dict(r.json())


async def test_a_whole_lot_validates_and_carries_the_registry(client: httpx.AsyncClient, db_pool: asyncpg.Pool,
                                                              checker: EpcisChecker, offline: list[Any]) -> None:
    fl = await full_lot(db_pool)
    lot = await lots.get_lot(db_pool, fl.lot_id)
    doc = await get_doc(client, f"{API}/epcis/lots/{fl.lot_id}/events")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "lot_epcis.jsonld").write_text(json.dumps(doc, indent=2))  # for a person to read
    check_valid(checker, doc)
    assert doc["@context"][0] == epcis.EPCIS_CONTEXT_URL and doc["type"] == "EPCISDocument"
    evs = events_of(doc)
    times = [e["eventTime"] for e in evs]
    assert times == sorted(times)
    lot_class = f"https://id.gs1.org/01/{make_gtin(PREFIX, 0)}/10/{fl.lot_id}"

    # every kind of event, each also valid on its own (a top-level event needs its @context)
    kinds = {(e["type"], e.get("action"), e.get("bizStep")) for e in evs}
    assert kinds == {("ObjectEvent", "ADD", "commissioning"), ("ObjectEvent", "OBSERVE", "sensor_reporting"),
                     ("ObjectEvent", "OBSERVE", "shipping"), ("ObjectEvent", "OBSERVE", "inspecting"),
                     ("TransformationEvent", None, "commissioning")}
    for e in evs:
        alone = {"@context": doc["@context"], **e}
        assert checker.errors(alone) == [], (e["type"], e.get("bizStep"))
        assert checker.undefined_terms(alone) == []

    (com,) = by_step(doc, "commissioning")[:1]
    assert com["action"] == "ADD" and com["quantityList"] == [{"epcClass": lot_class, "quantity": 50}]
    assert com["readPoint"]["id"] == f"{ID_BASE}/location/farm/G042"
    assert com["bizLocation"]["id"] == f"{ID_BASE}/location/site/LL"
    assert com["ilmd"]["sqal:genetics"] == "Mulard" and com["ilmd"]["sqal:lotId"] == fl.lot_id

    feedings = by_step(doc, "sensor_reporting")
    assert len(feedings) == 22  # 11 days, morning and evening
    first = feedings[0]
    assert first["sqal:gavageDay"] == 1 and first["sqal:moment"] == "morning"
    (el,) = first["sensorElementList"]
    assert el["sensorMetadata"]["rawData"] == f"http://sqal.test{API}/lots/{fl.lot_id}/feedings"
    assert reports(el, "maize_dose_per_duck") == [{"type": "Mass", "sqal:measure": "maize_dose_per_duck",
                                                   "value": 221.0, "uom": "GRM"}]
    assert reports(el, "mean_live_weight")[0]["value"] == 4500.0
    assert reports(el, "cumulative_mortality")[0]["uom"] == "P1"

    handoff = [e for e in by_step(doc, "shipping") if e["quantityList"][0]["epcClass"] == lot_class]
    assert len(handoff) == 1
    (h,) = handoff
    assert h["sourceList"][0] == {"type": "owning_party", "source": f"{ID_BASE}/party/farm/G042"}
    assert {"type": "location", "destination": f"{ID_BASE}/location/site/LL"} in h["destinationList"]
    (hel,) = h["sensorElementList"]
    assert reports(hel, "maize_total_per_duck")[0]["value"] == lot["maize_total_per_duck_g"]
    temp = reports(hel, "barn_temperature")[0]
    assert temp["minValue"] == 20 and temp["maxValue"] == 22 and "meanValue" in temp

    (insp,) = by_step(doc, "inspecting")
    assert insp["disposition"] == "conformant"  # 5 of 7 samples graded and not REJECT
    elements = insp["sensorElementList"]
    devices = [e["sensorMetadata"].get("deviceID") for e in elements]
    assert devices == [f"{ID_BASE}/device/{d}" for d in DEVICES] + [None]
    for dev, element in zip(DEVICES, elements, strict=False):
        counts = {r["sqal:grade"]: r["value"] for r in reports(element, "samples_graded")}
        expected: dict[str, int] = {}
        for grade, _, _ in SAMPLES[dev]:
            expected[grade] = expected.get(grade, 0) + 1
        assert counts == expected
        assert reports(element, "samples_inspected")[0]["value"] == len(SAMPLES[dev])
    whole = elements[-1]
    (itm,) = reports(whole, "itm")
    assert itm["value"] == pytest.approx(lot["itm"]) and itm["sqal:grade"] == lot["itm_grade"]
    assert reports(whole, "liver_weight")[0]["meanValue"] == pytest.approx(lot["mean_liver_weight_g"])
    assert {r["sqal:grade"]: r["value"] for r in reports(whole, "samples_graded")} == lot["grade_distribution"]
    score = reports(whole, "quality_score")[0]
    assert score["minValue"] == pytest.approx(0.3) and score["maxValue"] == pytest.approx(0.9)

    transformations = [e for e in evs if e["type"] == "TransformationEvent"]
    assert [t["outputQuantityList"] for t in transformations] == [
        [{"epcClass": f"https://id.gs1.org/01/{g}/10/{fl.lot_id}"}] for g in fl.gtins]
    assert all(t["inputQuantityList"] == [{"epcClass": lot_class}] for t in transformations)
    assert len({t["transformationID"] for t in transformations}) == 1
    assert all(g.startswith("0" + PREFIX) for g in fl.gtins)

    dispatches = [e for e in by_step(doc, "shipping") if e not in handoff]
    assert len(dispatches) == 2
    d1, d2 = dispatches
    assert d1["quantityList"] == [{"epcClass": f"https://id.gs1.org/01/{fl.gtins[0]}/10/{fl.lot_id}", "quantity": 12},
                                  {"epcClass": f"https://id.gs1.org/01/{fl.gtins[1]}/10/{fl.lot_id}", "quantity": 6}]
    assert d1["bizTransactionList"][0]["type"] == "desadv" and d1["disposition"] == "in_transit"
    assert {"type": "owning_party", "destination": "https://id.gs1.org/417/3760000000017"} in d2["destinationList"]
    assert {"type": "location", "destination": "https://id.gs1.org/414/3760000000017"} in d2["destinationList"]

    # master data names the farm and the recipients, with their addresses
    vocab = {v["type"]: {el["id"]: {a["id"]: a["attribute"] for a in el["attributes"]} for el in v["vocabularyElementList"]}
             for v in doc["epcisHeader"]["epcisMasterData"]["vocabularyList"]}
    farm = vocab[epcis.VTYPE_LOCATION][f"{ID_BASE}/location/farm/G042"]
    assert farm[epcis.MDA_NAME] == "EARL Dupont" and "Saint-Sever" in farm[f"{ID_BASE}/voc/address"]
    assert vocab[epcis.VTYPE_PARTY]["https://id.gs1.org/417/3760000000017"][epcis.MDA_NAME] == \
        "Restaurant Le Relais Landais"


async def test_event_ids_are_stable_and_unique(client: httpx.AsyncClient, db_pool: asyncpg.Pool, tmp_path: Any) -> None:
    fl = await full_lot(db_pool)
    a = await get_doc(client, f"{API}/epcis/lots/{fl.lot_id}/events")
    b = await get_doc(client, f"{API}/epcis/lots/{fl.lot_id}/events")
    assert events_of(a) == events_of(b)  # the same events, ids included, not only the same ids
    event_ids = [e["eventID"] for e in events_of(a)]
    assert len(event_ids) == len(set(event_ids)) and all(i.startswith("urn:uuid:") for i in event_ids)
    # another host name does not change the ids (only rawData links follow the request's URL)
    from tests.traceability.conftest import trace_app

    other = trace_app(db_pool, tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://elsewhere:9000") as c:
        c_doc = await get_doc(c, f"{API}/epcis/lots/{fl.lot_id}/events")
    assert [e["eventID"] for e in events_of(c_doc)] == event_ids
    # the lot's events inside a product's or a time range's document keep their ids
    p_doc = await get_doc(client, f"{API}/epcis/products/{fl.product_ids[0]}/events")
    assert {e["eventID"] for e in events_of(p_doc)} <= set(event_ids)
    r_doc = await get_doc(client, f"{API}/epcis/events")
    assert set(event_ids) <= {e["eventID"] for e in events_of(r_doc)}
    # the id is the name-based UUID of the record
    assert by_step(a, "commissioning")[0]["eventID"] == ids.event_id(ID_BASE, "commissioning", fl.lot_id)


def _remove(doc: dict[str, Any], path: list[Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    return out


async def test_a_document_missing_a_required_field_fails(client: httpx.AsyncClient, db_pool: asyncpg.Pool,
                                                         checker: EpcisChecker, offline: list[Any]) -> None:
    fl = await full_lot(db_pool)
    doc = await get_doc(client, f"{API}/epcis/lots/{fl.lot_id}/events")
    check_valid(checker, doc)
    evs = events_of(doc)
    index: dict[tuple[str, str | None], int] = {}
    for i, e in enumerate(evs):
        index.setdefault((e["type"], e.get("bizStep")), i)
    assert len(index) == 5
    for field in ("@context", "schemaVersion", "creationDate", "epcisBody"):
        errors = checker.errors(_remove(doc, [field]))
        assert errors and any(field in e for e in errors), (field, errors)
    for (kind, step), i in index.items():
        for field in ("eventTime", "eventTimeZoneOffset") + (("action",) if kind == "ObjectEvent" else ()):
            errors = checker.errors(_remove(doc, ["epcisBody", "eventList", i, field]))
            assert errors, (kind, step, field)
            assert any(field in e for e in errors), (kind, step, field, errors)
    # an ObjectEvent needs something observed; a TransformationEvent its outputs or inputs
    i = index[("ObjectEvent", "inspecting")]
    bad = _remove(_remove(doc, ["epcisBody", "eventList", i, "quantityList"]), ["epcisBody", "eventList", i,
                                                                                  "readPoint"])
    assert checker.errors(bad)
    i = index[("TransformationEvent", "commissioning")]
    bad = _remove(_remove(doc, ["epcisBody", "eventList", i, "outputQuantityList"]),
                  ["epcisBody", "eventList", i, "inputQuantityList"])
    assert checker.errors(bad)
    # values are checked too: a made-up business step, a class that is not a URI, a bad time
    bad = copy.deepcopy(doc)
    bad["epcisBody"]["eventList"][0]["bizStep"] = "gavaging"
    assert checker.errors(bad)
    bad = copy.deepcopy(doc)
    bad["epcisBody"]["eventList"][0]["quantityList"][0]["epcClass"] = "lot 42"
    assert any("uri" in e for e in checker.errors(bad))
    bad = copy.deepcopy(doc)
    bad["epcisBody"]["eventList"][0]["eventTime"] = "2026-02-30T10:00:00Z"
    assert any("date-time" in e for e in checker.errors(bad))
    # and the JSON-LD side: a term the context does not define would be dropped by a partner's processor
    bad = copy.deepcopy(doc)
    bad["epcisBody"]["eventList"][0]["gavageDay"] = 3
    assert checker.undefined_terms(bad) == [
        "$.epcisBody.eventList[0].gavageDay: term 'gavageDay' is not defined by the EPCIS context"]


async def test_lots_at_every_stage_validate(client: httpx.AsyncClient, db_pool: asyncpg.Pool,
                                            checker: EpcisChecker) -> None:
    created = str((await lots.create_lot(db_pool, farmer_id="G7", farmer_name="Marie Lafon", site_code="MT",
                                         genetics="Pekin", nb_ducks=45, planned_duration_days=12))["id"])
    in_gavage = await gavage_lot(db_pool, days=3, farmer_id="G8", ready=False)
    no_products = await full_lot(db_pool, products=0, farm=False)
    for lot_id, n in ((created, 1), (in_gavage, 7), (no_products.lot_id, 22 + 3)):
        doc = await get_doc(client, f"{API}/epcis/lots/{lot_id}/events")
        check_valid(checker, doc)
        assert len(events_of(doc)) == n, lot_id


async def test_product_document(client: httpx.AsyncClient, db_pool: asyncpg.Pool, checker: EpcisChecker) -> None:
    fl = await full_lot(db_pool)
    p2 = fl.product_ids[1]
    doc = await get_doc(client, f"{API}/epcis/products/{p2}/events")
    check_valid(checker, doc)
    transformations = [e for e in events_of(doc) if e["type"] == "TransformationEvent"]
    assert [t["outputQuantityList"][0]["epcClass"] for t in transformations] == [
        f"https://id.gs1.org/01/{fl.gtins[1]}/10/{fl.lot_id}"]
    shipped = [e for e in by_step(doc, "shipping") if "bizTransactionList" in e]
    assert len(shipped) == 1  # only the dispatch with a line of this product
    assert by_step(doc, "commissioning")[0]["action"] == "ADD"  # its lot's history comes along


async def test_query_parameters(client: httpx.AsyncClient, db_pool: asyncpg.Pool, checker: EpcisChecker) -> None:
    old = await full_lot(db_pool, start=datetime.now(UTC) - timedelta(days=60))
    new = await full_lot(db_pool)
    path = f"{API}/epcis/lots/{new.lot_id}/events"
    only = await get_doc(client, path, eventType="TransformationEvent")
    assert {e["type"] for e in events_of(only)} == {"TransformationEvent"}
    check_valid(checker, only)
    steps = await get_doc(client, path, EQ_bizStep=["inspecting", "https://ref.gs1.org/cbv/BizStep-commissioning"])
    assert {e["bizStep"] for e in events_of(steps)} == {"inspecting", "commissioning"}
    product_class = f"https://id.gs1.org/01/{new.gtins[0]}/10/{new.lot_id}"
    matched = await get_doc(client, path, MATCH_anyEPCClass=product_class)
    assert len(events_of(matched)) == 3  # its transformation and its two dispatches
    prefix = await get_doc(client, path, MATCH_anyEPCClass=f"https://id.gs1.org/01/{new.gtins[1]}/*")
    assert len(events_of(prefix)) == 2
    limited = await get_doc(client, path, eventCountLimit=5)
    assert len(events_of(limited)) == 5
    r = await client.get(path, params={"maxEventCount": 5})
    assert r.status_code == 413 and "maxEventCount=5" in r.json()["detail"]

    # pages: perPage, then the Link header's URL until there is none; together, the whole answer
    whole = events_of(await get_doc(client, path))
    pages, url, links = [], f"{path}?perPage=4", []
    while url:
        r = await client.get(url)
        assert r.status_code == 200, r.text
        check_valid(checker, r.json())
        pages.append(events_of(r.json()))
        m = re.fullmatch(r'<(.+)>; rel="next"', r.headers.get("Link", ""))
        url = m.group(1) if m else ""
        links.append(url)
    assert [len(p) for p in pages[:-1]] == [4] * (len(pages) - 1) and 1 <= len(pages[-1]) <= 4
    assert [e for p in pages for e in p] == whole and len(pages) == -(-len(whole) // 4)
    # a token is bound to its query: on another path, with another filter, altered, or without perPage
    token = links[0].split("nextPageToken=")[1]
    for other in (f"{API}/epcis/lots/{old.lot_id}/events?perPage=4&nextPageToken={token}",
                  f"{path}?perPage=4&eventType=ObjectEvent&nextPageToken={token}",
                  f"{path}?perPage=4&nextPageToken=8.{'0' * 16}", f"{path}?nextPageToken={token}"):
        r = await client.get(other)
        assert r.status_code == 422 and "nextPageToken" in r.text, (other, r.text)

    # a time range across lots: the old lot's gavage ended 45 days ago, the new lot's recently
    since = (datetime.now(UTC) - timedelta(days=20)).isoformat()
    ranged = await get_doc(client, f"{API}/epcis/events", GE_eventTime=since)
    check_valid(checker, ranged)
    classes = {q["epcClass"] for e in events_of(ranged) for q in e.get("quantityList", [])}
    old_class = f"https://id.gs1.org/01/{make_gtin(PREFIX, 0)}/10/{old.lot_id}"
    assert any(new.lot_id in c for c in classes)
    assert old_class not in {q["epcClass"] for e in events_of(ranged) if e.get("bizStep") == "sensor_reporting"
                             for q in e["quantityList"]}
    assert all(e["eventTime"] >= since[:19] for e in events_of(ranged))
    until = (datetime.now(UTC) - timedelta(days=50)).isoformat()
    early = await get_doc(client, f"{API}/epcis/events", LT_eventTime=until)
    assert events_of(early) and all(old.lot_id in q["epcClass"] for e in events_of(early)
                                    for q in e.get("quantityList", []))


@pytest.mark.parametrize(("query", "fragment"), [
    ({"eventType": "QuantityEvent"}, "eventType"),
    ({"GE_eventTime": "2026-01-05T10:00:00"}, "GE_eventTime"),  # no time zone
    ({"GE_eventTime": "yesterday"}, "GE_eventTime"),
    ({"GE_eventTime": "1700000000"}, "RFC 3339"),  # not a Unix time
    ({"GE_eventTime": "2026-01-06T00:00:00Z", "LT_eventTime": "2026-01-05T00:00:00Z"}, "must be before"),
    ({"LT_eventTime": "0001-01-01T00:00:00+14:00"}, "between 1900 and 9000"),  # would not convert to UTC
    ({"EQ_bizStep": "gavaging"}, "gavaging"),
    ({"eventCountLimit": "0"}, "eventCountLimit"),
    ({"maxEventCount": "-1"}, "maxEventCount"),
    ({"MATCH_anyEPCClass": "a b"}, "MATCH_anyEPCClass"),
])
async def test_bad_query_parameters_get_422(client: httpx.AsyncClient, query: dict[str, str], fragment: str) -> None:
    for path in (f"{API}/epcis/events", f"{API}/epcis/lots/LOT_20260105_0001/events"):
        r = await client.get(path, params=query)
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert fragment in r.text


async def test_unknown_or_malformed_subjects(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{API}/epcis/lots/LOT_20260105_0001/events")
    assert r.status_code == 404 and "LOT_20260105_0001" in r.json()["detail"]
    r = await client.get(f"{API}/epcis/products/999999/events")
    assert r.status_code == 404 and "999999" in r.json()["detail"]
    for path in (f"{API}/epcis/lots/LOT_1/events", f"{API}/epcis/products/0/events",
                 f"{API}/epcis/products/{2**64}/events", f"{API}/epcis/products/x/events"):
        r = await client.get(quote(path))
        assert r.status_code == 422, (path, r.status_code)


async def test_settings_shape_the_ids(db_pool: asyncpg.Pool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                      checker: EpcisChecker) -> None:
    from tests.traceability.conftest import trace_app

    fl = await full_lot(db_pool)
    for k, v in {"SQAL_TRACE_ID_BASE": "https://trace.example.org", "SQAL_TRACE_PUBLIC_URL": "https://gw.example.org",
                 "SQAL_TRACE_SENDER_GLN": "9520123450021", "SQAL_TRACE_TIMEZONE": "UTC",
                 "SQAL_GTIN_COMPANY_PREFIX": PREFIX}.items():
        monkeypatch.setenv(k, v)
    app = trace_app(db_pool, tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as c:
        doc = await get_doc(c, f"{API}/epcis/lots/{fl.lot_id}/events")
    check_valid(checker, doc)
    assert doc["@context"][1] == {"sqal": "https://trace.example.org/voc/"}
    com = next(e for e in by_step(doc, "commissioning") if e["type"] == "ObjectEvent")
    assert com["eventID"] == ids.event_id("https://trace.example.org", "commissioning", fl.lot_id)
    assert com["readPoint"]["id"] == "https://trace.example.org/location/farm/G042"
    assert all(e["eventTimeZoneOffset"] == "+00:00" for e in events_of(doc))
    (handoff,) = [e for e in by_step(doc, "shipping") if "bizTransactionList" not in e]
    assert {"type": "owning_party", "destination": "https://id.gs1.org/417/9520123450021"} in handoff["destinationList"]
    assert handoff["sensorElementList"][0]["sensorMetadata"]["rawData"].startswith("https://gw.example.org/api/")


def test_time_zone_offsets() -> None:
    winter, summer = datetime(2026, 1, 5, 12, tzinfo=UTC), datetime(2026, 7, 5, 12, tzinfo=UTC)
    assert (epcis.tz_offset(winter, "Europe/Paris"), epcis.tz_offset(summer, "Europe/Paris")) == ("+01:00", "+02:00")
    assert epcis.tz_offset(winter, "America/St_Johns") == "-03:30"
    assert epcis.ts(datetime(2026, 1, 5, 13, 0, 0, 123456, tzinfo=UTC)) == "2026-01-05T13:00:00.123Z"
