"""The web panel's lot page links an inspected lot to its certificate (Debian's Chromium through
Playwright, against the page and the API served by uvicorn in this test): the links are there,
they open the HTML certificate and the PDF, and a lot not yet inspected has none."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import async_playwright, expect

from gateway.api.lots import router as lots_router
from gateway.web_routes import include_web
from tests.fixtures.gateway import serve
from tests.traceability.conftest import ARTIFACTS, trace_app
from tests.traceability.helpers import full_lot, gavage_lot
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS


async def test_lot_page_links_to_the_certificate(db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium, or set SQAL_TEST_CHROMIUM",
                    pytrace=False)
    fl = await full_lot(db_pool)
    feeding = await gavage_lot(db_pool, days=2, ready=False, farmer_id="G9")
    app = trace_app(db_pool, tmp_path)
    app.include_router(lots_router)
    include_web(app)
    async with serve(app) as url, async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await page.goto(f"{url}/ui/#/lots/{fl.lot_id}")
            links = page.locator("#lot-title a.cert-link")
            await expect(links).to_have_count(2, timeout=15000)
            hrefs = [await links.nth(i).get_attribute("href") for i in range(2)]
            assert hrefs == [f"/api/traceability/lots/{fl.lot_id}/certificate",
                             f"/api/traceability/lots/{fl.lot_id}/certificate.pdf"]
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "lot_page_certificate_link.png"))
            async with page.context.expect_page() as opened:
                await links.nth(0).click()
            cert = await opened.value
            await cert.wait_for_load_state()
            await expect(cert.locator("h1")).to_contain_text(fl.lot_id)
            r = await page.request.get(f"{url}{hrefs[1]}")
            assert r.status == 200 and r.headers["content-type"] == "application/pdf"

            await page.goto(f"{url}/ui/#/lots/{feeding}")
            await expect(page.locator("#lot-title")).to_contain_text(feeding, timeout=15000)
            await expect(page.locator("#lot-title .state, #lot-title span").first).to_be_visible()
            await expect(page.locator("#lot-title a.cert-link")).to_have_count(0)
        finally:
            await browser.close()
