"""Answer shapes: the original control panel's fields and JSON types, in our OpenAPI schema and in real
answers; and a documented response schema on every route of the gateway.

ORIGINAL is written down from the original's router (jacquesj1/projet_sqal,
backend-api/app/routers/control_panel.py: its pydantic models SimulatorStatus and ControlPanelStats,
and the dicts its endpoints and its Docker managers return); that code is not in this repository.
Types are JSON types; a trailing `?` means the original could answer null or leave the field out
(an Optional model field, or a key only some of its answers had). Our answers may add fields; the
original's must be there with the same type. DELIBERATE lists the few differences on purpose.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from gateway.api.models_control import OrchestrateStatus, ProcessInfo, SimulatorStatus
from gateway.api.models_status import DispatchStatus, IngestStatus
from gateway.app import create_app
from gateway.config import Settings
from tests.fixtures.gateway import serve

BASE = "/api/control-panel"
TOKEN = "api-shapes-test-token"

# ---- the original's shapes -------------------------------------------------------------------------

SIMULATOR_STATUS = {  # class SimulatorStatus (response_model of /simulators/status and, as a list, /list)
    "device_id": "string", "container_name": "string", "status": "string", "created_at": "string?",
    "started_at": "string?", "uptime_seconds": "integer?", "location": "string?", "interval": "integer?",
    "config_profile": "string?"}
PROCESS_STATUS = {  # Gavage/ConsumerSimulatorManager.get_status: {status: not_found} or these
    "status": "string", "container_name": "string?", "created_at": "string?", "started_at": "string?",
    "uptime_seconds": "integer?"}
SQAL_START = {  # DockerManager.start_simulator (container_id only when it started one)
    "status": "string", "device_id": "string", "container_name": "string", "container_id": "string?",
    "message": "string"}
SQAL_STOP = {  # DockerManager.stop_simulator (container_name absent when not_running)
    "status": "string", "device_id": "string", "container_name": "string?", "message": "string"}
SIM_STOP = {"status": "string", "container_name": "string?", "message": "string"}  # gavage / consumer stop
GAVAGE_START = {"status": "string", "container_name": "string", "container_id": "string?", "nb_lots": "integer?",
                "acceleration": "integer?", "message": "string"}
CONSUMER_START = {"status": "string", "container_name": "string", "container_id": "string?",
                  "feedbacks_per_hour": "integer?", "active_lots_count": "integer?", "message": "string"}


def under(prefix: str, fields: dict[str, str], nullable: bool = False) -> dict[str, str]:
    """`fields` of an object found at `prefix` (`x`, `x[]`...); the object itself typed too."""
    kind = "array" if prefix.endswith("[]") else "object"
    own = {prefix[:-2]: "array"} if kind == "array" else {prefix: "object" + ("?" if nullable else "")}
    return {**own, **{f"{prefix}.{k}": v for k, v in fields.items()}}


ORIGINAL: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/health", {"status": "string", "docker_available": "boolean", "timestamp": "string"}),
    ("GET", "/stats", {"total_simulators": "integer", "running_simulators": "integer",
                       "stopped_simulators": "integer", "error_simulators": "integer",
                       "docker_available": "boolean", "backend_healthy": "boolean"}),
    ("POST", "/simulators/start", SQAL_START),
    ("POST", "/simulators/stop", SQAL_STOP),
    ("POST", "/simulators/stop-all", {"stopped_count": "integer", **under("results[]", SQAL_STOP)}),
    ("GET", "/simulators/status/{device_id}", SIMULATOR_STATUS),
    ("GET", "/simulators/list", {"": "array", **{f"[].{k}": v for k, v in SIMULATOR_STATUS.items()}}),
    ("GET", "/simulators/logs/{device_id}", {"device_id": "string", "logs": "string"}),
    ("POST", "/scenarios/start", {"scenario": "string", "started_count": "integer",
                                  **under("results[]", {**SQAL_START, "container_name": "string?",
                                                        "message": "string?", "error": "string?"})}),
    ("POST", "/gavage/start", GAVAGE_START),
    ("POST", "/gavage/stop", SIM_STOP),
    ("GET", "/gavage/status", PROCESS_STATUS),
    ("POST", "/consumer/start", CONSUMER_START),
    ("POST", "/consumer/stop", SIM_STOP),
    ("GET", "/consumer/status", PROCESS_STATUS),
    ("POST", "/orchestrate/start", {"scenario": "string", "status": "string", **under("gavage", GAVAGE_START, True),
                                    **under("sqal_devices[]", SQAL_START), **under("consumer", CONSUMER_START, True),
                                    "errors": "array", "errors[]": "string", "running_count": "integer",
                                    "started_at": "string"}),
    ("POST", "/orchestrate/stop-all", {**under("gavage", SIM_STOP, True), **under("sqal_devices[]", SQAL_STOP),
                                       **under("consumer", SIM_STOP, True), "total_stopped": "integer"}),
    ("GET", "/orchestrate/status", {
        **under("gavage", PROCESS_STATUS), **under("consumer", PROCESS_STATUS),
        **under("sqal", {"total_devices": "integer", "running_devices": "integer", "devices": "array",
                         "devices[].device_id": "string", "devices[].status": "string"}),
        **under("lots", {"total_lots": "integer", "active_lots": "integer", "completed_lots": "integer",
                         "avg_itm": "number"}),
        **under("overall_status", {"total_simulators": "integer", "running_simulators": "integer"})}),
]

# (method, route, field) -> our JSON type, where we differ from the original on purpose
DELIBERATE: dict[tuple[str, str, str], str] = {
    # sample intervals go down to 0.2 s here; the original took whole seconds
    ("GET", "/simulators/status/{device_id}", "interval"): "number?",
    ("GET", "/simulators/list", "[].interval"): "number?",
    # acceleration is any factor in 1-10000 (86400 / 10 = 8640.0 is sent by our own tests)
    ("POST", "/gavage/start", "acceleration"): "number",
    ("POST", "/orchestrate/start", "gavage.acceleration"): "number?",
    # null until a lot has an ITM: the original showed a made-up 0.0
    ("GET", "/orchestrate/status", "lots.avg_itm"): "number?",
}


# ---- reading types out of an OpenAPI schema and out of answers -------------------------------------

def tokens(path: str) -> list[str]:
    return [t for t in path.replace("[]", ".[]").split(".") if t]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while True:
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        elif len(schema.get("allOf", ())) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def alternatives(spec: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    s = resolve(spec, schema)
    alts = s.get("anyOf") or s.get("oneOf")
    return [a for alt in alts for a in alternatives(spec, alt)] if alts else [s]


def json_types(spec: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for s in alternatives(spec, schema):
        if "type" in s:
            out |= set(s["type"]) if isinstance(s["type"], list) else {s["type"]}
        elif "const" in s or "enum" in s:
            out |= {value_type(v) for v in s.get("enum", [s.get("const")])}
        elif "properties" in s:
            out.add("object")
        else:
            out.add("any")
    return out


def child(spec: dict[str, Any], schema: dict[str, Any], tok: str) -> dict[str, Any] | None:
    for s in alternatives(spec, schema):
        if tok == "[]" and "items" in s:
            return s["items"]  # type: ignore[no-any-return]
        if tok != "[]" and tok in s.get("properties", {}):
            return s["properties"][tok]  # type: ignore[no-any-return]
    return None


def value_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}[type(v)]


def parse(expected: str) -> tuple[str, bool]:
    return expected.rstrip("?"), expected.endswith("?")


def response_schema(spec: dict[str, Any], path: str, method: str) -> dict[str, Any] | None:
    op = spec["paths"][path][method.lower()]
    for code, resp in op.get("responses", {}).items():
        if str(code).startswith("2"):
            for media in (resp.get("content") or {}).values():
                if media.get("schema"):
                    return media["schema"]  # type: ignore[no-any-return]
    return None


def schema_mismatches(spec: dict[str, Any]) -> list[str]:
    """Each original field missing from our documented answer, or documented with another type."""
    bad: list[str] = []
    for method, route, fields in ORIGINAL:
        root = response_schema(spec, BASE + route, method)
        if root is None:
            bad.append(f"{method} {route}: no response schema")
            continue
        for field, expected in fields.items():
            want_type, want_null = parse(DELIBERATE.get((method, route, field), expected))
            node: dict[str, Any] | None = root
            for tok in tokens(field):
                node = child(spec, node, tok) if node is not None else None
            if node is None:
                bad.append(f"{method} {route}: field {field!r} is not in our schema")
                continue
            got = json_types(spec, node)
            if got - {"null"} != {want_type}:
                bad.append(f"{method} {route}: {field!r} is {sorted(got)}, the original's is {expected}")
            elif "null" in got and not want_null:
                bad.append(f"{method} {route}: {field!r} may be null here, never in the original ({expected})")
    return bad


def answer_mismatches(method: str, route: str, answer: Any) -> list[str]:
    """Each original field missing from a real answer, or carrying a value of another JSON type."""
    fields = next(f for m, r, f in ORIGINAL if (m, r) == (method, route))
    bad: list[str] = []
    for field, expected in fields.items():
        want_type, want_null = parse(DELIBERATE.get((method, route, field), expected))
        values: list[Any] = [answer]
        for tok in tokens(field):
            nxt: list[Any] = []
            for v in values:
                if v is None:
                    continue  # a nullable object: its fields are checked when it is there
                if tok == "[]":
                    nxt += v
                elif tok not in v:
                    bad.append(f"{method} {route}: {field!r} missing in {str(v)[:200]}")
                else:
                    nxt.append(v[tok])
            values = nxt
        for v in values:
            t = value_type(v)
            ok = t == want_type or (t == "integer" and want_type == "number") or (t == "null" and want_null)
            if not ok:
                bad.append(f"{method} {route}: {field!r} = {v!r} ({t}), the original's is {expected}")
    return bad


# ---- the schema ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    app = create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused", data_dir=Path("/nonexistent")))
    return app.openapi()


def test_openapi_carries_the_originals_fields_and_types(spec: dict[str, Any]) -> None:
    assert len(ORIGINAL) == 18  # every HTTP route of the original control panel (its WebSocket: test_control_panel)
    assert not schema_mismatches(spec), "\n".join(schema_mismatches(spec))
    # each deliberate difference is still one: a field back to the original's type leaves this list
    for (method, route, field), ours in DELIBERATE.items():
        original = next(f for m, r, f in ORIGINAL if (m, r) == (method, route))[field]
        assert ours != original, (method, route, field)


def test_the_check_catches_a_changed_shape(spec: dict[str, Any]) -> None:
    """The comparison itself fails on a field renamed, retyped or made nullable."""
    import copy

    broken = copy.deepcopy(spec)
    props = broken["components"]["schemas"]["ControlStats"]["properties"]
    props["running_sims"] = props.pop("running_simulators")
    props["backend_healthy"] = {"type": "string"}
    props["total_simulators"] = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    found = "\n".join(schema_mismatches(broken))
    assert "'running_simulators' is not in our schema" in found
    assert "'backend_healthy' is ['string']" in found
    assert "'total_simulators' may be null" in found
    broken = copy.deepcopy(spec)
    schema = broken["paths"][BASE + "/simulators/list"]["get"]["responses"]["200"]["content"]["application/json"]
    schema["schema"] = {"$ref": "#/components/schemas/SimulatorStatus"}  # an object, not a list
    assert any("'' is ['object']" in m for m in schema_mismatches(broken))


def test_every_route_documents_its_answer(spec: dict[str, Any]) -> None:
    """Every operation has a 2xx answer with a schema that names its fields (a bare `object` does
    not), or a text, HTML or PDF answer (/metrics, the certificate); every field of every answer model has a description."""
    app = create_app(Settings(database_url="postgresql://unused@127.0.0.1:1/unused", data_dir=Path("/nonexistent")))
    routes = {(m, re.sub(r":\w+}", "}", c.path or "")) for c in iter_route_contexts(app.routes)
              if isinstance(c.original_route, APIRoute) and c.original_route.include_in_schema for m in c.methods or ()}
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == documented
    assert len(documented) >= 45, len(documented)
    bad = []
    answer_models: set[str] = set()
    for path, ops in spec["paths"].items():
        for method in ops:
            op = ops[method]
            ok_codes = [c for c in op["responses"] if str(c).startswith("2")]
            content = op["responses"][ok_codes[0]].get("content", {}) if ok_codes else {}
            if "text/plain" in content:
                assert content["text/plain"]["schema"] == {"type": "string"}, path
                continue
            if "text/html" in content or "application/pdf" in content:  # the printable certificate
                assert content.get("application/pdf", {}).get("schema", {}).get("format", "binary") == "binary", path
                continue
            schema = response_schema(spec, path, method)
            if schema is None:
                bad.append(f"{method.upper()} {path}: no response schema")
                continue
            s = resolve(spec, schema)
            if s.get("type") == "array":
                s = resolve(spec, s["items"])
            if not s.get("properties"):
                bad.append(f"{method.upper()} {path}: its answer's fields are not documented ({schema})")
            answer_models |= refs_in(spec, schema)
    for name in sorted(answer_models):
        for field, prop in spec["components"]["schemas"][name].get("properties", {}).items():
            if not prop.get("description"):
                bad.append(f"answer model {name}: field {field!r} has no description")
    assert "ControlStats" in answer_models and "Lot" in answer_models and "Device" in answer_models
    assert not bad, "\n".join(bad)


def refs_in(spec: dict[str, Any], schema: Any, seen: set[str] | None = None) -> set[str]:
    """Names of the component schemas `schema` uses, transitively."""
    seen = set() if seen is None else seen
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref is not None:
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                refs_in(spec, spec["components"]["schemas"][name], seen)
        for v in schema.values():
            refs_in(spec, v, seen)
    elif isinstance(schema, list):
        for v in schema:
            refs_in(spec, v, seen)
    return seen


# ---- the seed's sequence on the real gateway ---------------------------------------------------------

@pytest.fixture
async def gateway(database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    settings = Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0, api_token=TOKEN)
    app = create_app(settings)
    async with app.router.lifespan_context(app), serve(app) as url:
        yield app, url


def alive_pids(app: Any) -> list[int]:
    """Processes carrying one of this supervisor's run ids (children and their own children)."""
    run_ids = {c.run_id for c in app.state.supervisor.children.values() if c.run_id}
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("SQAL_SUPERVISOR_RUN") in run_ids and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


@pytest.mark.slow
async def test_seed_sequence_answers_in_the_originals_shapes(gateway: Any) -> None:
    """The original's own test (seed document): stop-all, start complete_demo with 2 SQAL devices,
    orchestration status, lots, the SQAL list, one device's status and logs, stop-all; nothing left
    running. Real simulators (gavage, 2 devices on MicroPython, consumer), real PostgreSQL."""
    app, url = gateway
    bad: list[str] = []
    async with httpx.AsyncClient(base_url=url + BASE, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=60) as c:
        async def call(method: str, route: str, **kw: Any) -> Any:
            r = await c.request(method, route.replace("{device_id}", "ESP32_DEMO_LL_01"), **kw)
            assert r.status_code == 200, (method, route, r.status_code, r.text[:500])
            bad.extend(answer_mismatches(method, route, r.json()))
            return r.json()

        assert (await call("POST", "/orchestrate/stop-all"))["total_stopped"] == 0
        out = await call("POST", "/orchestrate/start", json={"scenario_name": "complete_demo", "nb_lots": 3,
                                                              "acceleration": 1440, "nb_sqal_devices": 2,
                                                              "feedbacks_per_hour": 10})
        assert out["status"] == "running" and out["errors"] == [] and out["running_count"] == 5, out
        assert [d["device_id"] for d in out["sqal_devices"]] == ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]
        deadline = time.monotonic() + 60
        while True:  # the gavage simulator registers its 3 lots over the API
            st = await call("GET", "/orchestrate/status")
            if st["lots"]["total_lots"] >= 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert st["lots"]["total_lots"] == 3 and st["lots"]["active_lots"] == 3, st["lots"]
        assert st["overall_status"] == {"total_simulators": 5, "running_simulators": 5}, st["overall_status"]
        assert st["gavage"]["status"] == "running" and st["consumer"]["status"] == "running"
        assert st["shipping"]["status"] == "running"
        assert [d["status"] for d in st["sqal"]["devices"]] == ["running", "running"]
        lots = (await c.get(url + "/api/lots")).json()
        assert len(lots) == 3 and {lot["state"] for lot in lots} <= {"created", "gavage"}
        assert {lot["id"] for lot in lots} == {lot["id"] for lot in (await c.get(url + "/api/lots/active")).json()}

        lst = await call("GET", "/simulators/list")
        assert [s["device_id"] for s in lst] == ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]
        status = await call("GET", "/simulators/status/{device_id}")
        assert status["status"] == "running" and status["location"] == "Ligne A - Landes" and status["interval"] == 30
        logs = await call("GET", "/simulators/logs/{device_id}")
        assert logs["device_id"] == "ESP32_DEMO_LL_01" and "supervisor: started sqal_device" in logs["logs"]
        for route in ("/health", "/stats", "/gavage/status", "/consumer/status"):
            await call("GET", route)

        # every key the supervisor, the orchestrator and the ingest report is in a documented model
        sup = app.state.supervisor
        for name in ("gavage", "consumer", "shipping", "ESP32_DEMO_LL_01"):
            assert set(sup.status(name)) <= set(SimulatorStatus.model_fields), set(sup.status(name))
        assert set(app.state.orchestrator.status()) <= set(OrchestrateStatus.model_fields)
        assert set(app.state.ingest.status()) == set(IngestStatus.model_fields)
        if app.state.dispatcher is not None:
            d = app.state.dispatcher
            assert {*d.status(), "enabled", "events"} == set(DispatchStatus.model_fields)
        assert set(ProcessInfo.model_fields) < set(SimulatorStatus.model_fields)

        pids = alive_pids(app)
        assert len(pids) >= 7, pids  # 5 simulators + 2 MicroPython boards under the device wrappers
        stop = await call("POST", "/orchestrate/stop-all")
        assert stop["total_stopped"] == 5 and stop["gavage"]["status"] == "stopped"
        assert sorted(d["device_id"] for d in stop["sqal_devices"]) == ["ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02"]
        st = await call("GET", "/orchestrate/status")
        assert st["overall_status"]["running_simulators"] == 0 and st["running_count"] == 0
        assert st["sqal"]["running_devices"] == 0 and st["gavage"]["status"] == "stopped"
        assert await call("GET", "/simulators/list") and all(
            s["status"] == "stopped" for s in await call("GET", "/simulators/list"))
        assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not bad, "\n".join(bad)
