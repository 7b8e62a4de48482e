"""The lot certificate: rendered for an inspected lot, a one-page PDF whose text holds the lot id,
the grades and the ITM; HTML with the same content that Chromium prints on one A4 page."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from pypdf import PdfReader

from registry import dispatches, farms, feedback, lots
from registry.gs1 import make_gtin
from tests.traceability.conftest import ARTIFACTS, trace_app
from tests.traceability.helpers import PREFIX, RECIPIENT, SENDER, full_lot, gavage_lot, inspected_lot
from tests.web.conftest import chromium  # noqa: F401 -- the fixture (Debian's Chromium through Playwright)

API = "/api/traceability"


def pdf_text(data: bytes) -> tuple[int, str]:
    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(p.extract_text() or "" for p in reader.pages)


async def test_pdf_of_an_inspected_lot(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool)
    lot = await lots.get_lot(db_pool, fl.lot_id)
    r = await client.get(f"{API}/lots/{fl.lot_id}/certificate.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF-")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "certificate.pdf").write_bytes(r.content)
    pages, text = pdf_text(r.content)
    assert pages == 1
    flat = " ".join(text.split())
    assert fl.lot_id in flat
    for grade, n in lot["grade_distribution"].items():  # A+: 1, A: 3, B: 1, C: 1, REJECT: 1
        assert f"{grade}: {n}" in flat, (grade, flat)
    assert re.search(rf"ITM {lot['itm']:.2f} \(grade {re.escape(lot['itm_grade'])}\)", flat), flat
    assert "EARL Dupont" in flat and "Epicerie fine Lafitte" in flat and "Foie gras entier cru" in flat
    assert "conformant" in flat and "ESP32_TEST_LL_01" in flat


async def test_a_busy_lot_still_fits_one_page(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool, products=8)
    for i in range(14):
        await dispatches.create_dispatch(db_pool, lines=[(fl.product_ids[i % 8], 1 + i), (fl.product_ids[(i + 3) % 8], 2)],
                                         **SENDER, recipient_name=f"Client numero {i} avec un nom assez long SARL",
                                         recipient_address=f"{i} avenue de la Gare, 64100 Bayonne, France")
    r = await client.get(f"{API}/lots/{fl.lot_id}/certificate.pdf")
    pages, text = pdf_text(r.content)
    assert pages == 1 and fl.lot_id in text
    assert "more lines: see the one step forward CSV" in " ".join(text.split())


async def test_html_certificate(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    fl = await full_lot(db_pool)
    lot = await lots.get_lot(db_pool, fl.lot_id)
    await farms.upsert_farm(db_pool, "G042", name='<script>alert("x")</script> EARL', address="40500 Saint-Sever")
    r = await client.get(f"{API}/lots/{fl.lot_id}/certificate")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert fl.lot_id in html and f"{lot['itm']:.2f} (grade {lot['itm_grade']})" in html
    assert "A+: 1, A: 3, B: 1, C: 1, REJECT: 1" in html
    assert html.count("<svg") == 3  # gavage chart, grade chart, QR code
    assert f"https://id.gs1.org/01/{fl.gtins[0]}/10/{fl.lot_id}" in html  # the QR payload, printed under it
    assert "<script>alert" not in html and "&lt;script&gt;" in html  # a farm name is text, never markup
    assert f"{API}/lots/{fl.lot_id}/certificate.pdf" in html


async def test_only_inspected_lots_have_a_certificate(client: httpx.AsyncClient, db_pool: asyncpg.Pool) -> None:
    lot_id = await gavage_lot(db_pool, days=2, ready=False)
    for path in ("certificate", "certificate.pdf"):
        r = await client.get(f"{API}/lots/{lot_id}/{path}")
        assert r.status_code == 409 and "'gavage': a certificate needs a closed SQAL inspection" in r.json()["detail"]
        r = await client.get(f"{API}/lots/LOT_20260105_0009/{path}")
        assert r.status_code == 404 and "LOT_20260105_0009" in r.json()["detail"]
    # inspected but with no product nor dispatch yet: still one page, saying so
    bare = await inspected_lot(db_pool, farmer_id="G9")
    pages, text = pdf_text((await client.get(f"{API}/lots/{bare}/certificate.pdf")).content)
    assert pages == 1 and "Not dispatched yet." in text and "No product made from this lot" in " ".join(text.split())


@pytest.fixture
async def certificate_html(db_pool: asyncpg.Pool, tmp_path: Path) -> dict[str, Any]:
    fl = await full_lot(db_pool, products=8)
    for i in range(12):
        await dispatches.create_dispatch(db_pool, lines=[(fl.product_ids[i % 8], 6)], **SENDER, **RECIPIENT)
    await feedback.create_product(db_pool, fl.lot_id, make_gtin(PREFIX, 8))  # idempotent: still 8
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=trace_app(db_pool, tmp_path)),
                                 base_url="http://sqal.test") as c:
        html = (await c.get(f"{API}/lots/{fl.lot_id}/certificate")).text
    return {"lot_id": fl.lot_id, "html": html}


def test_chromium_prints_the_html_on_one_a4_page(certificate_html: dict[str, Any], chromium: Any) -> None:  # noqa: F811
    page = chromium.new_page(viewport={"width": 1000, "height": 1300})
    try:
        page.set_content(certificate_html["html"], wait_until="load")
        assert certificate_html["lot_id"] in page.inner_text("h1")
        page.screenshot(path=str(ARTIFACTS / "certificate_html.png"), full_page=True)
        pdf = page.pdf(format="A4", print_background=True, prefer_css_page_size=True)
    finally:
        page.close()
    pages, text = pdf_text(pdf)
    (ARTIFACTS / "certificate_html_print.pdf").write_bytes(pdf)
    assert pages == 1, f"the printed HTML takes {pages} pages"
    flat = " ".join(text.split())
    assert certificate_html["lot_id"] in flat and "REJECT" in flat and "ITM" in flat
    assert "Print" not in flat  # the on-screen links are not printed
