"""Settings from environment variables (names documented in docs/configuration.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("sqal", appauthor=False))


class Settings(BaseSettings):
    """Every field is read from SQAL_<NAME>; e.g. SQAL_DATABASE_URL."""

    model_config = SettingsConfigDict(env_prefix="SQAL_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Local state: embedded DB, logs, token")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset = embedded PostgreSQL")
    database_pool_size: int = Field(default=10, ge=1, le=200, description="Max connections in the gateway's pool")
    mqtt_url: str | None = Field(default=None, description="MQTT broker URL; unset = embedded broker")
    mqtt_client_id: str = Field(default="sqal-gateway", description="Stable MQTT client id (persistent session); "
                                "give each replica its own")
    mqtt_shared_group: str | None = Field(default=None, description="Shared subscription group ($share/<group>/...) "
                                          "for several gateway replicas")
    mqtt_embedded_port: int = Field(default=1883, ge=0, le=65535, description="Loopback port of the embedded broker "
                                    "(0 = any free port; a busy port falls back to a free one)")
    ingest_enabled: bool = Field(default=True, description="Run the ingest (broker connection, pipeline)")
    ingest_batch_max: int = Field(default=500, ge=1, le=10000, description="Messages per database transaction, at most")
    ingest_flush_ms: int = Field(default=50, ge=1, le=10000, description="A batch waits at most this long (ms)")
    ingest_queue_max: int = Field(default=5000, ge=1, le=1000000, description="MQTT messages received and not yet "
                                  "committed, at most (then the broker keeps the rest)")
    ingest_clock_future_s: float = Field(default=60.0, gt=0, description="A synced device clock ahead of the gateway "
                                         "by more than this is flagged 'future' and not trusted")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to")
    http_port: int = Field(default=8000, ge=0, le=65535, description="HTTP port")
    api_token: str | None = Field(default=None, description="Bearer token for state-changing endpoints")
    log_level: str = Field(default="INFO", description="Python logging level")

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
