"""gateway.web_routes: the page is served at /ui/ (with / redirecting there), modules revalidated on
each load, and every ES module the page imports exists (no build step to catch a typo)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from gateway.web_routes import WEB_DIR, include_web


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    include_web(app)
    include_web(app)  # idempotent
    assert sum(1 for r in app.routes if getattr(r, "name", None) == "web-ui") == 1
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as c:
        yield c


async def test_root_and_bare_mount_redirect_to_the_page(client: httpx.AsyncClient) -> None:
    for path in ("/", "/ui"):
        r = await client.get(path)
        assert r.status_code == 307 and r.headers["location"] == "/ui/", (path, r.headers)


async def test_page_and_modules_are_served_without_stale_caching(client: httpx.AsyncClient) -> None:
    r = await client.get("/ui/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert '<script type="module" src="main.js">' in r.text
    js = await client.get("/ui/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert js.headers["cache-control"] == "no-cache" and js.headers.get("etag")
    assert (await client.get("/ui/app.css")).status_code == 200
    assert (await client.get("/ui/nope.js")).status_code == 404


def test_every_imported_module_exists() -> None:
    files = {p.name for p in WEB_DIR.glob("*.js")}
    assert "main.js" in files
    for js in WEB_DIR.glob("*.js"):
        for target in re.findall(r"""from\s+['"]\./([\w.-]+)['"]""", js.read_text()):
            assert target in files, f"{js.name} imports ./{target}, which does not exist"
    html = (WEB_DIR / "index.html").read_text()
    for ref in re.findall(r'(?:src|href)="([\w.-]+\.(?:js|css))"', html):
        assert (WEB_DIR / ref).is_file(), ref
