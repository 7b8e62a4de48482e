"""/api/consumer in-process (httpx ASGI) on a real PostgreSQL: products, QR scan, feedback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from registry import lots
from tests.registry.helpers import inspected_lot, products_of


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool]]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as c:
        yield c, app.state.pool


async def test_products_list_and_filters(env: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, pool = env
    a = await inspected_lot(pool, ["A", "A", "B"])
    b = await inspected_lot(pool, ["C", "C", "A"], device="ESP32_CONS_LL_02")
    pa, pb = await products_of(pool, a), await products_of(pool, b, 1)
    await lots.close(pool, b, "sold out")
    every = (await client.get("/api/consumer/products")).json()
    assert [p["id"] for p in every] == [p["id"] for p in pa + pb]
    first = every[0]
    assert first["lot_id"] == a and first["active"] and first["sqal_grade"] == "A" and first["itm"] == 16.0
    assert first["qr_uri"] == f"https://id.gs1.org/01/{first['gtin']}/10/{a}"
    assert [p["lot_id"] for p in (await client.get("/api/consumer/products?active=true")).json()] == [a, a]
    assert [p["lot_id"] for p in (await client.get("/api/consumer/products?active=false")).json()] == [b]
    assert [p["sqal_grade"] for p in (await client.get(f"/api/consumer/products?lot_id={b}")).json()] == ["C"]
    r = await client.get("/api/consumer/products?lot_id=LOT_bad")
    assert r.status_code == 422 and "lot_id" in r.text


async def test_scan_by_uri_encoded_raw_and_id(env: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, pool = env
    lot_id = await inspected_lot(pool, ["A+", "A+", "A"])
    p = (await products_of(pool, lot_id, 1))[0]
    for qr in (quote(p["qr_uri"], safe=""), p["qr_uri"], str(p["id"])):
        r = await client.get("/api/consumer/scan/" + qr)
        assert r.status_code == 200, (qr, r.text)
        body = r.json()
        assert body["product"]["id"] == p["id"] and body["lot"]["id"] == lot_id
        assert body["lot"]["sqal_grade"] == "A+" and body["lot"]["grade_distribution"] == {"A+": 2, "A": 1}
        assert body["lot"]["itm"] == 16.0 and body["lot"]["gavage_days"] == 1 and body["lot"]["state"] == "inspected"
        assert body["feedback"] == {"count": 0, "average_rating": None}


@pytest.mark.parametrize(("qr", "words"), [
    ("987654", "product 987654 not found"),
    ("https://id.gs1.org/01/03760000000011/10/LOT_20200101_0001", "no product with GTIN 03760000000011 in lot"),
    ("hello", "neither a product id nor a GS1 Digital Link"),
    (quote("https://example.com/01/123/10/x", safe=""), "neither a product id"),
])
async def test_scan_unknown_is_404_with_a_message(env: tuple[httpx.AsyncClient, asyncpg.Pool], qr: str,
                                                  words: str) -> None:
    client, _ = env
    r = await client.get("/api/consumer/scan/" + qr)
    assert r.status_code == 404 and words in r.json()["detail"], r.text


async def test_feedback_linked_to_the_lot(env: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, pool = env
    lot_id = await inspected_lot(pool, ["A"])
    p = (await products_of(pool, lot_id, 1))[0]
    body = {"product_id": p["id"], "qr_code": p["qr_uri"], "overall_rating": 4, "texture_rating": 5,
            "flavor_rating": 4, "freshness_rating": 3, "comment": "Fondant.", "consumption_context": "gift"}
    r = await client.post("/api/consumer/feedback", json=body)
    assert r.status_code == 201, r.text
    fb = r.json()
    assert (fb["lot_id"], fb["rating"], fb["texture"], fb["context"]) == (lot_id, 4, 5, "gift")
    tl = (await client.get(f"/api/lots/{lot_id}/timeline")).json()
    assert tl["feedbacks"] == 1 and tl["events"][-1]["type"] == "consumer_feedback"
    assert (await client.get(f"/api/consumer/scan/{p['id']}")).json()["feedback"] == {"count": 1, "average_rating": 4.0}
    assert (await client.get("/api/lots/stats")).json()["average_consumer_rating"] == 4.0


async def test_feedback_refusals(env: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, pool = env
    lot_id = await inspected_lot(pool, ["A"])
    p1, p2 = await products_of(pool, lot_id, 2)
    ok = {"product_id": p1["id"], "qr_code": p1["qr_uri"], "overall_rating": 3}
    r = await client.post("/api/consumer/feedback", json={**ok, "qr_code": p2["qr_uri"]})
    assert r.status_code == 400 and f"designates product {p2['id']}" in r.json()["detail"]
    r = await client.post("/api/consumer/feedback", json={**ok, "qr_code": "garbage"})
    assert r.status_code == 400 and "does not match product" in r.json()["detail"]
    r = await client.post("/api/consumer/feedback", json={**ok, "product_id": 99999})
    assert r.status_code == 404 and "product 99999 not found" in r.json()["detail"]
    for field, value in (("overall_rating", 6), ("overall_rating", 0), ("texture_rating", 9),
                         ("freshness_rating", -1), ("consumption_context", "car")):
        r = await client.post("/api/consumer/feedback", json={**ok, field: value})
        assert r.status_code == 422, (field, r.text)
        assert field in str(r.json()["detail"][0]["loc"]), r.text
    r = await client.post("/api/consumer/feedback", json={k: v for k, v in ok.items() if k != "qr_code"})
    assert r.status_code == 422 and "qr_code" in r.text
    assert await pool.fetchval("SELECT count(*) FROM consumer_feedback") == 0
    r = await client.post("/api/consumer/feedback", json={**ok, "qr_code": str(p1["id"])})  # id as QR is accepted
    assert r.status_code == 201
