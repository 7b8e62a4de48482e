"""The gateway's FastAPI application: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway import __version__
from gateway.api.control_common import TAGS_METADATA as CONTROL_PANEL_TAGS
from gateway.api.models_status import Health
from gateway.auth import install as install_security
from gateway.config import Settings, get_settings
from gateway.db import open_database
from gateway.dispatch import start_dispatcher, stop_dispatcher
from gateway.ingest.service import IngestService, IngestSettings
from gateway.ingest.service import install as install_ingest
from gateway.maintenance import Maintenance, RetentionPolicy
from gateway.supervisor.app import start_supervisor
from registry.errors import (
    AssignmentConflict,
    IllegalTransition,
    InvalidInput,
    LotNotFound,
    ProductNotFound,
    RegistryError,
)

# Registry refusals -> HTTP status; the registry's message is the detail, unchanged.
_STATUS: list[tuple[type[RegistryError], int]] = [
    (LotNotFound, 404), (ProductNotFound, 404), (IllegalTransition, 409), (AssignmentConflict, 409),
    (InvalidInput, 422), (RegistryError, 400),
]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = await open_database(settings)
        app.state.db = db
        app.state.pool = db.pool
        ingest = None
        maintenance = None
        if settings.retention_enabled:  # partitions made ahead (before the ingest starts), retention applied
            maintenance = Maintenance(db.pool, RetentionPolicy.from_settings(settings))
            await maintenance.start()
        app.state.maintenance = maintenance
        supervisor = await start_supervisor(app, settings)  # control panel: simulators as child processes
        try:
            if settings.ingest_enabled:  # ingest: message engine (embedded unless SQAL_NATS_URL), source, pipeline
                ingest = IngestService(db.pool, IngestSettings.from_settings(settings))
                app.state.ingest = ingest
                await ingest.start()
                app.state.security_metrics.register_into(ingest.metrics.registry)  # on /metrics too
                if maintenance is not None:
                    maintenance.metrics.register_into(ingest.metrics.registry)
                await start_dispatcher(app, db.pool, ingest.client_url, settings)
                from gateway.ota.service import OtaService  # over-the-air updates (docs/ota.md)

                app.state.ota = OtaService(db.pool, ingest.client_url, settings)
                await app.state.ota.start()
            yield
        finally:
            try:
                for task in app.state.tasks:  # the embedding code's (the demo's): before the simulators
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                await supervisor.close()  # children first: devices say `offline` while the engine is up
                ota = getattr(app.state, "ota", None)
                if ota is not None:
                    await ota.close()
                await stop_dispatcher(app)
                if ingest is not None:
                    await ingest.stop()
                if maintenance is not None:
                    await maintenance.stop()
            finally:
                await db.close()

    app = FastAPI(
        title="SQAL gateway",
        version=__version__,
        summary="Traceability of foie gras lots: gavage -> SQAL line inspection -> consumer feedback.",
        lifespan=lifespan,
        openapi_tags=[
            {"name": "lots", "description": "The lot registry: lifecycle, gavage, inspection, timeline, stats."},
            {"name": "health", "description": "Liveness and database reachability."},
            *CONTROL_PANEL_TAGS,
        ],
    )
    app.state.settings = settings
    tasks: set[asyncio.Task[None]] = set()
    app.state.tasks = tasks  # started by the embedding code (sqal demo): stopped first

    async def registry_error(request: Request, exc: Exception) -> JSONResponse:
        status = next(code for cls, code in _STATUS if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc)}, status_code=status)

    app.add_exception_handler(RegistryError, registry_error)

    @app.get("/health", tags=["health"], response_model=Health, summary="Gateway and database health",
             responses={503: {"model": Health, "description": "The database does not answer"}})
    async def health(request: Request) -> JSONResponse:
        try:
            await request.app.state.pool.fetchval("SELECT 1")
        except Exception as exc:  # noqa: BLE001 -- report, do not crash: a health probe must always answer
            return JSONResponse({"status": "degraded", "database": f"error: {exc}"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "version": __version__})

    from gateway.api.consumer import router as consumer_router
    from gateway.api.gavage_ws import router as gavage_router
    from gateway.api.lots import router as lots_router
    from gateway.api.ota import router as ota_router
    from gateway.dispatch import router as dispatch_router
    from gateway.traceability.api import router as traceability_router

    for router in (lots_router, gavage_router, consumer_router, dispatch_router, traceability_router, ota_router):
        app.include_router(router)
    from gateway.api.control_panel import routers as control_panel_routers

    for router in control_panel_routers():
        app.include_router(router)
    install_ingest(app)
    from gateway.web_routes import include_web

    include_web(app)  # browser control panel at /ui/ (docs/web.md)
    install_security(app, settings)  # API token gate + body size limit (gateway/auth.py)
    return app
