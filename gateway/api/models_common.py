"""The base of every JSON request body of the HTTP API.

`RequestBody` refuses, with a 422 that names the field (pydantic's `detail` list):
- unknown fields (`extra="forbid"`): a misspelt option is an error, never silently ignored;
- a value of another JSON type than the schema says, where pydantic's lax mode would convert it:
  `true` or `"3"` for a number, `1` or `"yes"` for a boolean, `12345` for a date-time (`seed: true`
  is not seed 1);
- non-finite numbers (`allow_inf_nan=False`): Python's JSON parser accepts `NaN`, `Infinity` and
  `1e999` (which becomes infinity); none of them is a valid dose, rate or duration;
- text that PostgreSQL or UTF-8 cannot carry: a NUL character, or a lone UTF-16 surrogate (JSON
  `"\\ud800"`), anywhere in a string, a list of strings or a dict of them.

`Timestamp` is the type of a time a client sends, in a body or a query: RFC 3339 text with a zone
(never a Unix number, which pydantic would take), returned in UTC, within 1900-9000 (the calendars
of PostgreSQL and Python both hold those; year 1 at +14:00 would not convert).
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import HTTPException
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    field_validator,
)

_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})$")
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)


def _rfc3339_text(value: object) -> object:
    if isinstance(value, datetime):  # from Python, not from JSON
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with a time zone, e.g. 2026-01-05T10:00:00Z")
    return value


def _utc_in_calendar(value: datetime) -> datetime:
    if not EARLIEST <= value <= LATEST:
        raise ValueError(f"must be between 1900 and 9000, got {value.isoformat()}")
    return value.astimezone(UTC)


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_utc_in_calendar)]


def text_problem(value: Any, depth: int = 0) -> str | None:
    """Why `value` (or a string inside it) is not storable text, or None when it is."""
    if isinstance(value, str):
        if "\x00" in value:
            return "contains a NUL character (\\u0000)"
        if any("\ud800" <= ch <= "\udfff" for ch in value):
            return "contains a lone UTF-16 surrogate: not valid Unicode text"
        return None
    if depth > 8:
        return None
    if isinstance(value, list | tuple | set | frozenset):
        return next((p for p in (text_problem(v, depth + 1) for v in value) if p), None)
    if isinstance(value, dict):
        return next((p for p in (text_problem(v, depth + 1) for kv in value.items() for v in kv) if p), None)
    return None


def json_kinds(annotation: Any) -> set[str]:
    """The JSON kinds a field of this type takes: number, boolean, string, null, or other."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return json_kinds(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(json_kinds(a) for a in get_args(annotation)))
    if origin is Literal:
        return {"boolean" if isinstance(v, bool) else "number" if isinstance(v, int | float) else "string"
                if isinstance(v, str) else "other" for v in get_args(annotation)}
    if annotation is bool:
        return {"boolean"}
    if annotation in (int, float):
        return {"number"}
    if annotation is type(None):
        return {"null"}
    if annotation is str or annotation in (datetime, date, AwareDatetime):
        return {"string"}
    return {"other"}


class RequestBody(BaseModel):
    """Base class of the API's request bodies (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _json_type(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        kinds = json_kinds(field.annotation) if field is not None else {"other"}
        if "other" in kinds or value is None:
            return value
        if isinstance(value, bool) and "boolean" not in kinds:
            raise ValueError(f"expected {' or '.join(sorted(kinds - {'null'}))}, got {str(value).lower()}")
        if isinstance(value, str) and "string" not in kinds:
            raise ValueError(f"expected {' or '.join(sorted(kinds - {'null'}))}, got a string")
        if isinstance(value, int | float) and not isinstance(value, bool) and "number" not in kinds:
            raise ValueError(f"expected {' or '.join(sorted(kinds - {'null'}))}, got a number")
        if kinds <= {"boolean", "null"} and not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        problem = text_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def invalid_input(message: str, fields: Iterable[str] = ()) -> HTTPException:
    """A 422 for a rule the models cannot express (cross-field, scenario-specific), in the same shape
    as a validation error -- the one the OpenAPI schema documents for 422 -- with `loc` naming the
    first of `fields` the message starts with (["body"] when none)."""
    field = next((f for f in fields if re.match(rf"{re.escape(f)}\b", message)), None)
    return HTTPException(422, [{"loc": ["body", field] if field else ["body"], "msg": message, "type": "value_error"}])
