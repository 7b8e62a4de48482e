"""`python -m gateway.ingest`: run the gateway (API + ingest) from SQAL_* environment variables.

A plain process entry point for the ingest's resilience tests and benchmark (they start, SIGKILL
and restart it); the user-facing command is `sqal serve` / `sqal demo`.
"""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_app
from gateway.config import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port,
                log_level=settings.log_level.lower(), ws_max_size=2 * 1024 * 1024)


if __name__ == "__main__":
    main()
