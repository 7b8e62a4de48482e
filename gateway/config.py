"""Settings from environment variables (names documented in docs/configuration.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.gs1 import is_gln
from registry.products import PRODUCT_RANGE

# An http(s) base URL without query or fragment: ids and links are built by appending paths to it.
URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("sqal", appauthor=False))


class Settings(BaseSettings):
    """Every field is read from SQAL_<NAME>; e.g. SQAL_DATABASE_URL."""

    model_config = SettingsConfigDict(env_prefix="SQAL_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir, description="Local state: embedded DB, logs, token")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset = embedded PostgreSQL")
    database_pool_size: int = Field(default=10, ge=1, le=200, description="Max connections in the gateway's pool")
    nats_url: str | None = Field(default=None, description="Comma-separated nats:// (or tls://) URLs of an external "
                                 "NATS cluster with JetStream (credentials in the URL); unset = the embedded engine "
                                 "(docs/scale-out.md)")
    mqtt_url: str | None = Field(default=None, description="With SQAL_NATS_URL: the engine's MQTT listener, mqtt:// or "
                                 "mqtts:// with the gateway's credentials; the boards' broker and the path of the "
                                 "gateway's commands to them. Unset = the embedded engine's")
    nats_ca_file: Path | None = Field(default=None, description="tls:// engine: PEM bundle of the CA that signed the "
                                      "servers' certificates (unset: the system's CAs)")
    nats_cert_file: Path | None = Field(default=None, description="tls:// engine: client certificate (PEM) for "
                                        "servers that verify clients")
    nats_key_file: Path | None = Field(default=None, description="tls:// engine: the client certificate's private key")
    nats_replicas: int = Field(default=1, ge=1, le=5, description="Replicas of the JetStream streams (3 on a "
                               "3-node cluster: a node can be lost without losing a reading)")
    nats_samples_max_bytes: int = Field(default=4 << 30, ge=1 << 20, description="Bytes of readings the engine keeps "
                                        "for the gateway; when full it refuses new ones and the boards keep them "
                                        "in their spools")
    nats_embedded_port: int = Field(default=0, ge=0, le=65535, description="Loopback port of the embedded engine "
                                    "for NATS clients (0 = any free port)")
    mqtt_ca_file: Path | None = Field(default=None, description="mqtts:// engine (SQAL_MQTT_URL): PEM bundle of the "
                                      "CA that signed its certificate, for the gateway's commands")
    mqtt_cert_file: Path | None = Field(default=None, description="mqtts:// engine: client certificate (PEM)")
    mqtt_key_file: Path | None = Field(default=None, description="mqtts:// engine: the client certificate's "
                                       "private key (PEM), when it is not in SQAL_MQTT_CERT_FILE")
    mqtt_embedded_port: int = Field(default=1883, ge=0, le=65535, description="Port of the embedded engine's MQTT "
                                    "listener for the boards (0 = any free port; a busy port falls back to a free one)")
    ingest_enabled: bool = Field(default=True, description="Run the ingest (broker connection, pipeline)")
    ingest_batch_max: int = Field(default=500, ge=1, le=10000, description="Messages per database transaction, at most")
    ingest_flush_ms: int = Field(default=50, ge=1, le=10000, description="A batch waits at most this long (ms)")
    ingest_queue_max: int = Field(default=5000, ge=1, le=1000000, description="Messages fetched from the engine and "
                                  "not yet committed, per replica, at most (then the engine keeps the rest)")
    ingest_workers: int | None = Field(default=None, ge=0, le=64, description="Grading worker processes "
                                       "(unset: min(2, cores); 0: grade in a thread of the gateway)")
    ingest_clock_future_s: float = Field(default=60.0, gt=0, description="A synced device clock ahead of the gateway "
                                         "by more than this is flagged 'future' and not trusted")
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to")
    http_port: int = Field(default=8000, ge=0, le=65535, description="HTTP port")
    api_token: str | None = Field(default=None, description="Bearer token for state-changing endpoints "
                                  "(unset: `sqal serve`/`demo` use <data dir>/api-token, generated on first run)")
    api_auth: bool = Field(default=True, description="false: `sqal serve`/`demo` run the API with no token "
                           "(warned at start; never do this on a non-loopback address)")
    read_auth: bool = Field(default=False, description="Require the token for read-only routes (GET, "
                            "/ws/realtime) too; /health and the API docs stay open")
    mqtt_auth: bool | None = Field(default=None, description="Per-device MQTT credentials + subject permissions on "
                                   "the embedded engine, device credentials on the WebSocket ingest; unset = on "
                                   "exactly when the embedded engine's MQTT listener binds a non-loopback address")
    mqtt_embedded_host: str = Field(default="127.0.0.1", description="Address the embedded engine's MQTT listener "
                                    "binds to (loopback by default; another address turns SQAL_MQTT_AUTH on unless set)")
    http_max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1 << 30, description="Largest HTTP request "
                                     "body accepted (413 above, before the body is read)")
    ws_max_message_bytes: int = Field(default=65_536, ge=1024, le=16 << 20, description="Largest WebSocket "
                                      "message; a larger one closes that connection (1009)")
    ws_rate_per_s: float = Field(default=50.0, gt=0, le=100_000, description="Sustained WebSocket messages per "
                                 "second per connection; above it (after the burst) messages are refused")
    ws_rate_burst: int = Field(default=200, ge=1, le=1_000_000, description="WebSocket messages a connection may "
                               "send in a burst above the sustained rate")
    log_level: str = Field(default="INFO", description="Python logging level")
    device_target: Literal["unix64", "esp32", "esp32-psram"] = Field(
        default="unix64", description="The board the supervisor's emulated SQAL devices (scenarios, control "
        "panel) run on: unix64 (64-bit wheel) or the emulator's ESP32 profile (docs/emulation.md)")
    ingest_model: Literal["auto", "pure"] = Field(
        default="auto", description="auto: grade and decode with the compiled (Cython) copies of the board's "
        "modules when they are current; pure: always the board's pure-Python modules")

    # -- the dispatcher (gateway/dispatch.py): inspection, lot assignment, products
    dispatch_enabled: bool = Field(default=True, description="Run the dispatcher (with the ingest)")
    inspection_samples: int = Field(default=20, ge=1, le=100000,
                                    description="Linked SQAL samples after which a lot's inspection closes")
    dispatch_poll_s: float = Field(default=1.0, gt=0, le=60, description="Seconds between dispatcher polls")
    dispatch_cmd_timeout_s: float = Field(default=10.0, gt=0, le=3600,
                                          description="Re-send a command not confirmed within this many seconds")
    dispatch_reassign_s: float = Field(default=60.0, gt=0, le=86400,
                                       description="Release a lot from a device offline this long")
    products_per_lot: int = Field(default=4, ge=0, le=len(PRODUCT_RANGE),
                                  description="Products created for a compliant inspected lot")
    gtin_company_prefix: str = Field(default="376000000", pattern=r"^\d{7,10}$",
                                     description="GS1 company prefix of the GTINs (376: GS1 France range)")

    # -- the readings' partitions and retention (gateway/maintenance.py, docs/registry.md)
    retention_enabled: bool = Field(default=True, description="Run the registry's maintenance in this gateway: "
                                    "partitions made ahead, the retention policy applied (one replica at a time)")
    retention_raw_days: int = Field(default=30, ge=1, le=36500, description="Days a reading's raw payload is kept "
                                    "(a day of them is dropped at once when all of it is this old)")
    retention_samples_days: int = Field(default=730, ge=1, le=36500, description="Days a reading's row (grades, "
                                        "weights, features) is kept (a month of them is dropped at once); lots, "
                                        "their events and the per-hour aggregates are kept for good")
    retention_interval_s: float = Field(default=3600.0, ge=1, le=86400, description="Seconds between two "
                                        "maintenance runs (the first at start-up)")
    partitions_ahead_days: int = Field(default=7, ge=1, le=366, description="Days after today whose partitions "
                                       "are made ahead")

    # -- traceability exports (docs/traceability.md)
    trace_id_base: str = Field(
        default="https://sqal.example", pattern=URL_PATTERN,
        description="HTTP URI base of the identifiers that are not GS1 keys (farms, sites, devices, parties "
                    "without a GLN, the extension vocabulary) and the seed of the event ids: a domain you control. "
                    "Changing it changes every exported id")
    trace_public_url: str | None = Field(
        default=None, pattern=URL_PATTERN,
        description="Base URL partners reach the gateway at, for `rawData` links and the certificate's links "
                    "(unset: the URL of the request)")
    trace_sender_name: str = Field(default="SQAL Foie Gras", min_length=1, max_length=200,
                                   description="Name of the business operator that dispatches the products "
                                               "(the sender of dispatch records and the recipient of lots)")
    trace_sender_address: str = Field(default="Zone d'activites du Conte, 40000 Mont-de-Marsan, France",
                                      min_length=1, max_length=500, description="Its address")
    trace_sender_gln: str | None = Field(default=None, pattern=r"^\d{13}$",
                                         description="Its GS1 GLN (then its party and location ids are GS1 keys)")
    trace_timezone: str = Field(default="Europe/Paris",
                                description="IANA time zone of the sites: eventTimeZoneOffset of the EPCIS events")
    epcis_dir: Path | None = Field(default=None, description="Directory holding GS1's EPCIS-JSON-Schema.json and "
                                   "epcis-context.jsonld (unset: ../shared/epcis/ beside the project)")

    # -- over-the-air updates (docs/ota.md): the gateway serves releases and runs rollouts; it holds the
    # release *public* key only (the private key signs on the release machine, never here)
    ota_releases_dir: Path | None = Field(default=None, description="Directory of the releases the gateway serves "
                                          "(`sqal release build --out` there); unset: <data dir>/releases")
    ota_public_key: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$",
                                       description="The release public key (64 hex chars, `sqal release keygen` "
                                       "prints it): a release is registered only if its signature verifies with it. "
                                       "Unset: no release can be registered")
    ota_concurrency: int = Field(default=10, ge=1, le=200, description="Devices of a rollout wave updated at once")
    ota_probation_s: int = Field(default=120, ge=10, le=3600, description="Seconds a board has after an update to "
                                 "pass its health check (WiFi, broker, a reading of each sensor, an acknowledged "
                                 "sample) before it rolls back by itself")

    @field_validator("trace_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @field_validator("trace_sender_gln")
    @classmethod
    def _gln_check_digit(cls, v: str | None) -> str | None:
        if v is not None and not is_gln(v):
            raise ValueError(f"{v!r} is not a GLN: its last digit is not the GS1 check digit of the others")
        return v

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
