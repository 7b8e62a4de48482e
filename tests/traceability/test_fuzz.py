"""Bad input never gets a 5xx from the traceability API: schemathesis generates valid and invalid
requests from the router's own OpenAPI schema, against a real uvicorn server on a database with a
whole lot in it. Bars (as tests/security/test_fuzz_api.py sets them for the gateway): no 5xx, every
answer matches its documented schema and content type, invalid requests are refused with a 4xx."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from gateway.auth import ApiAuth
from tests.traceability.conftest import trace_app
from tests.traceability.helpers import full_lot

MAX_EXAMPLES = 20
TOKEN = "traceability-fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def base_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
        try:
            await full_lot(app.state.pool)
            yield
        finally:
            await app.state.pool.close()

    app = trace_app(None, tmp_path)  # type: ignore[arg-type]  # the pool comes with the lifespan
    app.state.api_auth = ApiAuth(TOKEN)  # writes need the token, as in the gateway
    app.router.lifespan_context = lifespan
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="error"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "server did not start"
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def fuzz(op: Any, mode: GenerationMode) -> None:
    checks = [response_schema_conformance, content_type_conformance]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: schemathesis.Case) -> None:
        response = case.call(headers=AUTH, timeout=30)
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
        case.validate_response(response, checks=checks)

    run()


def test_fuzz_every_traceability_operation(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    tested: set[str] = set()
    for result in schema.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]
        if not op.path.startswith("/api/traceability"):
            continue
        tested.add(f"{op.method.upper()} {op.path}")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(op, mode)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, op.path
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every failure
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {str(exc)[:1500]}")
    assert len(tested) == 14, sorted(tested)
    assert not failures, "\n\n".join(failures)
