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
    mqtt_url: str | None = Field(default=None, description="MQTT broker URL; unset = embedded broker")
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
