"""Fixtures of the traceability tests: GS1's EPCIS schema and context from ../shared/epcis/ (a clone
without them skips, saying why; with SQAL_REQUIRE_SHARED=1, as CI sets it, that is a failure), a
guard that fails any network connection while documents are checked, and a small app with the
traceability router on the test database."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.auth import install_input_errors
from gateway.config import Settings
from gateway.traceability.api import router
from gateway.traceability.schema import CONTEXT_FILE, SCHEMA_FILE, EpcisChecker, epcis_dir
from registry.errors import (
    AssignmentConflict,
    IllegalTransition,
    InvalidInput,
    LotNotFound,
    ProductNotFound,
    RegistryError,
)

REQUIRE_ENV = "SQAL_REQUIRE_SHARED"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "traceability"
BASE_URL = "http://sqal.test"
# the gateway app's mapping (gateway/app.py), for this router-only app
_STATUS: list[tuple[type[RegistryError], int]] = [
    (LotNotFound, 404), (ProductNotFound, 404), (IllegalTransition, 409), (AssignmentConflict, 409),
    (InvalidInput, 422), (RegistryError, 400)]


@pytest.fixture(scope="session")
def checker() -> EpcisChecker:
    d = epcis_dir()
    missing = [f for f in (SCHEMA_FILE, CONTEXT_FILE) if not (d / f).is_file()]
    if missing:
        reason = (f"GS1's EPCIS schema and context are not in {d} (missing {', '.join(missing)}): this clone has "
                  "no ../shared/epcis/; set SQAL_EPCIS_DIR to a copy")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1 requires them)", pytrace=False)
        pytest.skip(reason)
    return EpcisChecker(d)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Any connection to a non-loopback address fails the test (the checks must never fetch)."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        try:
            loopback = host is not None and ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if host is not None and not loopback:
            attempts.append(address)
            raise AssertionError(f"network access to {address} while checking documents offline")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def no_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in (None, "localhost", "127.0.0.1", "::1"):
            return real_getaddrinfo(host, *args, **kwargs)
        attempts.append(host)
        raise AssertionError(f"DNS lookup of {host!r} while checking documents offline")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    yield attempts
    assert not attempts, attempts


def check_valid(checker: EpcisChecker, doc: Any) -> None:
    """Schema-valid with zero errors and nothing a JSON-LD processor would drop."""
    errors = checker.errors(doc)
    assert errors == [], "\n".join(errors[:30])
    terms = checker.undefined_terms(doc)
    assert terms == [], "\n".join(terms[:30])


def trace_app(pool: asyncpg.Pool, data_dir: Path, **settings: Any) -> FastAPI:
    app = FastAPI()
    app.state.pool = pool
    app.state.settings = Settings(database_url="postgresql://unused", data_dir=data_dir, **settings)

    async def registry_error(request: Request, exc: Exception) -> JSONResponse:
        code = next(c for cls, c in _STATUS if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc)}, status_code=code)

    app.add_exception_handler(RegistryError, registry_error)
    install_input_errors(app)  # as the gateway (gateway/auth.py): every 422 in pydantic's list shape
    app.include_router(router)
    return app


@pytest.fixture
async def client(db_pool: asyncpg.Pool, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = trace_app(db_pool, tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c:
        yield c
