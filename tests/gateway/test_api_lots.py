"""The registry HTTP API in-process (httpx ASGI transport) against a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings

NEW_LOT = {"farmer_id": "G007", "farmer_name": "Marie Lafitte", "site_code": "LS", "genetics": "Barbarie",
           "nb_ducks": 48, "planned_duration_days": 12}


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    # The registry API alone: no MQTT ingest (its own tests cover it), so no broker port is taken.
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sqal.test") as c:
            yield c


async def test_health_and_openapi(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200 and r.json()["database"] == "ok"
    spec = (await client.get("/openapi.json")).json()
    for path in ("/api/lots", "/api/lots/active", "/api/lots/stats", "/api/lots/{lot_id}",
                 "/api/lots/{lot_id}/timeline", "/api/lots/{lot_id}/feedings", "/api/lots/{lot_id}/ready",
                 "/api/lots/{lot_id}/assignments", "/api/lots/{lot_id}/inspection/close",
                 "/api/lots/{lot_id}/suspend", "/api/lots/{lot_id}/close"):
        assert path in spec["paths"], path
    assert spec["paths"]["/api/lots"]["post"]["summary"].startswith("Create a lot")
    assert (await client.get("/docs")).status_code == 200


async def test_full_flow_over_http(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/lots", json=NEW_LOT)
    assert r.status_code == 201, r.text
    lot_id = r.json()["id"]
    assert r.json()["state"] == "created"
    feeding = {"day": 1, "moment": "morning", "planned_dose_g": 200, "actual_dose_g": 204, "mean_weight_g": 3900,
               "live_ducks": 48, "mortality_pct": 0, "temperature_c": 21.5, "humidity_pct": 60}
    r = await client.post(f"/api/lots/{lot_id}/feedings", json=feeding)
    assert r.status_code == 200 and r.json()["new"] and r.json()["lot"]["state"] == "gavage"
    r = await client.post(f"/api/lots/{lot_id}/feedings", json=feeding)
    assert r.json()["new"] is False and r.json()["lot"]["maize_total_per_duck_g"] == 204
    assert (await client.post(f"/api/lots/{lot_id}/ready")).json()["state"] == "ready"
    start = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    r = await client.post(f"/api/lots/{lot_id}/assignments",
                          json={"device_id": "ESP32_DEMO_LS_01", "line": "Landes Sud", "valid_from": start})
    assert r.status_code == 201, r.text
    assert [lot["id"] for lot in (await client.get("/api/lots/active")).json()] == [lot_id]
    r = await client.post(f"/api/lots/{lot_id}/inspection/close")
    assert r.status_code == 200 and r.json()["state"] == "inspected" and r.json()["itm"] is None
    assert [lot["id"] for lot in (await client.get("/api/lots", params={"state": "inspected"})).json()] == [lot_id]
    stats = (await client.get("/api/lots/stats")).json()
    assert (stats["total_lots"], stats["active_lots"], stats["completed_lots"], stats["total_ducks"]) == (1, 0, 1, 48)
    tl = (await client.get(f"/api/lots/{lot_id}/timeline", params={"limit": 2, "offset": 1})).json()
    assert tl["total"] == 6 and [e["type"] for e in tl["events"]] == ["record_feeding", "gavage_feeding"]


async def test_404_409_422_messages(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/lots/LOT_20990101_0042")
    assert r.status_code == 404 and "LOT_20990101_0042" in r.json()["detail"]
    r = await client.post("/api/lots/LOT_20990101_0042/ready")
    assert r.status_code == 404 and "LOT_20990101_0042" in r.json()["detail"]
    lot_id = (await client.post("/api/lots", json=NEW_LOT)).json()["id"]
    r = await client.post(f"/api/lots/{lot_id}/inspection/close")
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"lot {lot_id} is 'created': cannot close_inspection")
    assert (await client.get(f"/api/lots/{lot_id}")).json()["state"] == "created"
    r = await client.post("/api/lots", json={**NEW_LOT, "nb_ducks": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "nb_ducks"]
    r = await client.post("/api/lots", json={**NEW_LOT, "site_code": "landes"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "site_code"]
    r = await client.post("/api/lots", json={**NEW_LOT, "colour": "blue"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "colour"]
    r = await client.get("/api/lots/not-a-lot")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "lot_id"]
    r = await client.post(f"/api/lots/{lot_id}/feedings", json={"day": 1, "moment": "noon",
                                                               "planned_dose_g": 1, "actual_dose_g": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "moment"]
    r = await client.get("/api/lots", params={"state": "frozen"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "state"]


async def test_suspend_resume_close(client: httpx.AsyncClient) -> None:
    lot_id = (await client.post("/api/lots", json=NEW_LOT)).json()["id"]
    r = await client.post(f"/api/lots/{lot_id}/suspend", json={"reason": "veterinary check"})
    assert r.json()["state"] == "suspended" and r.json()["suspended_from"] == "created"
    assert (await client.post(f"/api/lots/{lot_id}/resume")).json()["state"] == "created"
    assert (await client.post(f"/api/lots/{lot_id}/close")).json()["state"] == "closed"
    r = await client.post(f"/api/lots/{lot_id}/suspend")
    assert r.status_code == 409 and "'closed'" in r.json()["detail"]
    tl = (await client.get(f"/api/lots/{lot_id}/timeline")).json()
    assert tl["events"][1]["data"]["reason"] == "veterinary check"


async def test_app_on_embedded_database_persists_and_stops_it() -> None:
    """No SQAL_DATABASE_URL: the lifespan starts the embedded PostgreSQL in the data dir, migrates,
    and stops it on shutdown; the next start finds the data."""
    import shutil

    from tests.fixtures.postgres import make_data_dir

    data_dir = make_data_dir("sqal-app-")
    settings = Settings(data_dir=data_dir, database_url=None, ingest_enabled=False)
    try:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            embedded = app.state.db.embedded
            assert embedded is not None and embedded.running
            pid = embedded.pid
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                lot_id = (await c.post("/api/lots", json=NEW_LOT)).json()["id"]
        assert not embedded.running and pid is not None
        app = create_app(settings)
        async with (app.router.lifespan_context(app),
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c):
            assert (await c.get(f"/api/lots/{lot_id}")).json()["farmer_name"] == NEW_LOT["farmer_name"]
    finally:
        from registry.embedded import EmbeddedPostgres

        EmbeddedPostgres(data_dir).stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def test_lot_samples_and_feedback(database_url: str, tmp_path: Path) -> None:
    from registry import feedback, samples
    from tests.registry.helpers import lot_in_state

    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False))
    async with app.router.lifespan_context(app):
        pool = app.state.pool
        lot_id = await lot_in_state(pool, "inspecting", device_id="ESP32_T_LL_07")
        other = await lot_in_state(pool, "inspecting", device_id="ESP32_T_LL_08")
        t0 = datetime.now(UTC) - timedelta(minutes=5)
        rows = [{"device_id": "ESP32_T_LL_07", "boot": 2, "seq": k, "lot_id": lot_id, "grade": g, "score": s,
                 "measured_at": t0 + timedelta(seconds=10 * (4 - k)), "weight_g": 600.0 + k, "alerts": []}
                for k, (g, s) in enumerate([("A", 0.8), ("B", 0.65), ("A", 0.78), ("REJECT", 0.3), ("A+", 0.9)])]
        rows.append({"device_id": "ESP32_T_LL_08", "boot": 1, "seq": 1, "lot_id": other, "grade": "A", "score": 0.8})
        await samples.store_samples(pool, rows)
        await feedback.add_feedback(pool, rating=5, lot_id=lot_id, comment="fondant")
        await feedback.add_feedback(pool, rating=2, lot_id=lot_id, texture=2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as client:
            page = (await client.get(f"/api/lots/{lot_id}/samples", params={"limit": 2, "offset": 1})).json()
            assert page["total"] == 5 and (page["limit"], page["offset"]) == (2, 1)
            # measurement order (seq 4 was measured first), not insertion order; no raw payload
            assert [s["seq"] for s in page["samples"]] == [3, 2]
            assert page["samples"][0]["grade"] == "REJECT" and "raw" not in page["samples"][0]
            a = (await client.get(f"/api/lots/{lot_id}/samples", params={"grade": "A"})).json()
            assert a["total"] == 2 and {s["seq"] for s in a["samples"]} == {0, 2}
            assert all(s["link_kind"] == "explicit" and s["device_id"] == "ESP32_T_LL_07" for s in a["samples"])
            fb = (await client.get(f"/api/lots/{lot_id}/feedback")).json()
            assert fb["total"] == 2 and fb["mean_rating"] == 3.5
            assert [f["rating"] for f in fb["feedback"]] == [5, 2] and fb["feedback"][0]["comment"] == "fondant"
            assert (await client.get(f"/api/lots/{other}/feedback")).json() == {
                "lot_id": other, "total": 0, "mean_rating": None, "feedback": []}
            for path in ("samples", "feedback"):
                r = await client.get(f"/api/lots/LOT_20990101_0042/{path}")
                assert r.status_code == 404 and "LOT_20990101_0042" in r.json()["detail"]
            r = await client.get(f"/api/lots/{lot_id}/samples", params={"grade": "Z"})
            assert r.status_code == 422
