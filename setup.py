"""Build step for the one compiled module: the gateway's copy of the quality model.

Everything else is in pyproject.toml. `firmware/sqalfw/quality.py` is the model's only source (it runs
unchanged on the board); for the gateway it is also compiled with Cython into
`gateway.ingest._quality_c`, with the C types of `gateway/ingest/quality_c.pxd`, about 3x faster
per reading (docs/ingest.md). The compiled module is built from a copy of quality.py that records
the SHA-256 of the source it came from: `gateway.ingest.model` uses it only while that matches the
quality.py on disk, so an edit to the model without a rebuild falls back to the pure model instead
of running stale code.

The extension is optional: without a C compiler or Python headers the install still succeeds and
the gateway runs the pure model (it says so in its log and on /metrics;
SQAL_REQUIRE_COMPILED_MODEL=1 makes the test suite fail instead).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "firmware" / "sqalfw" / "quality.py"
PXD = HERE / "gateway" / "ingest" / "quality_c.pxd"
GEN = HERE / "build" / "sqal-model"  # generated sources (build/ is ignored by git)


def _extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:  # no Cython in the build environment: pure model only
        return []
    text = SOURCE.read_bytes()
    digest = hashlib.sha256(text).hexdigest()
    # laid out as its package so that Cython finds the .pxd of gateway.ingest._quality_c beside it
    pkg = GEN / "gateway" / "ingest"
    pkg.mkdir(parents=True, exist_ok=True)
    for init in (GEN / "gateway" / "__init__.py", pkg / "__init__.py"):
        init.write_bytes(b"")
    py = pkg / "_quality_c.py"
    py.write_bytes(text + ("\n_SOURCE_SHA256 = %r\n" % digest).encode())
    shutil.copyfile(PXD, pkg / "_quality_c.pxd")
    ext = Extension("gateway.ingest._quality_c", [str(py.relative_to(HERE))], optional=True,
                    # no fused multiply-add: every float operation rounds as CPython's does
                    extra_compile_args=["-O2", "-ffp-contract=off"])
    try:
        out = cythonize([ext], compiler_directives={"language_level": 3, "binding": False}, quiet=True,
                        include_path=[str(GEN.relative_to(HERE))], build_dir=str((GEN / "c").relative_to(HERE)))
    except Exception as exc:  # noqa: BLE001 -- a failed translation must not fail the install
        print(f"sqal: not compiling the quality model ({exc}); the gateway will run the pure one")
        return []
    for e in out:
        e.optional = True  # cythonize() does not carry it over from the template
    return out


setup(ext_modules=_extensions())
