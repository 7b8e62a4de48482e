"""Checking an exported EPCIS document against GS1's EPCIS 2.0 JSON schema and JSON-LD context.

The schema and the context are GS1's files, read from a local directory (`../shared/epcis/` next to
the project, or SQAL_EPCIS_DIR); nothing is ever fetched: a `$ref` to anything but the schema itself
is refused. The schema's formats `uri` and `date-time` are checked here (RFC 3986 absolute URI,
RFC 3339 date-time) rather than left out, which jsonschema does silently when the optional format
packages are missing.

`undefined_terms` is the JSON-LD side: every property of the document must be a term of the EPCIS
context (within the scoped contexts the context declares), a compact IRI with a declared prefix, or
an absolute IRI, and every value of a vocabulary-typed property (bizStep, disposition, a sensor
report's type ...) a term of its context, so a JSON-LD processor drops nothing. The master data
header is left out of that check: the standard context does not define its keys.

`python -m gateway.traceability.schema FILE...` checks documents from the command line.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from gateway.config import get_settings
from gateway.shared_files import shared_dir

SCHEMA_FILE = "EPCIS-JSON-Schema.json"
CONTEXT_FILE = "epcis-context.jsonld"

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$")


def epcis_dir() -> Path:
    """SQAL_EPCIS_DIR, else ../shared/epcis/ beside the project."""
    return get_settings().epcis_dir or shared_dir("epcis")


def is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.match(value))


def is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
    except ValueError:  # 2026-02-30 and the like
        return False
    return True


def format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checks("uri")(is_uri)
    checker.checks("date-time")(is_date_time)
    return checker


def _refuse(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=f"{uri} (the EPCIS schema is checked offline: only its own definitions resolve)")  # type: ignore[call-arg]


class EpcisChecker:
    """GS1's schema (draft 7) and context, loaded once from `directory`."""

    def __init__(self, directory: Path | None = None) -> None:
        d = directory or epcis_dir()
        self.directory = d
        self.schema: dict[str, Any] = json.loads((d / SCHEMA_FILE).read_text())
        self.context: dict[str, Any] = json.loads((d / CONTEXT_FILE).read_text())["@context"]
        Draft7Validator.check_schema(self.schema)
        registry: Registry[Any] = Registry(retrieve=_refuse).with_resource(  # type: ignore[call-arg]
            self.schema["$id"], Resource.from_contents(self.schema))
        self.validator = Draft7Validator(self.schema, format_checker=format_checker(), registry=registry)

    def errors(self, doc: Any) -> list[str]:
        """Schema errors of `doc`, each as 'path: message' (deepest first); [] when valid."""
        out = []
        for err in sorted(self.validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            out.extend(_leaves(err))
        return out

    def undefined_terms(self, doc: Any) -> list[str]:
        """JSON-LD terms the context does not define, as 'path: problem'."""
        local = doc.get("@context", []) if isinstance(doc, dict) else []
        active = dict(self.context)
        for item in local if isinstance(local, list) else [local]:
            if isinstance(item, dict):
                active.update(item)
        return list(_walk(doc, active, "$"))


def _leaves(err: ValidationError) -> list[str]:
    """The most specific messages of an error (anyOf/allOf branches report their own causes)."""
    if err.context:
        deepest = max(len(e.absolute_path) for e in err.context)
        leaves = [e for e in err.context if len(e.absolute_path) == deepest]
        return [m for e in leaves for m in _leaves(e)]
    path = "$" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return [f"{path}: {err.message}"]


def _is_iri(term: str, active: dict[str, Any]) -> bool:
    if ":" not in term:
        return False
    prefix = term.split(":", 1)[0]
    if prefix in active:
        d = active[prefix]
        iri = d if isinstance(d, str) else d.get("@id") if isinstance(d, dict) else None
        return isinstance(iri, str) and iri[-1:] in ("/", "#", ":")
    return bool(_URI.match(term))  # an absolute IRI (https:, urn:)


def _walk(node: Any, active: dict[str, Any], path: str) -> Iterator[str]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, active, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        here = f"{path}.{key}"
        if key.startswith("@") or (path == "$" and key == "epcisHeader"):
            continue
        if key not in active:
            if not _is_iri(key, active):
                yield f"{here}: term {key!r} is not defined by the EPCIS context"
            continue
        definition = active[key]
        if definition in ("@type",) or (isinstance(definition, dict) and definition.get("@id") == "@type"):
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v not in active and not _is_iri(v, active):
                    yield f"{here}: type {v!r} is not defined by the EPCIS context"
            continue
        scoped = dict(active)
        if isinstance(definition, dict) and isinstance(definition.get("@context"), dict):
            scoped.update(definition["@context"])
            if definition.get("@type") == "@vocab":
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, str) and v not in definition["@context"] and not _is_iri(v, scoped):
                        yield f"{here}: {v!r} is not a term of {key}"
                continue
        if isinstance(definition, dict) and definition.get("@type") == "@vocab":
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v not in active and not _is_iri(v, active):
                    yield f"{here}: {v!r} is not a term of {key}"
            continue
        yield from _walk(value, scoped, here)


@lru_cache(maxsize=4)
def checker(directory: str | None = None) -> EpcisChecker:
    return EpcisChecker(Path(directory) if directory else None)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m gateway.traceability.schema FILE...", file=sys.stderr)
        return 2
    c = checker()
    bad = 0
    for name in args:
        doc = json.loads(Path(name).read_text())
        problems = c.errors(doc) + c.undefined_terms(doc)
        bad += bool(problems)
        print(f"{name}: " + ("valid" if not problems else f"{len(problems)} problem(s)"))
        for p in problems:
            print("  " + p)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
