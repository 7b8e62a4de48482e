"""/api/ingest/status is a read-only route (open unless SQAL_READ_AUTH): the broker URL it shows
never carries the password."""

from __future__ import annotations

import asyncpg

from gateway.ingest.mqtt_source import redact
from gateway.ingest.service import IngestService, IngestSettings


async def test_the_status_shows_the_broker_url_without_its_password(db_pool: asyncpg.Pool) -> None:
    svc = IngestService(db_pool, IngestSettings(mqtt_url="mqtts://gateway:s3cr%40t@broker.example:8883", workers=0))
    status = svc.status()
    assert status["broker_url"] == "mqtts://gateway:***@broker.example:8883"
    assert "s3cr" not in str(status)
    assert status["mqtt_last_error"] is None and not status["mqtt_connected"]


def test_redact_leaves_urls_without_a_password_alone() -> None:
    assert redact("mqtt://127.0.0.1:1883") == "mqtt://127.0.0.1:1883"
    assert redact("mqtt://user@host:1883") == "mqtt://user@host:1883"
    assert redact("mqtt://u:p@host") == "mqtt://u:***@host"
