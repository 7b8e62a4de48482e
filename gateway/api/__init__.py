"""HTTP API routers, one module per area (gateway/app.py includes them); response models in the
models_*.py modules next to them.

`WRITE_DEPENDENCIES` is attached to every state-changing route (and may be attached to a control
WebSocket): `require_token` checks the API bearer token (gateway.auth) and declares it in the OpenAPI
schema. gateway.auth.AuthMiddleware enforces the same policy in front of every route, so a route
that forgot it is still protected; tests/security/test_auth_routes.py fails on such a route.
"""

from __future__ import annotations

from fastapi import Depends, HTTPException, WebSocketException
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from gateway.auth import ApiAuth, AuthError


class _BearerToken(HTTPBearer):
    """HTTPBearer's OpenAPI declaration, with our check (constant time, WebSockets too)."""

    async def __call__(self, conn: HTTPConnection) -> None:  # type: ignore[override]
        auth: ApiAuth | None = getattr(conn.app.state, "api_auth", None)
        if auth is None or not auth.enabled:
            return
        try:
            auth.check(conn.scope)
        except AuthError as exc:
            if conn.scope["type"] == "websocket":
                raise WebSocketException(code=1008, reason=str(exc)[:120]) from None
            raise HTTPException(401, str(exc), headers={"WWW-Authenticate": exc.www_authenticate}) from None


_bearer = _BearerToken(scheme_name="api_token", auto_error=False,
                       description="The API token: SQAL_API_TOKEN, or <data dir>/api-token (docs/security.md)")


async def require_token(_: None = Depends(_bearer)) -> None:
    """State-changing routes depend on this: 401 unless the request carries the API token."""


WRITE_DEPENDENCIES = [Depends(require_token)]

