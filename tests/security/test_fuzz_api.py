"""Schemathesis: fuzz every HTTP operation of the gateway from its own OpenAPI schema, against a real
uvicorn server on a real PostgreSQL, with the API token (so the fuzz reaches the routes). Bars: no
5xx, and every response matches its documented schema and content type. Bounded and deterministic
(derandomized examples), so it runs in CI.

Excluded: the operations that START simulators (each valid example would spawn child processes;
their argument validation is fuzzed in test_supervisor_argv.py instead) and the WebSockets (not in
the OpenAPI schema)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
)

from gateway.app import create_app
from gateway.config import Settings
from tests.security.conftest import TOKEN

MAX_EXAMPLES = 20
SPAWNS = re.compile(r"^/api/control-panel/(simulators|scenarios|gavage|consumer|orchestrate)/start$")


@pytest.fixture
def base_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0, api_token=TOKEN,
                              ingest_flush_ms=5))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="error"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "gateway did not start"
        threading.Event().wait(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def not_a_server_error_(response: object) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, f"{status}: {response.text[:500]}"  # type: ignore[attr-defined]


def test_fuzz_every_operation(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    tested = 0
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() == "POST" and SPAWNS.match(op.path):
            continue
        tested += 1

        @given(case=op.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            not_a_server_error_(response)
            case.validate_response(response, checks=[response_schema_conformance, content_type_conformance],
                                   excluded_checks=[negative_data_rejection])

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every operation's failure, report them together
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert tested >= 30, tested
    assert not failures, "\n\n".join(failures)
