"""docs/traceability.md names every setting the traceability code reads and every route it serves."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from gateway.config import Settings
from gateway.traceability.api import router

DOC = (Path(__file__).resolve().parents[2] / "docs" / "traceability.md").read_text()


def test_every_setting_is_documented() -> None:
    names = [f"SQAL_{n.upper()}" for n in Settings.model_fields if n.startswith("trace_")] + ["SQAL_EPCIS_DIR"]
    assert [n for n in names if f"`{n}`" not in DOC] == []


def test_every_route_is_documented() -> None:
    prefix = "/api/traceability"
    missing = []
    for r in router.routes:
        assert isinstance(r, APIRoute)
        path = r.path.removeprefix(prefix)
        for method in r.methods or ():
            if f"{method} {path}" not in DOC:
                missing.append(f"{method} {path}")
    assert missing == []


def test_every_answer_is_documented() -> None:
    """As tests/gateway/test_api_shapes.py asks of the gateway: each operation's 2xx answer has a schema
    naming its fields (or is a text / PDF answer), and each field of each answer model a description."""
    from fastapi import FastAPI

    app = FastAPI()
    app.include_router(router)
    spec = app.openapi()
    schemas = spec["components"]["schemas"]
    bad = []
    models: set[str] = set()

    def refs(node: object) -> set[str]:
        if isinstance(node, dict):
            out = {node["$ref"].rsplit("/", 1)[-1]} if "$ref" in node else set()
            for v in node.values():
                out |= refs(v)
            return out
        return set().union(*(refs(v) for v in node)) if isinstance(node, list) else set()

    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = [c for c in op["responses"] if str(c).startswith("2")]
            content = op["responses"][ok[0]].get("content", {}) if ok else {}
            typed = {m: c.get("schema") for m, c in content.items() if c.get("schema")}
            text = {m for m in typed if m.startswith("text/") or m == "application/pdf"}
            if text and all(typed[m].get("type") == "string" for m in text) and not set(typed) - text:
                continue
            json_schemas = [s for m, s in typed.items() if m not in text]
            if not json_schemas:
                bad.append(f"{method.upper()} {path}: no answer schema")
                continue
            for s in json_schemas:
                names = refs(s)
                models.update(names)
                s = s["items"] if s.get("type") == "array" else s
                top = schemas[s["$ref"].rsplit("/", 1)[-1]] if "$ref" in s else s
                if not top.get("properties"):
                    bad.append(f"{method.upper()} {path}: answer fields not documented")
    seen: set[str] = set()
    while models - seen:
        name = (models - seen).pop()
        seen.add(name)
        for field, prop in schemas[name].get("properties", {}).items():
            models |= refs(prop)
            if not prop.get("description"):
                bad.append(f"{name}.{field} has no description")
    assert {"EpcisDocument", "TraceAnswer", "Dispatch", "Farm", "FeedingsAnswer"} <= seen
    assert bad == []
