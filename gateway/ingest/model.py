"""The quality model the gateway grades with: `firmware/sqalfw/quality.py`, compiled or not.

The model's one source is the board's pure-Python `sqalfw.quality`. The install also compiles a
copy of it with Cython (setup.py, C types from `gateway/ingest/quality_c.pxd`) into
`gateway.ingest._quality_c`, about 3x faster. Same code, same floating-point operations: the
results are the same to the bit (tests/gateway/test_ingest_model.py checks a corpus).

The compiled copy is used only when it was built from the quality.py on disk (it records that
file's SHA-256): after an edit to the model without a rebuild (`pip install -e .`, which
scripts/bootstrap.sh runs when pyproject.toml changes) the gateway falls back to the pure model
rather than grade with stale code. `SQAL_INGEST_MODEL=pure` forces the pure model.
The gateway logs which one it runs and exports it as `sqal_ingest_model_compiled`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

from sqalfw import quality as pure


def _select() -> tuple[ModuleType, str, str]:
    """(module, "compiled" | "pure", why)."""
    if os.environ.get("SQAL_INGEST_MODEL", "auto").strip().lower() == "pure":
        return pure, "pure", "SQAL_INGEST_MODEL=pure"
    try:
        from gateway.ingest import _quality_c as compiled  # type: ignore[attr-defined]
    except ImportError as exc:
        return pure, "pure", f"compiled model not built ({exc})"
    src = Path(pure.__file__ or "")
    digest = hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else None
    if getattr(compiled, "_SOURCE_SHA256", None) != digest:
        return pure, "pure", f"compiled model is stale (built from another {src.name}; rebuild: pip install -e .)"
    return compiled, "compiled", f"Cython build of {src}"


quality, IMPLEMENTATION, DETAIL = _select()


def describe() -> tuple[str, str]:
    """(implementation, why) of the model this process grades with."""
    return IMPLEMENTATION, DETAIL
