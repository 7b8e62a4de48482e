"""The browser control panel (docs/web.md): static files of gateway/web/ under /ui/, and `/` -> /ui/.

No build step: the page is plain ES modules, served as they are in the tree. The page itself holds
no secret; it asks the user for the API token and keeps it in the browser's localStorage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

WEB_DIR = Path(__file__).with_name("web")
MOUNT_PATH = "/ui"
MOUNT_NAME = "web-ui"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(MOUNT_PATH + "/", status_code=307)


@router.get(MOUNT_PATH)
async def ui_no_slash() -> RedirectResponse:
    return RedirectResponse(MOUNT_PATH + "/", status_code=307)


class _NoCacheStaticFiles(StaticFiles):
    """ES modules are small and change with the gateway: ask browsers to revalidate (ETag) each time,
    so an upgraded gateway never runs with a stale mix of old and new modules."""

    async def get_response(self, path: str, scope: Any) -> Any:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


def include_web(app: Any) -> None:
    """Mount the page on `app` (idempotent: a second call does nothing)."""
    if any(getattr(r, "name", None) == MOUNT_NAME for r in app.routes):
        return
    app.include_router(router)
    app.mount(MOUNT_PATH, _NoCacheStaticFiles(directory=WEB_DIR, html=True), name=MOUNT_NAME)
