"""The gateway's compiled modules (setup.py) in tests: found, or a skip -- a failure when CI says
they are required (SQAL_REQUIRE_COMPILED_MODEL=1, set by .ci/run)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRED = os.environ.get("SQAL_REQUIRE_COMPILED_MODEL") == "1"


def import_compiled(name: str, what: str) -> ModuleType:
    """gateway.ingest.<name> (the compiled `what`), or skip / fail as REQUIRED says."""
    try:
        return importlib.import_module(f"gateway.ingest.{name}")
    except ImportError as exc:
        if REQUIRED:
            pytest.fail(f"SQAL_REQUIRE_COMPILED_MODEL=1 but the compiled {what} is not built: {exc}")
        pytest.skip(f"compiled {what} not built (pip install -e . builds it): {exc}")
