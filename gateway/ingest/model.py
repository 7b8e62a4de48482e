"""The quality model and the contract codec the gateway grades with: the board's modules, compiled or not.

`firmware/sqalfw/quality.py` (the model) and `firmware/sqalfw/codec.py` (the contract) are the
board's pure-Python modules and their only source. The install also compiles a copy of each with
Cython (setup.py, C types from `gateway/ingest/quality_c.pxd` and `codec_c.pxd`) into
`gateway.ingest._quality_c` (about 3x faster) and `gateway.ingest._codec_c`. Same code, same
operations: the results are the same to the bit, the errors the same text
(tests/gateway/test_ingest_model.py and test_ingest_codec_compiled.py check corpora). The compiled
codec raises the pure codec's own `ContractError` class (setup.py rebinds it), so
`except sqalfw.codec.ContractError` catches an error from either.

A compiled copy is used only when it was built from the source on disk (it records that file's
SHA-256) and shares the pure module's exception classes: after an edit without a rebuild
(`pip install -e .`, which scripts/bootstrap.sh runs when its sources change) the gateway falls back
to the pure module rather than run stale code. `SQAL_INGEST_MODEL=pure` forces the pure model and
codec. The gateway logs which ones it runs and exports the model's as `sqal_ingest_model_compiled`.
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import ModuleType

from sqalfw import codec as pure_codec
from sqalfw import quality as pure

from gateway.config import Settings


def _select(pure_mod: ModuleType = pure, name: str = "_quality_c",
            what: str = "model") -> tuple[ModuleType, str, str]:
    """(module, "compiled" | "pure", why) for `pure_mod` and its compiled copy gateway.ingest.<name>."""
    if Settings().ingest_model == "pure":  # read at each call: grading workers are fresh processes
        return pure_mod, "pure", "SQAL_INGEST_MODEL=pure"
    try:
        compiled = importlib.import_module(f"gateway.ingest.{name}")
    except ImportError as exc:
        return pure_mod, "pure", f"compiled {what} not built ({exc})"
    src = Path(pure_mod.__file__ or "")
    digest = hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else None
    if getattr(compiled, "_SOURCE_SHA256", None) != digest:
        return (pure_mod, "pure",
                f"compiled {what} is stale (built from another {src.name}; rebuild: pip install -e .)")
    # An `except pure.SomeError` must catch what the compiled copy raises: one class, not two alike.
    for attr, value in vars(pure_mod).items():
        if (isinstance(value, type) and issubclass(value, BaseException)
                and getattr(compiled, attr, None) is not value):
            return pure_mod, "pure", f"compiled {what} has its own {attr} class (rebuild: pip install -e .)"
    return compiled, "compiled", f"Cython build of {src}"


quality, IMPLEMENTATION, DETAIL = _select()
codec, CODEC_IMPLEMENTATION, CODEC_DETAIL = _select(pure_codec, "_codec_c", "codec")


def describe() -> tuple[str, str]:
    """(implementation of the quality model, why -- with the codec's implementation and why appended).
    The first item stays the model's alone (the `sqal_ingest_model_compiled` gauge); describe_all()
    gives both separately."""
    return IMPLEMENTATION, f"{DETAIL}; codec: {CODEC_IMPLEMENTATION} ({CODEC_DETAIL})"


def describe_all() -> dict[str, tuple[str, str]]:
    """{"quality": (implementation, why), "codec": (implementation, why)} of this process."""
    return {"quality": (IMPLEMENTATION, DETAIL), "codec": (CODEC_IMPLEMENTATION, CODEC_DETAIL)}
