"""GET /api/consumer/feedback and GET /api/gavage/feedings in-process (httpx ASGI) on a real
PostgreSQL: what the control panel's Consumer and Gavage tables read instead of the simulators' logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from registry import feedback, gavage, lots
from tests.registry.helpers import lot_in_state, new_lot


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, asyncpg.Pool]]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as c:
        yield c, app.state.pool


def iso(t: datetime) -> str:
    return quote(t.isoformat())


async def test_recent_feedback(env: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, pool = env
    empty = await client.get("/api/consumer/feedback")
    assert empty.status_code == 200 and empty.json() == {"total": 0, "mean_rating": None, "limit": 50, "offset": 0,
                                                         "feedback": []}
    a = await lot_in_state(pool, "inspected", device_id="ESP32_API_LL_01")
    b = await lot_in_state(pool, "inspected", device_id="ESP32_API_LL_02")
    product = await feedback.create_product(pool, a, "03760123456784")
    r = await client.post("/api/consumer/feedback", json={
        "product_id": product["id"], "qr_code": product["qr_uri"], "overall_rating": 4, "texture_rating": 5,
        "flavor_rating": 3, "consumption_context": "restaurant", "comment": "<b>fondant</b>"})
    assert r.status_code == 201, r.text
    first = r.json()
    second = await feedback.add_feedback(pool, lot_id=b, rating=1)

    body = (await client.get("/api/consumer/feedback")).json()
    assert (body["total"], body["mean_rating"], body["limit"], body["offset"]) == (2, 2.5, 50, 0)
    assert [f["id"] for f in body["feedback"]] == [second["id"], first["id"]]
    shown = body["feedback"][1]
    assert shown == {**first, "product_gtin": "03760123456784", "sqal_grade": "A"}  # the POST's answer, and more
    assert shown["comment"] == "<b>fondant</b>" and shown["context"] == "restaurant"

    page = (await client.get("/api/consumer/feedback?limit=1&offset=1")).json()
    assert (page["total"], page["limit"], page["offset"], [f["id"] for f in page["feedback"]]) == \
        (2, 1, 1, [first["id"]])
    one = (await client.get(f"/api/consumer/feedback?lot_id={b}")).json()
    assert (one["total"], one["mean_rating"], [f["id"] for f in one["feedback"]]) == (1, 1.0, [second["id"]])
    at = datetime.fromisoformat(first["created_at"])
    assert [f["id"] for f in (await client.get(f"/api/consumer/feedback?until={iso(at)}")).json()["feedback"]] == []
    since = (await client.get(f"/api/consumer/feedback?since={iso(at)}")).json()
    assert since["total"] == 2
    # another zone, same instant
    paris = at.astimezone(ZoneInfo("Europe/Paris"))
    assert (await client.get(f"/api/consumer/feedback?since={iso(paris + timedelta(microseconds=1))}")).json()[
        "total"] == 1

    r = await client.get("/api/consumer/feedback?lot_id=LOT_20990101_0001")
    assert r.status_code == 404 and r.json()["detail"] == "lot LOT_20990101_0001 not found"


async def test_recent_feedings(env: tuple[httpx.AsyncClient, asyncpg.Pool]) -> None:
    client, pool = env
    a = await new_lot(pool, nb_ducks=30, planned_duration_days=11)
    r = await client.post(f"/api/lots/{a}/feedings", json={
        "day": 1, "moment": "morning", "planned_dose_g": 200, "actual_dose_g": 204.5, "mean_weight_g": 4400,
        "live_ducks": 30, "mortality_pct": 0, "simulated_at": "2026-01-05T06:00:00Z"})
    assert r.status_code == 200, r.text
    b = await new_lot(pool)
    await gavage.record_feeding(pool, b, day=1, moment="morning", planned_dose_g=200, actual_dose_g=200)
    await gavage.record_feeding(pool, a, day=1, moment="evening", planned_dose_g=210, actual_dose_g=209,
                                mean_weight_g=4460, live_ducks=29, mortality_pct=3.333)

    body = (await client.get("/api/gavage/feedings")).json()
    assert (body["total"], body["limit"], body["offset"]) == (3, 50, 0)
    assert [(f["lot_id"], f["moment"]) for f in body["feedings"]] == [(a, "evening"), (b, "morning"), (a, "morning")]
    f0 = body["feedings"][2]
    assert {k: f0[k] for k in ("day", "planned_dose_g", "actual_dose_g", "mean_weight_g", "live_ducks",
                               "mortality_pct", "simulated_at", "lot_state", "nb_ducks", "planned_duration_days")} \
        == {"day": 1, "planned_dose_g": 200.0, "actual_dose_g": 204.5, "mean_weight_g": 4400.0, "live_ducks": 30,
            "mortality_pct": 0.0, "simulated_at": "2026-01-05T06:00:00Z", "lot_state": "gavage", "nb_ducks": 30,
            "planned_duration_days": 11}
    assert body["feedings"][0]["mortality_pct"] == 3.333

    page = (await client.get(f"/api/gavage/feedings?lot_id={a}&limit=1&offset=1")).json()
    assert page["total"] == 2 and [f["moment"] for f in page["feedings"]] == ["morning"]
    # lots in progress by default; a lot that left keeps its feedings when named, or with active=false
    await lots.close(pool, b, "stop")
    assert {f["lot_id"] for f in (await client.get("/api/gavage/feedings")).json()["feedings"]} == {a}
    assert [f["lot_state"] for f in (await client.get(f"/api/gavage/feedings?lot_id={b}")).json()["feedings"]] == \
        ["closed"]
    assert (await client.get(f"/api/gavage/feedings?lot_id={b}&active=true")).json()["total"] == 0
    assert (await client.get("/api/gavage/feedings?active=false")).json()["total"] == 1
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert (await client.get(f"/api/gavage/feedings?since={iso(later)}")).json()["total"] == 0
    assert (await client.get(f"/api/gavage/feedings?until={iso(later)}")).json()["total"] == 2
    r = await client.get("/api/gavage/feedings?lot_id=LOT_20990101_0001")
    assert r.status_code == 404 and r.json()["detail"] == "lot LOT_20990101_0001 not found"


BAD_QUERIES = [
    ("lot_id", "LOT_1"), ("lot_id", "LOT_2026010５_0001"), ("lot_id", "LOT_20260105_0001'--"),
    ("since", "yesterday"), ("since", "2026-01-05T08:00:00"),  # no zone: which 08:00?
    ("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:59:59-01:00"),  # outside the calendar in UTC
    ("until", "2026-13-45T99:00:00Z"), ("since", "\x00"), ("limit", "0"), ("limit", "1001"), ("limit", "NaN"),
    ("limit", "9" * 40), ("offset", "-1"), ("offset", "9" * 40), ("offset", "1e999"),
]


@pytest.mark.parametrize("path", ["/api/consumer/feedback", "/api/gavage/feedings"])
async def test_bad_query_parameters_are_4xx_naming_them(env: tuple[httpx.AsyncClient, asyncpg.Pool], path: str) -> None:
    client, _ = env
    bad = []
    for name, value in BAD_QUERIES + ([("active", "maybe")] if "gavage" in path else []):
        r = await client.get(path, params={name: value})
        detail = r.json().get("detail") if r.headers.get("content-type", "").startswith("application/json") else None
        if r.status_code != 422 or not isinstance(detail, list) or detail[0]["loc"] != ["query", name]:
            bad.append(f"{name}={value!r}: {r.status_code} {r.text[:200]}")
    assert not bad, "\n".join(bad)
