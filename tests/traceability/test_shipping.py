"""The shipping simulator (emulation/shipping.py) against the real API in process, its catalogue entry
and its place in complete_demo's options."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from emulation import shipping
from gateway.api.consumer import router as consumer_router
from gateway.api.lots import router as lots_router
from gateway.scenarios import USES, ScenarioError, ScenarioOptions, check_options
from gateway.supervisor.catalogue import Catalogue, RunContext, ShippingParams
from registry import dispatches, farms
from registry.gs1 import check_digit
from tests.traceability.conftest import trace_app
from tests.traceability.helpers import full_lot


@pytest.fixture
async def api(db_pool: asyncpg.Pool, tmp_path: Path) -> Any:
    app = trace_app(db_pool, tmp_path)
    app.include_router(lots_router)
    app.include_router(consumer_router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as c:
        yield c


def sim(seed: int = 3) -> shipping.ShippingSimulator:
    return shipping.ShippingSimulator(shipping.Config(api="http://sqal.test", seed=seed),
                                      shipping.ActionLog("shipping", out=io.StringIO()))


async def test_ships_every_lot_once_first_and_registers_farms(api: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    a = await full_lot(db_pool, products=3, farm=False, farmer_id="G100")
    b = await full_lot(db_pool, products=2, farm=False, farmer_id="G200")
    before = (await dispatches.list_dispatches(db_pool))[0]
    s = sim()
    assert await s.one_shipment(api) and await s.one_shipment(api)
    assert sorted(s.stats.lots) == sorted([a.lot_id, b.lot_id])  # a lot not shipped yet comes first
    assert await s.one_shipment(api)
    assert s.stats.errors == 0 and s.stats.shipments == 3 and s.stats.farms_registered == 2
    total, rows = await dispatches.list_dispatches(db_pool)
    assert total == before + 3
    for d in rows[-3:]:
        assert d["reference"].startswith("SIM-3-") and d["sender_name"] == "SQAL Foie Gras"
        assert (d["recipient_name"], d["recipient_address"], d["recipient_gln"]) in shipping.CUSTOMERS
        assert 1 <= len(d["lines"]) <= 3 and all(6 <= x["quantity"] <= 48 for x in d["lines"])
        assert len({x["lot_id"] for x in d["lines"]}) == 1
    farm = await farms.get_farm(db_pool, "G100")
    assert farm is not None and farm["name"] == "Elevage Jean Dupont" and farm["address"].endswith("Saint-Sever, France")
    # a second simulator with the same seed draws the same shipments (and its references are recorded once)
    s2 = sim()
    assert await s2.one_shipment(api)
    assert (await dispatches.list_dispatches(db_pool))[0] == total
    assert s2.stats.lots[0] == s.stats.lots[0]


async def test_nothing_to_ship(api: httpx.AsyncClient) -> None:
    s = sim()
    assert not await s.one_shipment(api)
    assert s.stats.no_products == 1 and s.stats.errors == 0


def test_customer_glns_are_valid_example_glns() -> None:
    for _, _, gln in shipping.CUSTOMERS:
        if gln:
            assert gln.startswith("952") and gln[-1] == check_digit(gln[:-1])


def test_catalogue_entry_and_options(tmp_path: Path) -> None:
    cat = Catalogue()
    ctx = RunContext(api_url="http://127.0.0.1:8000", broker_url=None, data_dir=tmp_path, api_token="secret")
    spec = cat.build("shipping", ShippingParams(shipments_per_hour=120, duration=30, seed=9), ctx)
    assert spec.argv[1:] == ["-m", "emulation.shipping", "--api", "http://127.0.0.1:8000", "--shipments-per-hour",
                             "120", "--duration", "30", "--seed", "9"]
    assert spec.env == {"SQAL_API_TOKEN": "secret"} and "secret" not in spec.argv
    with pytest.raises(ValueError, match="shipments_per_hour must be between 1 and 36000"):
        ShippingParams(shipments_per_hour=0)
    assert "shipments_per_hour" in USES["complete_demo"]
    check_options(ScenarioOptions("complete_demo", explicit={"shipments_per_hour"}))
    with pytest.raises(ScenarioError, match="shipments_per_hour do\\(es\\) not apply to scenario 'quality_focus'"):
        check_options(ScenarioOptions("quality_focus", explicit={"shipments_per_hour"}))
    cfg = shipping.parse_args(["--api", "http://127.0.0.1:1/", "--shipments-per-hour", "90", "--seed", "4"])
    assert (cfg.api, cfg.shipments_per_hour, cfg.seed, cfg.interval_s) == ("http://127.0.0.1:1", 90.0, 4, 40.0)
    with pytest.raises(SystemExit):
        shipping.parse_args(["--api", "http://127.0.0.1:1", "--shipments-per-hour", "0"])
