"""What the exports need for one request: the gateway's traceability settings (SQAL_TRACE_*), the GS1
company prefix of the dispatcher's GTINs and the base URL partners reach the gateway at."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Settings


@dataclass(frozen=True)
class TraceConfig:
    id_base: str
    public_url: str
    company_prefix: str
    sender_name: str
    sender_address: str
    sender_gln: str | None = None
    timezone: str = "Europe/Paris"

    @classmethod
    def build(cls, settings: Settings, request_base_url: str) -> TraceConfig:
        return cls(id_base=settings.trace_id_base.rstrip("/"),
                   public_url=(settings.trace_public_url or request_base_url).rstrip("/"),
                   company_prefix=settings.gtin_company_prefix, sender_name=settings.trace_sender_name,
                   sender_address=settings.trace_sender_address, sender_gln=settings.trace_sender_gln,
                   timezone=settings.trace_timezone)
