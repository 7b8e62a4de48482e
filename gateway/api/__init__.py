"""HTTP API routers. Each area adds its router to `api_routers()`.

`WRITE_DEPENDENCIES` is attached to every state-changing route: bearer-token auth goes into
`require_token` later, in this one place.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends


async def require_token() -> None:
    """Placeholder: state-changing routes depend on this; auth is not implemented yet."""


WRITE_DEPENDENCIES = [Depends(require_token)]


def api_routers() -> list[APIRouter]:
    from gateway.api.lots import router as lots_router

    return [lots_router]
