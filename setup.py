"""Build step for the compiled modules: the gateway's copies of the quality model and the contract codec.

Everything else is in pyproject.toml. `firmware/sqalfw/quality.py` and `firmware/sqalfw/codec.py` are
the only sources of the model and of the codec (they run unchanged on the board); for the gateway
each is also compiled with Cython, with the C types of its .pxd in gateway/ingest/:

    firmware/sqalfw/quality.py + quality_c.pxd -> gateway.ingest._quality_c  (about 3x faster a reading)
    firmware/sqalfw/codec.py   + codec_c.pxd   -> gateway.ingest._codec_c

Each is built from a copy of its source that records the SHA-256 of the file it came from:
`gateway.ingest.model` uses a compiled module only while that matches the source on disk, so an edit
without a rebuild falls back to the pure module instead of running stale code (docs/ingest.md).

The extensions are optional: without a C compiler or Python headers the install still succeeds and
the gateway runs the pure modules (it says so in its log and on /metrics;
SQAL_REQUIRE_COMPILED_MODEL=1 makes the test suite fail instead).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
GEN = HERE / "build" / "sqal-model"  # generated sources (build/ is ignored by git)

# The compiled codec must raise the pure codec's ContractError, not a class of its own: the gateway
# catches `sqalfw.codec.ContractError` (prepare, grading, nats_source) whichever codec ran. The
# compiled functions look the name up in their module's globals, so rebinding it after the class
# statement makes every raise and `except ContractError` in the copy use the one shared class.
_SHARED_ERROR = b"\nfrom sqalfw.codec import ContractError  # one class for both codecs (setup.py)\n"

# (module in gateway.ingest, its one source, its C types, text appended to the copy)
SRC, PKG = HERE / "firmware" / "sqalfw", HERE / "gateway" / "ingest"
COMPILED = (
    ("_quality_c", SRC / "quality.py", PKG / "quality_c.pxd", b""),
    ("_codec_c", SRC / "codec.py", PKG / "codec_c.pxd", _SHARED_ERROR),
)


def _extension(name: str, source: Path, pxd: Path, tail: bytes) -> list[Extension]:
    """gateway.ingest.<name> compiled from a copy of `source` (+ `tail`) that records its SHA-256; [] if
    Cython cannot translate it (the install goes on, the gateway runs the pure module)."""
    from Cython.Build import cythonize

    text = source.read_bytes()
    digest = hashlib.sha256(text).hexdigest()
    # laid out as its package so that Cython finds the module's .pxd beside it
    pkg = GEN / "gateway" / "ingest"
    pkg.mkdir(parents=True, exist_ok=True)
    for init in (GEN / "gateway" / "__init__.py", pkg / "__init__.py"):
        init.write_bytes(b"")
    py = pkg / f"{name}.py"
    py.write_bytes(text + tail + (f"\n_SOURCE_SHA256 = {digest!r}\n").encode())
    shutil.copyfile(pxd, pkg / f"{name}.pxd")
    ext = Extension(f"gateway.ingest.{name}", [str(py.relative_to(HERE))], optional=True,
                    # no fused multiply-add: every float operation rounds as CPython's does
                    extra_compile_args=["-O2", "-ffp-contract=off"])
    try:
        out = cythonize([ext], compiler_directives={"language_level": 3, "binding": False}, quiet=True,
                        include_path=[str(GEN.relative_to(HERE))], build_dir=str((GEN / "c").relative_to(HERE)))
    except Exception as exc:  # noqa: BLE001 -- a failed translation must not fail the install
        print(f"sqal: not compiling {source.name} ({exc}); the gateway will run the pure one")
        return []
    for e in out:
        e.optional = True  # cythonize() does not carry it over from the template
    return out


def _extensions() -> list[Extension]:
    try:
        import Cython.Build  # noqa: F401
    except ImportError:  # no Cython in the build environment: pure modules only
        return []
    return [e for spec in COMPILED for e in _extension(*spec)]


setup(ext_modules=_extensions())
