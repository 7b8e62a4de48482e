"""gateway/limits.py: request body size before parsing, per-connection rate, the rejection counter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from gateway.limits import REASONS, SecurityMetrics, TokenBucket, ws_message_size
from tests.security.conftest import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LOT = {"farmer_id": "G1", "farmer_name": "A", "site_code": "LL", "nb_ducks": 50, "planned_duration_days": 12}


@pytest.fixture
def small(make_client: object) -> TestClient:
    return make_client(http_max_body_bytes=2048, ingest_enabled=False)  # type: ignore[operator]


def test_body_over_the_limit_is_413_before_parsing(small: TestClient) -> None:
    big = {**LOT, "farmer_name": "x" * 4000}
    r = small.post("/api/lots", json=big, headers=AUTH)
    assert r.status_code == 413 and "limit is 2048 bytes" in r.json()["detail"]
    r = small.post("/api/lots", json=LOT, headers=AUTH)  # the same route under the limit works
    assert r.status_code == 201, r.text
    assert small.app.state.security_metrics.value("body_too_large") == 1  # type: ignore[attr-defined]


def test_chunked_body_without_length_is_counted_as_it_arrives(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"farmer_id": "G1", "farmer_name": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = small.post("/api/lots", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert small.post("/api/lots", json=LOT, headers=AUTH).status_code == 201  # the next request is fine


def test_bad_content_length_is_400(small: TestClient) -> None:
    r = small.post("/api/lots", content=b"{}", headers={**AUTH, "Content-Length": "abc"})
    assert r.status_code == 400


def test_unauthenticated_big_body_is_401_not_read(small: TestClient) -> None:
    r = small.post("/api/lots", content=b"x" * 100_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 401  # the auth gate is outermost: an anonymous upload costs nothing


def test_token_bucket_rate_and_burst() -> None:
    now = [100.0]
    b = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert b.take() and not b.take()
    now[0] += 100  # refills to the burst, never beyond
    assert sum(b.take() for _ in range(10)) == 3


def test_ws_message_size_counts_utf8_bytes() -> None:
    assert ws_message_size({"bytes": b"abc"}) == 3
    assert ws_message_size({"text": "abc"}) == 3
    assert ws_message_size({"text": "\u00e9\u00e9"}) == 4
    assert ws_message_size({"text": None}) == 0


def test_metrics_have_every_reason_and_an_other() -> None:
    m = SecurityMetrics()
    for r in REASONS:
        assert m.value(r) == 0
    m.reject("not-a-known-reason")
    assert m.value("other") == 1
