"""Every benchmark runs in the environment `./sqal` sets up: no pytest there, and tests/ is no library.
Each bench module is imported in a fresh interpreter where importing pytest or anything under tests/
fails, as it would there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem != "__init__")

BLOCKER = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytest", "_pytest", "tests"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a benchmark must not need it)")
        return None
sys.meta_path.insert(0, Blocker())
sys.path.insert(0, sys.argv[1])
import importlib
importlib.import_module("bench." + sys.argv[2])
"""


def test_the_bench_modules_are_all_checked() -> None:
    assert {"ingest", "ingest_cluster", "lean_publisher", "support", "fleet", "spool_flash"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_a_bench_module_needs_neither_pytest_nor_tests(module: str) -> None:
    r = subprocess.run([sys.executable, "-c", BLOCKER, str(ROOT), module], capture_output=True, text=True, check=False,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
