"""One step back, one step forward: for a product or a lot, where it came from (its lot's farm) and
where it went (its dispatches), every Regulation 931/2011 field filled, as JSON and as CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

import asyncpg
import httpx

from gateway.traceability.trace import CSV_COLUMNS, REQUIRED
from registry import lots
from tests.traceability.helpers import FARM, RECIPIENT, full_lot, gavage_lot

API = "/api/traceability"


def filled(rec: dict[str, Any]) -> bool:
    return all(rec.get(k) not in (None, "") for k in REQUIRED) and rec["missing"] == []


async def test_product_one_step_back_and_forward(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool)
    lot = await lots.get_lot(db_pool, fl.lot_id)
    r = await client.get(f"{API}/products/{fl.product_ids[0]}/trace")
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["complete"] is True and "931/2011" in ans["regulation"]
    subj = ans["subject"]
    assert subj["kind"] == "product" and subj["lot_id"] == fl.lot_id and subj["gtin"] == fl.gtins[0]
    assert subj["farm"] == {"farmer_id": "G042", "name": FARM["name"], "address": FARM["address"], "gln": None,
                            "registered": True}
    (back,) = ans["one_step_back"]
    assert filled(back)
    assert back["sender_name"] == FARM["name"] and back["sender_address"] == FARM["address"]
    assert back["lot_reference"] == fl.lot_id and back["quantity"] == lot["live_ducks"] and back["unit"] == "live ducks"
    assert back["recipient_name"] == "SQAL Foie Gras" and back["dispatch_date"].startswith(
        lot["gavage_ended_at"].isoformat()[:19])
    fwd = ans["one_step_forward"]
    assert [(f["recipient_name"], f["quantity"]) for f in fwd] == [(RECIPIENT["recipient_name"], 12),
                                                                   ("Restaurant Le Relais Landais", 24)]
    assert all(filled(f) for f in fwd)
    assert fwd[0]["description_of_food"] == "Foie gras entier cru (Mulard duck)"
    assert fwd[0]["recipient_address"] == RECIPIENT["recipient_address"] and fwd[1]["recipient_gln"] == "3760000000017"
    assert all(f["lot_reference"] == fl.lot_id and f["digital_link"].endswith(f"/10/{fl.lot_id}") for f in fwd)

    # the same as a spreadsheet: a header, one row per record, the fields as in the JSON
    r = await client.get(f"{API}/products/{fl.product_ids[0]}/trace", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f"trace_product_{fl.product_ids[0]}.csv" in r.headers["content-disposition"]
    assert r.content.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: a spreadsheet reads the accents right
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3
    assert [row["direction"] for row in rows] == ["back", "forward", "forward"]
    assert rows[0]["sender_address"] == FARM["address"] and rows[2]["recipient_name"] == "Restaurant Le Relais Landais"
    assert rows[1]["quantity"] == "12" and rows[1]["dispatch_date"].endswith("Z") and rows[1]["missing"] == ""
    for row in rows:
        assert all(row[k] for k in REQUIRED), row


async def test_lot_trace_lists_every_product_dispatched(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool)
    ans = (await client.get(f"{API}/lots/{fl.lot_id}/trace")).json()
    assert ans["subject"]["kind"] == "lot" and len(ans["subject"]["products"]) == 3
    assert sorted((f["product_id"], f["quantity"]) for f in ans["one_step_forward"]) == sorted(
        [(fl.product_ids[0], 12), (fl.product_ids[1], 6), (fl.product_ids[0], 24)])
    assert ans["complete"] is True
    r = await client.get(f"{API}/lots/{fl.lot_id}/trace", params={"format": "csv"})
    assert len(list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))) == 4


async def test_what_is_missing_is_said(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    no_farm = await full_lot(db_pool, farm=False, farmer_id="G077")
    ans = (await client.get(f"{API}/lots/{no_farm.lot_id}/trace")).json()
    assert ans["complete"] is False and ans["subject"]["farm"]["registered"] is False
    assert ans["one_step_back"][0]["missing"] == ["sender_address"]
    feeding = await gavage_lot(db_pool, days=3, ready=False)
    ans = (await client.get(f"{API}/lots/{feeding}/trace")).json()
    assert "dispatch_date" in ans["one_step_back"][0]["missing"] and ans["one_step_forward"] == []


async def test_bad_requests(client: httpx.AsyncClient) -> None:
    r = await client.get(f"{API}/lots/LOT_20260105_0001/trace", params={"format": "xml"})
    assert r.status_code == 422 and "format" in r.text
    r = await client.get(f"{API}/lots/LOT_20260105_0001/trace")
    assert r.status_code == 404 and "LOT_20260105_0001" in r.text
    r = await client.get(f"{API}/products/424242/trace")
    assert r.status_code == 404 and "424242" in r.text
    assert (await client.get(f"{API}/products/-1/trace")).status_code == 422
