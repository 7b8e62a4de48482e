"""Bad input never gets a 5xx from the traceability API: schemathesis generates valid and invalid
requests from the router's own OpenAPI schema, against a real uvicorn server on a database with a
whole lot in it. Bars (as tests/security/test_fuzz_api.py sets them for the gateway): no 5xx, every
answer matches its documented schema and content type, invalid requests are refused with a 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from fastapi import FastAPI

from gateway.auth import ApiAuth
from tests.fixtures.fuzz import fuzz_operations, served
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
    with served(app) as url:
        yield url


def test_fuzz_every_traceability_operation(base_url: str) -> None:
    tested, failures = fuzz_operations(base_url, AUTH, MAX_EXAMPLES, lambda path: path.startswith("/api/traceability"))
    assert len(tested) == 14, sorted(tested)
    assert not failures, "\n\n".join(failures)
