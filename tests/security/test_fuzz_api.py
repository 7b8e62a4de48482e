"""Bad input never gets a 5xx, on every route of the gateway (real PostgreSQL, real app, API token).

- `test_fuzz_every_operation`: schemathesis generates requests from the app's own OpenAPI schema,
  valid ones (positive) and invalid ones (negative), for EVERY operation, the simulator starts
  included, against a real uvicorn server. Bars: no 5xx; every answer matches its documented schema
  and content type; invalid data (negative) is refused with a 4xx. Bounded and deterministic
  (derandomized), so it runs in CI in about a minute.
- `test_hostile_*`: the cases a generator rarely produces, written out: non-finite numbers (NaN,
  Infinity, 1e999), wrong JSON types, NUL and lone surrogates in text, truncated, huge, deeply
  nested, non-UTF-8 and non-object bodies, odd path parameters (NUL, 5000 characters, unicode,
  `..`, invalid UTF-8) and odd query values, on every route that takes them (enumerated from the app,
  so a new route is covered without editing this file, except a new request body: see BODIES).

Simulators: the supervisor's catalogue is swapped (Python API, never HTTP) for entries that build the
real argv -- so the real parameter checks run -- and then start `sleep` instead; scenario delays are
set to zero. The WebSockets are not in the OpenAPI schema; /ws/logs is covered by the path cases.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.app import create_app
from gateway.config import Settings
from gateway.supervisor import Catalogue, CommandSpec, RunContext
from gateway.supervisor import catalogue as real
from tests.fixtures.fuzz import fuzz_operations, served
from tests.security.conftest import TOKEN

MAX_EXAMPLES = 25
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLEEP = shutil.which("sleep") or "/bin/sleep"


def sleeping_catalogue() -> Catalogue:
    """The real entries' parameter checks and argv, then a `sleep` that SIGTERM ends at once."""
    cat = Catalogue()
    for kind, builder in (("sqal_device", real.sqal_device), ("gavage", real.gavage), ("consumer", real.consumer),
                          ("shipping", real.shipping)):
        def wrapped(params: Any, ctx: RunContext, builder: Any = builder) -> CommandSpec:
            spec = builder(params, ctx)
            return CommandSpec([SLEEP, "600"], env=spec.env)
        cat.register(kind, wrapped)
    return cat


def cheap_simulators(app: Any) -> None:
    app.state.supervisor.catalogue = sleeping_catalogue()
    app.state.supervisor.stop_timeout = 3
    app.state.orchestrator.delay_scale = 0


# ---- schemathesis ------------------------------------------------------------------------------------

@pytest.fixture
def base_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0, api_token=TOKEN,
                              ingest_flush_ms=5))
    with served(app) as url:
        cheap_simulators(app)
        yield url


@pytest.mark.slow
def test_fuzz_every_operation(base_url: str) -> None:
    tested, failures = fuzz_operations(base_url, AUTH, MAX_EXAMPLES)
    assert len(tested) >= 45, sorted(tested)  # every operation, the simulator starts included
    assert {"POST /api/control-panel/orchestrate/start", "POST /api/control-panel/simulators/start",
            "POST /api/control-panel/scenarios/start"} <= tested
    assert not failures, "\n\n".join(failures)


# ---- hostile input, case by case ---------------------------------------------------------------------

@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    c = make_client()
    cheap_simulators(c.app)  # type: ignore[attr-defined]
    return c


def http_routes(client: TestClient) -> list[tuple[str, str]]:
    out = [(m, re.sub(r":\w+}", "}", c.path or "")) for c in iter_route_contexts(client.app.routes)  # type: ignore[attr-defined]
           if isinstance(c.original_route, APIRoute) for m in sorted(c.methods or ())]
    assert len(out) >= 45, out
    return out


def lot_id(client: TestClient) -> str:
    r = client.post("/api/lots", json={"farmer_id": "G001", "farmer_name": "Jean", "site_code": "LL", "nb_ducks": 10,
                                       "planned_duration_days": 12}, headers=AUTH)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def fill(path: str, value: str, lot: str) -> str:
    """`path` with every parameter set to `value`, except lot ids that are not the one under test."""
    return re.sub(r"\{(\w+)\}", lambda m: value, path) if value != "LOT" else path.replace("{lot_id}", lot)


# Raw path segments as they travel in the URL (percent-encoded where a client must encode them).
ODD_SEGMENTS = ["%00", "a%00b", "x" * 5000, "%C3%A9%E6%BC%A2%F0%9F%A6%86", "..", "%2E%2E", "..%2F..%2Fetc%2Fpasswd",
                "%FF%FE", "%C2%B2", "%D9%A3", "-1", "NaN", "1e999", "%20", "%0A", "%ED%A0%80"]


def test_hostile_path_parameters_on_every_route(client: TestClient) -> None:
    lot = lot_id(client)
    routes = [(m, p) for m, p in http_routes(client) if "{" in p]
    assert len(routes) >= 15, routes
    bad = []
    for method, path in routes:
        for seg in ODD_SEGMENTS:
            url = fill(path, seg, lot)
            r = client.request(method, url, headers=AUTH, json={} if method == "POST" else None)
            # JSON or JSON-LD (EPCIS: '..' resolved by the client can land on /epcis/events)
            media = r.headers.get("content-type", "").split(";")[0]
            if r.status_code >= 500 or media not in ("application/json", "application/ld+json"):
                bad.append(f"{method} {path} with {seg[:30]!r}: {r.status_code} {r.text[:200]}")
            else:
                r.json()  # strict JSON, whatever came back
    # the logs WebSocket: an error message and close 4404, never a crash (a segment that decodes to
    # more than one, '..' resolved by the client or '%2F', matches no route: closed before accept)
    for seg in ODD_SEGMENTS:
        try:
            with client.websocket_connect(f"/api/control-panel/ws/logs/{seg}", headers=AUTH) as ws:
                msg = ws.receive_json()
                assert msg["type"] == "error" and msg["detail"].startswith("no simulator"), msg
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_json()
                assert closed.value.code == 4404
        except WebSocketDisconnect as exc:
            assert seg in ("..", "..%2F..%2Fetc%2Fpasswd") and exc.code == 1000, (seg, exc.code)
    assert not bad, "\n".join(bad)


def query_params(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(m.upper(), p, prm["name"]) for p, ops in spec["paths"].items() for m, op in ops.items()
            for prm in op.get("parameters", []) if prm["in"] == "query"]


ODD_QUERY = ["NaN", "Infinity", "1e999", "-1", "9" * 40, "\x00", "é漢🦆", "x" * 5000, "", "[]", "true"]


def test_hostile_query_values_on_every_route(client: TestClient) -> None:
    lot = lot_id(client)
    params = query_params(client.get("/openapi.json").json())
    assert len(params) >= 15, params
    bad = []
    for method, path, name in params:
        for value in ODD_QUERY:
            r = client.request(method, fill(path, "LOT", lot).replace("{device_id}", "ESP32_Q_01")
                               .replace("{qr}", "1"), params={name: value}, headers=AUTH)
            if r.status_code >= 500:
                bad.append(f"{method} {path}?{name}={value[:30]!r}: {r.status_code} {r.text[:200]}")
    assert not bad, "\n".join(bad)


# A valid body for every route that takes one; each field in turn gets a hostile value. A new route
# with a request body must be added here (the test fails until it is).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/lots"): {"farmer_id": "G001", "farmer_name": "Jean", "site_code": "LL", "genetics": "Mulard",
                            "nb_ducks": 10, "planned_duration_days": 12, "quality_profile": "premium"},
    ("POST", "/api/lots/{lot_id}/feedings"): {
        "day": 1, "moment": "morning", "planned_dose_g": 200, "actual_dose_g": 198, "mean_weight_g": 4500,
        "live_ducks": 10, "mortality_pct": 0, "temperature_c": 20, "humidity_pct": 60,
        "simulated_at": "2026-01-05T08:00:00Z", "ready_for_slaughter": False},
    ("POST", "/api/lots/{lot_id}/assignments"): {"device_id": "ESP32_H_LL_01", "line": "Ligne A",
                                                 "valid_from": "2026-01-05T08:00:00Z",
                                                 "valid_to": "2026-01-06T08:00:00Z"},
    ("POST", "/api/lots/{lot_id}/suspend"): {"reason": "check"},
    ("POST", "/api/lots/{lot_id}/close"): {"reason": "check"},
    ("POST", "/api/consumer/feedback"): {"product_id": 1, "qr_code": "1", "overall_rating": 5, "texture_rating": 4,
                                         "flavor_rating": 4, "freshness_rating": 4, "comment": "ok",
                                         "consumption_context": "home"},
    ("POST", "/api/control-panel/simulators/start"): {"device_id": "ESP32_H_LL_01", "location": "Ligne A",
                                                      "interval": 30, "profile": "default", "seed": 1,
                                                      "duration": 10},
    ("POST", "/api/control-panel/simulators/stop"): {"device_id": "ESP32_H_LL_01"},
    ("POST", "/api/control-panel/scenarios/start"): {"scenario_name": "production_demo", "interval": 5,
                                                     "profile": "default", "seed": 1, "duration": 10},
    ("POST", "/api/control-panel/gavage/start"): {"nb_lots": 1, "acceleration": 1440, "duration": 10, "seed": 1},
    ("POST", "/api/control-panel/consumer/start"): {"feedbacks_per_hour": 10, "min_rating": 3, "max_rating": 5,
                                                    "duration": 10, "use_active_lots": True, "seed": 1},
    ("POST", "/api/control-panel/orchestrate/start"): {
        "scenario_name": "complete_demo", "duration": 10, "acceleration": 1440, "nb_lots": 1, "nb_sqal_devices": 1,
        "feedbacks_per_hour": 10, "min_rating": 1, "max_rating": 5, "use_active_lots": True, "interval": 5,
        "profile": "default", "shipments_per_hour": 60, "seed": 1},
    ("POST", "/api/traceability/dispatches"): {
        "reference": "DA-1", "dispatched_at": "2026-01-05T08:00:00Z", "recipient_name": "Epicerie fine",
        "recipient_address": "12 rue des Arceaux, 33000 Bordeaux", "recipient_gln": None, "sender_name": "SQAL",
        "sender_address": "Mont-de-Marsan", "sender_gln": None, "lines": [{"product_id": 1, "quantity": 2}]},
    ("PUT", "/api/traceability/farms/{farmer_id}"): {"name": "EARL Dupont", "address": "40500 Saint-Sever",
                                                     "gln": None},
    ("POST", "/api/ota/releases"): {"version": "0.2.0"},
    ("POST", "/api/ota/rollouts"): {"version": "0.2.0", "site": "LL", "from_version": "0.1.0",
                                    "devices": ["ESP32_H_LL_01"], "waves": ["1", "100%"], "max_failures": 0.2,
                                    "probation_s": 60},
}
RAW = "__raw_json__"


def body_fields(spec: dict[str, Any], path: str, method: str) -> dict[str, set[str]]:
    """{field: its JSON types} of the route's request body."""
    def resolve(s: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in s:
            s = spec["components"]["schemas"][s["$ref"].rsplit("/", 1)[1]]
        return s

    def types(s: dict[str, Any]) -> set[str]:
        s = resolve(s)
        if "anyOf" in s:
            return set().union(*(types(a) for a in s["anyOf"]))
        if s.get("format") == "date-time":
            return {"datetime"}
        if "type" in s:
            return {s["type"]}
        return {"string"} if "enum" in s or "const" in s else {"any"}

    body = spec["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]["schema"]
    model = next(resolve(a) for a in resolve(body).get("anyOf", [body]) if "properties" in resolve(a))
    return {name: types(prop) - {"null"} for name, prop in model["properties"].items()}


def send(client: TestClient, method: str, url: str, body: dict[str, Any], raw: str | None = None) -> Any:
    text = json.dumps(body)
    if raw is not None:
        text = text.replace(json.dumps(RAW), raw)
    return client.request(method, url, content=text.encode("utf-8", "surrogatepass"),
                          headers={**AUTH, "Content-Type": "application/json"})


def names_field(r: Any, field: str) -> bool:
    detail = r.json().get("detail")
    return r.status_code == 422 and isinstance(detail, list) and any(field in map(str, e["loc"]) for e in detail)


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]
WRONG_TYPE = {"string": [12345, True, [], {"a": 1}], "integer": ["abc", "3", True, {}, 1.5],
              "number": ["abc", "1.5", False, []], "boolean": ["maybe", "true", 1, 2, []], "array": ["x", 3],
              "object": ["x", 3], "datetime": ["yesterday", 12345, [], "2026-13-45T99:00:00Z"]}
BAD_TEXT = ["a\x00b", "\ud800", "x\udfffy"]


def test_hostile_bodies_on_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    with_body = {(m.upper(), p) for p, ops in spec["paths"].items() for m, op in ops.items() if "requestBody" in op}
    assert with_body == set(BODIES), f"add a valid body for: {with_body ^ set(BODIES)}"
    lot = lot_id(client)
    bad: list[str] = []
    sent = 0
    for (method, path), base in BODIES.items():
        url = fill(path, "LOT", lot)
        fields = body_fields(spec, path, method)
        assert set(base) == set(fields), (path, set(fields) - set(base))  # every field gets the treatment
        for field, types in fields.items():
            cases: list[tuple[Any, str | None, bool]] = []  # (value, raw JSON, must be a 422 naming the field)
            if types & {"integer", "number"}:
                cases += [(RAW, lit, True) for lit in NON_FINITE]
            for t in types:
                cases += [(v, None, not any(value_fits(v, o) for o in types)) for v in WRONG_TYPE.get(t, [])]
            if types & {"string", "datetime"}:
                cases += [(v, None, True) for v in BAD_TEXT]
            for value, raw, must_name in cases:
                r = send(client, method, url, {**base, field: value}, raw)
                sent += 1
                shown = raw or repr(value)
                if r.status_code >= 500:
                    bad.append(f"{method} {path} {field}={shown}: {r.status_code} {r.text[:300]}")
                elif must_name and not names_field(r, field):
                    bad.append(f"{method} {path} {field}={shown}: {r.status_code}, not a 422 naming {field}: "
                               f"{r.text[:300]}")
        # whole bodies ("" and null are no body: fine where the body is optional)
        text = json.dumps(base)
        optional = not spec["paths"][path][method.lower()]["requestBody"].get("required", False)
        for content, expected in [(text[: len(text) // 2], {422}), (text + "}", {422}), ("", {422}),
                                  ("[" * 100_000, {400, 413, 422}), ("null", {422}), ("[]", {422}), ('"x"', {422}),
                                  ("1e999", {422}), ("NaN", {422})]:
            r = client.request(method, url, content=content.encode(), headers={**AUTH, "Content-Type": "application/json"})
            if r.status_code >= 500 or (r.status_code not in expected and not (optional and content in ("", "null"))):
                bad.append(f"{method} {path} body {content[:30]!r}: {r.status_code} {r.text[:200]}")
        r = client.request(method, url, content=b'{"reason": "\xff\xfe"}', headers={**AUTH, "Content-Type": "application/json"})
        if r.status_code not in (400, 422):
            bad.append(f"{method} {path} non-UTF-8 body: {r.status_code} {r.text[:200]}")
        r = client.request(method, url, content=text.encode(), headers={**AUTH, "Content-Type": "text/plain"})
        if r.status_code >= 500:
            bad.append(f"{method} {path} as text/plain: {r.status_code} {r.text[:200]}")
        huge = b'{"reason": "' + b"x" * (1_048_576 + 10) + b'"}'
        r = client.request(method, url, content=huge, headers={**AUTH, "Content-Type": "application/json"})
        if r.status_code != 413:
            bad.append(f"{method} {path} huge body: {r.status_code} {r.text[:200]}")
        r = client.request(method, url, content=iter([b'{"reason": "', b"x" * 1_048_576, b"x" * 64, b'"}']),
                           headers={**AUTH, "Content-Type": "application/json"})  # chunked: no Content-Length
        if r.status_code != 413:
            bad.append(f"{method} {path} huge chunked body: {r.status_code} {r.text[:200]}")
    assert sent >= 500, sent
    assert not bad, "\n".join(bad)
    stopped = client.post("/api/control-panel/orchestrate/stop-all", headers=AUTH).json()
    assert stopped["total_stopped"] == 0, stopped  # no hostile body started anything


def value_fits(value: Any, json_type: str) -> bool:
    """Whether pydantic's lax mode could accept `value` for a field of this JSON type."""
    if json_type == "any":
        return True
    if json_type == "datetime":
        return False  # only the WRONG_TYPE values, none of them a time
    if json_type in ("integer", "number"):
        return isinstance(value, int | float) and not isinstance(value, bool) and (
            json_type == "number" or float(value).is_integer())
    return {"string": str, "boolean": bool, "array": list, "object": dict}[json_type] is type(value)


def test_non_finite_numbers_are_422_naming_the_field(client: TestClient) -> None:
    """The report that started this: NaN or 1e999 in /orchestrate/start got a 500 (FastAPI's handler
    could not write the value it complained about as JSON)."""
    for raw in ("NaN", "1e999", "-Infinity"):
        r = send(client, "POST", "/api/control-panel/orchestrate/start",
                 {"scenario_name": "gavage_realtime", "acceleration": RAW}, raw)
        assert r.status_code == 422, r.text
        (err,) = r.json()["detail"]
        assert err["loc"] == ["body", "acceleration"] and err["msg"] == "Input should be a finite number", err
        assert err["input"] in ("NaN", "Infinity", "-Infinity")  # echoed as text, not as invalid JSON
    r = send(client, "POST", "/api/control-panel/orchestrate/start", {"nb_lots": RAW, "acceleration": RAW}, "1e400")
    assert r.status_code == 422 and {e["loc"][-1] for e in r.json()["detail"]} == {"nb_lots", "acceleration"}
    r = send(client, "POST", "/api/lots", {**BODIES[("POST", "/api/lots")], "farmer_name": "\ud800"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "farmer_name"], r.text
    assert r.json()["detail"][0]["input"] == "\\ud800"  # echoed as text, not as invalid UTF-8
    r = send(client, "POST", "/api/lots", {**BODIES[("POST", "/api/lots")], "farmer_name": "Jean\x00"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "farmer_name"], r.text
    assert "NUL" in r.json()["detail"][0]["msg"]
    assert client.get("/api/control-panel/orchestrate/status", headers=AUTH).json()["running_count"] == 0
