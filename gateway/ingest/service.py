"""IngestService: the message engine (embedded nats-server when no SQAL_NATS_URL), the pipeline, the
JetStream source, the realtime hub; `install(app)` adds the WebSocket, devices and /metrics routes.

Start order: engine -> pipeline -> source. Stop order is the reverse: the source stops fetching,
the pipeline commits and answers what it holds (the acks go out), then the connection closes. The
embedded engine is stopped with the gateway (cleanly); a gateway that dies leaves it running, and
the next start adopts it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse
from sqalfw.urls import hide_password as redact

from gateway.auth import mqtt_auth_enabled
from gateway.credentials import credentials_dir
from gateway.ingest.metrics import IngestMetrics
from gateway.ingest.nats_source import NatsConfig, NatsSource
from gateway.ingest.pipeline import Pipeline, PipelineConfig, default_workers
from gateway.ingest.prepare import ClockPolicy
from gateway.ingest.realtime import RealtimeHub
from gateway.nats.embedded import EmbeddedNats
from gateway.nats.streams import StreamLimits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    nats_url: str | None = None  # comma-separated servers of an external engine; None: the embedded one
    mqtt_url: str | None = None  # the external engine's MQTT listener (the boards' broker URL)
    data_dir: Path = Path(".")
    mqtt_embedded_port: int = 1883  # 0 = any free port; a busy port falls back to a free one (logged)
    mqtt_embedded_host: str = "127.0.0.1"
    nats_embedded_port: int = 0
    mqtt_credentials_dir: Path | None = None  # device authentication on (gateway.auth)
    limits: StreamLimits = field(default_factory=StreamLimits)
    batch_max: int = 500
    flush_ms: int = 50
    queue_max: int = 5000
    clock_future_s: float = 60.0
    workers: int | None = None  # grading processes; None: pipeline.default_workers(); 0: a thread
    nats_ca_file: str | None = None
    nats_cert_file: str | None = None
    nats_key_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> IngestSettings:
        return cls(
            nats_url=settings.nats_url or None,
            mqtt_url=settings.mqtt_url or None,
            data_dir=Path(settings.data_dir),
            mqtt_embedded_port=settings.mqtt_embedded_port,
            mqtt_embedded_host=settings.mqtt_embedded_host,
            nats_embedded_port=settings.nats_embedded_port,
            mqtt_credentials_dir=credentials_dir(settings) if mqtt_auth_enabled(settings) else None,
            limits=StreamLimits(replicas=settings.nats_replicas, samples_max_bytes=settings.nats_samples_max_bytes),
            batch_max=settings.ingest_batch_max,
            flush_ms=settings.ingest_flush_ms,
            queue_max=settings.ingest_queue_max,
            clock_future_s=settings.ingest_clock_future_s,
            workers=settings.ingest_workers,
            nats_ca_file=str(settings.nats_ca_file) if settings.nats_ca_file else None,
            nats_cert_file=str(settings.nats_cert_file) if settings.nats_cert_file else None,
            nats_key_file=str(settings.nats_key_file) if settings.nats_key_file else None,
        )


class IngestService:
    def __init__(self, pool: asyncpg.Pool, settings: IngestSettings = IngestSettings()) -> None:
        self.settings = settings
        self.metrics = IngestMetrics()
        cfg = PipelineConfig(batch_max=settings.batch_max, flush_s=settings.flush_ms / 1000,
                             clock=ClockPolicy(future_s=settings.clock_future_s),
                             workers=default_workers() if settings.workers is None else settings.workers)
        self.pipeline = Pipeline(pool, self.metrics, cfg)
        self.hub = RealtimeHub(self.metrics)
        self.pipeline.add_listener(self.hub.on_batch)
        self.engine: EmbeddedNats | None = None
        self.source: NatsSource | None = None
        self.broker_url: str | None = settings.mqtt_url  # where the boards connect (MQTT), no credentials
        self.nats_servers: list[str] = [u.strip() for u in (settings.nats_url or "").split(",") if u.strip()]

    async def start(self) -> None:
        s = self.settings
        user = password = None
        if not self.nats_servers:
            # device authentication: the engine sends MQTT logins to the auth callout, a child beside it
            callout = None if s.mqtt_credentials_dir is None else {"credentials_dir": str(s.mqtt_credentials_dir)}
            self.engine = EmbeddedNats(s.data_dir, mqtt_host=s.mqtt_embedded_host, mqtt_port=s.mqtt_embedded_port,
                                       nats_port=s.nats_embedded_port, auth_callout=callout)
            await self.engine.start()
            self.nats_servers = [self.engine.url]
            self.broker_url = self.engine.mqtt_url
            user, password = self.engine.gateway_credentials()
        await self.pipeline.start()
        self.source = NatsSource(NatsConfig(self.nats_servers, user=user, password=password, ca_file=s.nats_ca_file,
                                            cert_file=s.nats_cert_file, key_file=s.nats_key_file, limits=s.limits,
                                            capacity=s.queue_max, fetch_batch=s.batch_max), self.pipeline)
        await self.source.start()
        # What the process holds once started (the app, its modules, the pools) is there for good:
        # moved out of the collector's sight, a full collection no longer walks it. In a probe at
        # 3,000 readings/s a full collection stopped the event loop for 92-108 ms, once per 10,000
        # readings, and that one pause made the p99 latency; after the freeze it took 1 ms.
        gc.collect()
        gc.freeze()

    @property
    def client_url(self) -> str | None:
        """The MQTT URL for the gateway's own clients (the dispatcher's commands): with the gateway's
        credentials on the embedded engine. Never log it; `broker_url` is the shown one."""
        if self.engine is None or self.broker_url is None:
            return self.broker_url
        user, password = self.engine.gateway_credentials()
        scheme, rest = self.broker_url.split("://", 1)
        return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"

    async def stop(self) -> None:
        try:
            if self.source is not None:
                await self.source.stop_fetching()
            await self.pipeline.stop()
            if self.source is not None:
                await self.source.close()
        finally:
            if self.engine is not None:
                await self.engine.stop()

    def status(self) -> dict[str, Any]:
        src = self.source
        return {"broker_url": redact(self.broker_url) if self.broker_url else None,  # a read-only route: no password
                "engine": "embedded" if self.engine is not None else "external",
                "nats_servers": [redact(u) for u in self.nats_servers],
                "connected": bool(src and src.connected.is_set()), "subscribed": bool(src and src.subscribed.is_set()),
                "last_error": src.last_error if src else None,
                "in_hand": src.in_flight if src else 0, "redelivered": src.redelivered if src else 0,
                "queue_depth": self.pipeline.depth, "committed_batches": self.pipeline.committed_batches,
                "realtime_subscribers": self.hub.subscribers}


def install(app: FastAPI) -> None:
    """Routes of the ingest; the service itself is expected on app.state.ingest (set by the lifespan)."""
    from gateway.api.devices import router as devices_router
    from gateway.api.models_status import IngestStatus
    from gateway.ingest.realtime import router as realtime_router
    from gateway.ingest.ws_source import router as ws_router

    app.include_router(ws_router)
    app.include_router(realtime_router)
    app.include_router(devices_router)

    @app.get("/metrics", tags=["ingest"], summary="Prometheus metrics of the ingest",
             response_class=PlainTextResponse, responses={503: {"description": "the ingest is disabled"}})
    async def metrics(request: Request) -> Response:
        return Response(running(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/ingest/status", tags=["ingest"], response_model=IngestStatus,
             summary="Broker connection, queue depth, batches", responses={503: {"description": "the ingest is disabled"}})
    async def ingest_status(request: Request) -> dict[str, Any]:
        return running(request).status()


def running(request: Request) -> IngestService:
    """The app's ingest, or a 503 saying it is off (SQAL_INGEST_ENABLED=false: no such service)."""
    svc: IngestService | None = getattr(request.app.state, "ingest", None)
    if svc is None:
        raise HTTPException(503, "the ingest is disabled on this gateway (SQAL_INGEST_ENABLED=false)")
    return svc
