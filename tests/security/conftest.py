"""Fixtures for the security tests: the whole gateway app (real PostgreSQL, embedded broker on a free
port, supervisor) in-process, with an API token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings

TOKEN = "s3cret-test-token-0123456789abcdefghijklmnop"


@pytest.fixture
def make_client(database_url: str, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        options: dict[str, Any] = {"database_url": database_url, "data_dir": tmp_path, "mqtt_embedded_port": 0,
                                   "ingest_flush_ms": 5, "api_token": TOKEN}
        options.update(overrides)
        client = TestClient(create_app(Settings(**options)), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in reversed(opened):
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
