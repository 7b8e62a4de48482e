"""SQAL gateway: ingest, control panel API and supervisor."""

__version__ = "0.1.0"
