"""complete_demo end to end, then everything it produced exported: the real gateway (PostgreSQL,
embedded broker, dispatcher) with the traceability router, gavage, two emulated SQAL devices, the
shipping simulator and the consumer as the supervisor's children (fast settings, as in
tests/test_complete_demo.py). Once a lot has been shipped: every lot's, every product's and the
whole run's EPCIS documents validate against GS1's schema and context with zero errors, the
shipped lot's document holds every kind of event, one step back / forward of a shipped product is
complete, and its lot's certificate is a one-page PDF with the lot id, grades and ITM."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from emulation.shipping import CUSTOMERS
from gateway.api.control_common import context_for
from gateway.app import create_app
from gateway.config import Settings
from gateway.scenarios import ScenarioOptions
from gateway.traceability.api import router
from gateway.traceability.schema import EpcisChecker
from tests.fixtures.gateway import serve
from tests.traceability.conftest import ARTIFACTS, check_valid

TOKEN = "traceability-demo-token"
API = "/api/traceability"


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("SQAL_INSPECTION_SAMPLES", "4")
    monkeypatch.setenv("SQAL_DISPATCH_POLL_S", "0.5")
    settings = Settings(database_url=database_url, data_dir=tmp_path, mqtt_embedded_port=0, api_token=TOKEN)
    app = create_app(settings)
    app.include_router(router)  # what gateway/app.py is to do
    async with app.router.lifespan_context(app), serve(app) as url:
        app.state.test_url = url
        yield app


@pytest.mark.slow
async def test_complete_demo_exports_validate(gateway: Any, checker: EpcisChecker) -> None:
    app = gateway
    pool, orch, sup = app.state.pool, app.state.orchestrator, app.state.supervisor
    out = await orch.start(ScenarioOptions(scenario_name="complete_demo", nb_lots=2, acceleration=86400,
                                           nb_sqal_devices=2, interval=1.0, feedbacks_per_hour=1800,
                                           shipments_per_hour=1800, seed=11), context_for(app.state))
    try:
        assert out["status"] == "running", out
        assert out["shipping"]["status"] == "started", out
        lot_id = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and lot_id is None:
            await asyncio.sleep(1)
            for c in sup.children.values():
                assert c.state() in ("running", "restarting"), (c.name, c.info(), c.logs.tail(30))
            lot_id = await pool.fetchval("SELECT lot_id FROM dispatch_lines ORDER BY dispatch_id LIMIT 1")
        logs = {name: [e["line"] for e in c.logs.tail(15)] for name, c in sup.children.items()}
        assert lot_id is not None, f"no lot shipped in time; logs: {logs}"
        assert any("shipped lot=" in line for line in logs["shipping"]), logs["shipping"]
    finally:
        stopped = await orch.stop_all()
    assert stopped["shipping"] is True

    async with httpx.AsyncClient(base_url=app.state.test_url, timeout=30) as http:
        async def doc(path: str) -> dict[str, Any]:
            r = await http.get(path)
            assert r.status_code == 200, (path, r.text)
            return dict(r.json())

        lot_ids = [r["id"] for r in await pool.fetch("SELECT id FROM lots ORDER BY id")]
        product_ids = [r["id"] for r in await pool.fetch("SELECT id FROM products ORDER BY id")]
        assert lot_ids and product_ids
        documents = {f"lot {x}": await doc(f"{API}/epcis/lots/{x}/events") for x in lot_ids}
        documents |= {f"product {p}": await doc(f"{API}/epcis/products/{p}/events") for p in product_ids}
        documents["whole run"] = await doc(f"{API}/epcis/events")
        for name, d in documents.items():
            assert d["epcisBody"]["eventList"], name
            check_valid(checker, d)
        # and the same check fails once a required field is gone, from any kind of event of the run
        whole = documents["whole run"]
        firsts: dict[tuple[str, str | None], int] = {}
        for i, e in enumerate(whole["epcisBody"]["eventList"]):
            firsts.setdefault((e["type"], e.get("bizStep")), i)
        assert len(firsts) == 5, firsts
        for i in firsts.values():
            broken = copy.deepcopy(whole)
            del broken["epcisBody"]["eventList"][i]["eventTime"]
            assert any("eventTime" in m for m in checker.errors(broken))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

        (ARTIFACTS / "complete_demo_epcis.jsonld").write_text(json.dumps(documents["whole run"], indent=2))

        shipped = documents[f"lot {lot_id}"]["epcisBody"]["eventList"]
        kinds = {(e["type"], e.get("bizStep")) for e in shipped}
        assert kinds == {("ObjectEvent", "commissioning"), ("ObjectEvent", "sensor_reporting"),
                         ("ObjectEvent", "shipping"), ("ObjectEvent", "inspecting"),
                         ("TransformationEvent", "commissioning")}, kinds
        (insp,) = [e for e in shipped if e.get("bizStep") == "inspecting"]
        assert {e["sensorMetadata"].get("deviceID", "").rsplit("/", 1)[-1] for e in insp["sensorElementList"]} <= \
            {"ESP32_DEMO_LL_01", "ESP32_DEMO_LL_02", ""}
        assert any(r.get("sqal:measure") == "itm" for el in insp["sensorElementList"] for r in el["sensorReport"])
        dispatches = [e for e in shipped if "bizTransactionList" in e]
        assert dispatches and all(e["destinationList"] for e in dispatches)

        product_id = await pool.fetchval("SELECT product_id FROM dispatch_lines WHERE lot_id = $1 LIMIT 1", lot_id)
        ans = await doc(f"{API}/products/{product_id}/trace")
        assert ans["complete"] is True, ans
        assert ans["subject"]["lot_id"] == lot_id and ans["subject"]["farm"]["registered"] is True
        assert ans["one_step_back"][0]["sender_address"] and ans["one_step_forward"]
        customers = {(n, a) for n, a, _ in CUSTOMERS}
        assert all((f["recipient_name"], f["recipient_address"]) in customers for f in ans["one_step_forward"])

        lot = await pool.fetchrow("SELECT itm, itm_grade, grade_distribution FROM lots WHERE id = $1", lot_id)
        r = await http.get(f"{API}/lots/{lot_id}/certificate.pdf")
        assert r.status_code == 200
        reader = PdfReader(io.BytesIO(r.content))
        text = " ".join((reader.pages[0].extract_text() or "").split())
        assert len(reader.pages) == 1 and lot_id in text and f"ITM {float(lot['itm']):.2f}" in text
        grades = json.loads(lot["grade_distribution"]) if isinstance(lot["grade_distribution"], str) \
            else dict(lot["grade_distribution"])
        assert all(f"{g}: {n}" in text for g, n in grades.items() if n), (grades, text)
