"""IngestService: the embedded broker (when no SQAL_MQTT_URL), the pipeline, the MQTT source, the
realtime hub; `install(app)` adds the WebSocket, devices and /metrics routes.

Start order: broker -> pipeline -> MQTT source. Stop order is the reverse, so everything handed to
the pipeline is committed and acknowledged before the connection closes.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from gateway.auth import credentials_dir, mqtt_auth_enabled
from gateway.broker import EmbeddedBroker
from gateway.ingest.metrics import IngestMetrics
from gateway.ingest.mqtt_source import MqttConfig, MqttSource, redact, tls_files
from gateway.ingest.pipeline import Pipeline, PipelineConfig, default_workers
from gateway.ingest.prepare import ClockPolicy
from gateway.ingest.realtime import RealtimeHub

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    mqtt_url: str | None = None  # None: run the embedded broker
    mqtt_client_id: str = "sqal-gateway"
    mqtt_shared_group: str | None = None
    mqtt_embedded_port: int = 1883  # 0 = any free port; a busy port falls back to a free one (logged)
    mqtt_embedded_host: str = "127.0.0.1"
    mqtt_credentials_dir: Path | None = None  # embedded broker: device auth + ACL on (gateway.auth)
    batch_max: int = 500
    flush_ms: int = 50
    queue_max: int = 5000
    clock_future_s: float = 60.0
    workers: int | None = None  # grading processes; None: pipeline.default_workers(); 0: a thread
    mqtt_ca_file: str | None = None  # mqtts://: CA bundle, client certificate and key (mqtt_source.tls_context)
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> "IngestSettings":
        d = cls()
        return cls(
            mqtt_url=getattr(settings, "mqtt_url", None) or None,
            mqtt_client_id=getattr(settings, "mqtt_client_id", d.mqtt_client_id),
            mqtt_shared_group=getattr(settings, "mqtt_shared_group", None) or None,
            mqtt_embedded_port=getattr(settings, "mqtt_embedded_port", d.mqtt_embedded_port),
            mqtt_embedded_host=getattr(settings, "mqtt_embedded_host", d.mqtt_embedded_host),
            mqtt_credentials_dir=credentials_dir(settings) if mqtt_auth_enabled(settings) else None,
            batch_max=getattr(settings, "ingest_batch_max", d.batch_max),
            flush_ms=getattr(settings, "ingest_flush_ms", d.flush_ms),
            queue_max=getattr(settings, "ingest_queue_max", d.queue_max),
            clock_future_s=getattr(settings, "ingest_clock_future_s", d.clock_future_s),
            workers=getattr(settings, "ingest_workers", d.workers),
            **{f"mqtt_{k}": v for k, v in tls_files(settings).items()},
        )


class IngestService:
    def __init__(self, pool: asyncpg.Pool, settings: IngestSettings = IngestSettings()) -> None:
        self.settings = settings
        self.metrics = IngestMetrics()
        cfg = PipelineConfig(batch_max=settings.batch_max, flush_s=settings.flush_ms / 1000,
                             mqtt_capacity=settings.queue_max, clock=ClockPolicy(future_s=settings.clock_future_s),
                             workers=default_workers() if settings.workers is None else settings.workers)
        self.pipeline = Pipeline(pool, self.metrics, cfg)
        self.hub = RealtimeHub(self.metrics)
        self.pipeline.add_listener(self.hub.on_batch)
        self.broker: EmbeddedBroker | None = None
        self.mqtt: MqttSource | None = None
        self.broker_url: str | None = settings.mqtt_url

    async def start(self, wait_subscribed_s: float = 5.0) -> None:
        s = self.settings
        if s.mqtt_url is None:
            self.broker = await self._start_embedded(s.mqtt_embedded_port)
            self.broker_url = self.broker.url
        await self.pipeline.start()
        assert self.broker_url is not None
        creds = self.broker.gateway_credentials if self.broker else None
        self.mqtt = MqttSource(MqttConfig(self.broker_url, client_id=s.mqtt_client_id,
                                          shared_group=s.mqtt_shared_group,
                                          username=creds[0] if creds else None,
                                          password=creds[1] if creds else None,
                                          ca_file=s.mqtt_ca_file, cert_file=s.mqtt_cert_file,
                                          key_file=s.mqtt_key_file), self.pipeline)
        await self.mqtt.start(wait_s=wait_subscribed_s)
        # What the process holds once started (the app, its modules, the pools) is there for good:
        # moved out of the collector's sight, a full collection no longer walks it. In a probe at
        # 3,000 readings/s a full collection stopped the event loop for 92-108 ms, once per 10,000
        # readings, and that one pause made the p99 latency; after the freeze it took 1 ms.
        gc.collect()
        gc.freeze()

    @property
    def client_url(self) -> str | None:
        """The broker URL for the gateway's own in-process clients (the dispatcher): with the gateway's
        credentials when the embedded broker authenticates. Never log it; `broker_url` is the shown one."""
        creds = self.broker.gateway_credentials if self.broker else None
        if creds is None or self.broker_url is None:
            return self.broker_url
        scheme, rest = self.broker_url.split("://", 1)
        return f"{scheme}://{quote(creds[0], safe='')}:{quote(creds[1], safe='')}@{rest}"

    async def _start_embedded(self, port: int) -> EmbeddedBroker:
        s = self.settings
        broker = EmbeddedBroker(port, s.mqtt_embedded_host, credentials_dir=s.mqtt_credentials_dir)
        try:
            await broker.start()
        except OSError as exc:
            if port == 0:
                raise
            log.warning("embedded MQTT broker: port %d unavailable (%s); using a free port instead", port, exc)
            await broker.stop()
            broker = EmbeddedBroker(0, s.mqtt_embedded_host, credentials_dir=s.mqtt_credentials_dir)
            await broker.start()
        return broker

    async def stop(self) -> None:
        try:
            if self.mqtt is not None:
                await self.mqtt.stop()
            await self.pipeline.stop()
        finally:
            if self.broker is not None:
                await self.broker.stop()

    def status(self) -> dict[str, Any]:
        m = self.mqtt
        return {"broker_url": redact(self.broker_url) if self.broker_url else None,  # a read-only route: no password
                "embedded_broker": self.broker is not None,
                "mqtt_connected": bool(m and m.connected.is_set()), "mqtt_subscribed": bool(m and m.subscribed.is_set()),
                "mqtt_last_error": m.last_error if m else None,
                "shared_group": self.settings.mqtt_shared_group, "client_id": self.settings.mqtt_client_id,
                "queue_depth": self.pipeline.depth, "committed_batches": self.pipeline.committed_batches,
                "realtime_subscribers": self.hub.subscribers}


def install(app: FastAPI) -> None:
    """Routes of the ingest; the service itself is expected on app.state.ingest (set by the lifespan)."""
    from gateway.api.devices import router as devices_router
    from gateway.ingest.realtime import router as realtime_router
    from gateway.ingest.ws_source import router as ws_router

    app.include_router(ws_router)
    app.include_router(realtime_router)
    app.include_router(devices_router)

    @app.get("/metrics", tags=["ingest"], summary="Prometheus metrics of the ingest",
             response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        svc: IngestService = request.app.state.ingest
        return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/ingest/status", tags=["ingest"], summary="Broker connection, queue depth, batches")
    async def ingest_status(request: Request) -> dict[str, Any]:
        svc: IngestService = request.app.state.ingest
        return svc.status()
