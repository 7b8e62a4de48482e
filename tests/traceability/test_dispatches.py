"""Dispatch and farm records (registry/dispatches.py, registry/farms.py) and their API: what is
recorded, what is refused (with a message naming it), retries, append-only records, queries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from registry import dispatches, farms, lots, timeline
from registry.errors import IllegalTransition, InvalidInput, ProductNotFound
from tests.traceability.helpers import RECIPIENT, SENDER, full_lot

API = "/api/traceability"


async def test_a_dispatch_is_recorded_with_its_lines_and_lot_events(db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool, products=2)
    d = await dispatches.get_dispatch(db_pool, fl.dispatch_ids[0])
    assert d is not None
    assert d["reference"] == f"DSP-{datetime.now(UTC):%Y%m%d}-{d['id']:06d}"
    assert [(x["product_id"], x["quantity"], x["lot_id"]) for x in d["lines"]] == [
        (fl.product_ids[0], 12, fl.lot_id), (fl.product_ids[1], 6, fl.lot_id)]
    assert d["sender_name"] == SENDER["sender_name"] and d["recipient_address"] == RECIPIENT["recipient_address"]
    tl = await timeline.timeline(db_pool, fl.lot_id, limit=1000)
    ev = [e for e in tl["events"] if e["type"] == "dispatched"]
    assert len(ev) == 2 and ev[0]["stage"] == "consumer"
    assert ev[0]["data"]["reference"] == d["reference"] and "18 units to Epicerie fine Lafitte" in ev[0]["description"]


async def test_a_retried_reference_is_a_no_op_and_a_reused_one_is_refused(db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool, products=2)
    when = datetime.now(UTC)
    args: dict[str, Any] = dict(lines=[(fl.product_ids[0], 5)], dispatched_at=when, reference="BL-2026-0042",
                                **SENDER, **RECIPIENT)
    first = await dispatches.create_dispatch(db_pool, **args)
    events = await db_pool.fetchval("SELECT count(*) FROM lot_events WHERE lot_id = $1", fl.lot_id)
    again = await dispatches.create_dispatch(db_pool, **args)
    assert first["new"] and not again["new"] and again["id"] == first["id"]
    assert await db_pool.fetchval("SELECT count(*) FROM lot_events WHERE lot_id = $1", fl.lot_id) == events
    with pytest.raises(InvalidInput, match="BL-2026-0042 already records another consignment"):
        await dispatches.create_dispatch(db_pool, **{**args, "lines": [(fl.product_ids[0], 6)]})


async def test_refusals_name_what_was_wrong(db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool, products=2)
    p = fl.product_ids[0]
    ok: dict[str, Any] = dict(**SENDER, **RECIPIENT)
    with pytest.raises(ProductNotFound, match="product 999999 not found"):
        await dispatches.create_dispatch(db_pool, lines=[(999999, 1)], **ok)
    with pytest.raises(InvalidInput, match="appears twice"):
        await dispatches.create_dispatch(db_pool, lines=[(p, 1), (p, 2)], **ok)
    with pytest.raises(InvalidInput, match="quantity must be between 1 and"):
        await dispatches.create_dispatch(db_pool, lines=[(p, 0)], **ok)
    with pytest.raises(InvalidInput, match="1 to 100 lines"):
        await dispatches.create_dispatch(db_pool, lines=[], **ok)
    with pytest.raises(InvalidInput, match="in the future"):
        await dispatches.create_dispatch(db_pool, lines=[(p, 1)], dispatched_at=datetime.now(UTC) + timedelta(days=1),
                                         **ok)
    with pytest.raises(InvalidInput, match="before product"):
        await dispatches.create_dispatch(db_pool, lines=[(p, 1)], dispatched_at=datetime.now(UTC) - timedelta(days=9),
                                         **ok)
    with pytest.raises(InvalidInput, match="recipient_gln must be 13 digits with a valid GS1 check digit"):
        await dispatches.create_dispatch(db_pool, lines=[(p, 1)], **{**ok, "recipient_gln": "3760000000018"})
    with pytest.raises(InvalidInput, match="recipient_name must be 1 to 200"):
        await dispatches.create_dispatch(db_pool, lines=[(p, 1)], **{**ok, "recipient_name": "  "})
    await lots.close(db_pool, fl.lot_id, "withdrawn")
    with pytest.raises(IllegalTransition, match=f"lot {fl.lot_id} is 'closed': cannot dispatch product {p}"):
        await dispatches.create_dispatch(db_pool, lines=[(p, 1)], **ok)
    assert len((await dispatches.list_dispatches(db_pool, lot_id=fl.lot_id))[1]) == 2  # nothing added


async def test_records_are_append_only(db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool, products=2)
    for sql in ("UPDATE dispatches SET recipient_name = 'x'", "DELETE FROM dispatch_lines",
                "DELETE FROM dispatches", "TRUNCATE dispatch_lines CASCADE"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db_pool.execute(sql)
    assert (await dispatches.get_dispatch(db_pool, fl.dispatch_ids[0])) is not None


async def test_list_filters_and_pages(db_pool: asyncpg.Pool) -> None:
    a = await full_lot(db_pool, products=2)
    b = await full_lot(db_pool, products=2, farmer_id="G043")
    total, rows = await dispatches.list_dispatches(db_pool)
    assert total == 4 and [r["id"] for r in rows] == sorted(a.dispatch_ids + b.dispatch_ids)
    total, rows = await dispatches.list_dispatches(db_pool, lot_id=b.lot_id)
    assert total == 2 and {r["id"] for r in rows} == set(b.dispatch_ids)
    total, rows = await dispatches.list_dispatches(db_pool, product_id=a.product_ids[1])
    assert total == 1 and rows[0]["id"] == a.dispatch_ids[0] and len(rows[0]["lines"]) == 2
    total, rows = await dispatches.list_dispatches(db_pool, limit=1, offset=3)
    assert total == 4 and len(rows) == 1
    assert (await dispatches.list_dispatches(db_pool, until=datetime.now(UTC) - timedelta(hours=1)))[0] == 0


async def test_farms(db_pool: asyncpg.Pool) -> None:
    f = await farms.upsert_farm(db_pool, "G042", name=" EARL Dupont ", address="40500 Saint-Sever", gln="3760000000024")
    assert f["name"] == "EARL Dupont" and f["gln"] == "3760000000024"
    f = await farms.upsert_farm(db_pool, "G042", name="EARL Dupont", address="Bordenave, 40500 Saint-Sever")
    again = await farms.get_farm(db_pool, "G042")
    assert f["gln"] is None and again is not None and again["address"].startswith("Bordenave")
    assert await farms.get_farm(db_pool, "G999") is None
    with pytest.raises(InvalidInput, match="gln must be 13 digits"):
        await farms.upsert_farm(db_pool, "G1", name="x", address="y", gln="123")


async def test_dispatch_api(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool, products=2)
    body: dict[str, Any] = {"recipient_name": "Cave Saint-Pierre", "recipient_address": "1 quai Richelieu, 33000 Bordeaux",
                            "lines": [{"product_id": fl.product_ids[1], "quantity": 10}], "reference": "BL-7"}
    r = await client.post(f"{API}/dispatches", json=body)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["new"] and d["sender_name"] == "SQAL Foie Gras" and "Mont-de-Marsan" in d["sender_address"]
    assert d["lines"] == [{"product_id": fl.product_ids[1], "lot_id": fl.lot_id, "gtin": fl.gtins[1], "quantity": 10}]
    r = await client.post(f"{API}/dispatches", json=body)
    assert r.status_code == 200 and r.json()["new"] is False and r.json()["id"] == d["id"]
    r = await client.post(f"{API}/dispatches", json={**body, "recipient_name": "Another"})
    assert r.status_code == 422 and "BL-7 already records another consignment" in r.text
    assert (await client.get(f"{API}/dispatches/{d['id']}")).json()["reference"] == "BL-7"
    page = (await client.get(f"{API}/dispatches", params={"lot_id": fl.lot_id, "limit": 2})).json()
    assert page["total"] == 3 and len(page["dispatches"]) == 2

    bad = [({**body, "lines": []}, "lines"), ({**body, "lines": [{"product_id": 1, "quantity": 0}]}, "quantity"),
           ({**body, "recipient_gln": "12"}, "recipient_gln"), ({**body, "colour": "red"}, "colour"),
           ({**body, "dispatched_at": "2026-01-05T10:00:00"}, "dispatched_at"),
           ({**body, "reference": "has space"}, "reference"), ({**body, "recipient_address": ""}, "recipient_address"),
           ({**body, "recipient_name": "a\u0000b"}, "recipient_name"), ({**body, "sender_address": "\ud800"}, "sender_address"),
           ({**body, "lines": [{"product_id": 1, "quantity": True}]}, "quantity"),
           ({**body, "lines": [{"product_id": "1", "quantity": 2}]}, "product_id")]
    for payload, field in bad:  # as a client sends it: lone surrogates escaped in the JSON text
        r = await client.post(f"{API}/dispatches", content=json.dumps(payload),
                              headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and field in r.text, (field, r.status_code, r.text)
    r = await client.post(f"{API}/dispatches", json={**body, "reference": None, "lines": [{"product_id": 999999,
                                                                                          "quantity": 1}]})
    assert r.status_code == 404 and "product 999999" in r.json()["detail"]
    for path in (f"{API}/dispatches/0", f"{API}/dispatches/{2**63}", f"{API}/dispatches?lot_id=nope",
                 f"{API}/dispatches?since=yesterday", f"{API}/dispatches?limit=0",
                 f"{API}/dispatches?since=0001-01-01T00:00:00%2B14:00"):
        assert (await client.get(path)).status_code == 422, path
    r = await client.get(f"{API}/dispatches/424242")
    assert r.status_code == 404 and "dispatch 424242 not found" in r.json()["detail"]


async def test_farm_api(client: httpx.AsyncClient) -> None:
    r = await client.put(f"{API}/farms/G042", json={"name": "EARL Dupont", "address": "40500 Saint-Sever"})
    assert r.status_code == 200 and r.json()["farmer_id"] == "G042"
    assert (await client.get(f"{API}/farms/G042")).json()["name"] == "EARL Dupont"
    assert [f["farmer_id"] for f in (await client.get(f"{API}/farms")).json()] == ["G042"]
    r = await client.get(f"{API}/farms/G404")
    assert r.status_code == 404 and "G404" in r.json()["detail"]
    r = await client.put(f"{API}/farms/G042", json={"name": "EARL Dupont", "address": "x", "gln": "3760000000018"})
    assert r.status_code == 422 and "check digit" in r.text
    for bad_id in ("G%00", "G%0A1"):  # control characters never reach the database
        assert (await client.get(f"{API}/farms/{bad_id}")).status_code == 422
    r = await client.put(f"{API}/farms/G042", json={"name": "", "address": "x"})
    assert r.status_code == 422 and "name" in r.text
