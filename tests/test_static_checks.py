"""The static checks run with the tests: ruff over the whole repository, mypy over the CPython
packages (check_untyped_defs, configured in pyproject.toml), pyright (basic) on the firmware against
the ESP32 stubs (pyrightconfig.json). The firmware's mypy run against the same stubs is
tests/firmware/test_typecheck.py. A finding fails the suite with the checker's own report."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY_PACKAGES = ["gateway", "registry", "emulation", "bench", "tests"]


def run(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def tool(name: str) -> str:
    """A checker installed in this environment (the dev extras): missing is a failure, not a skip."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: install the dev extras (pip install -e '.[dev]')"
    return found


def test_ruff_finds_nothing() -> None:
    out = run([sys.executable, "-m", "ruff", "check", "--no-cache", "."])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.slow
def test_mypy_finds_nothing_in_the_cpython_packages(tmp_path: Path) -> None:
    out = run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"), *MYPY_PACKAGES])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout


def test_pyright_finds_nothing_in_the_firmware() -> None:
    out = run([tool("pyright"), "-p", "pyrightconfig.json"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 errors" in out.stdout, out.stdout


def test_the_checks_have_teeth(tmp_path: Path) -> None:
    """Each checker fails on a file with a finding of its kind, with the same configuration."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f(x: int) -> str:\n    return x\n")
    out = run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
               str(bad)])
    assert out.returncode != 0 and "F401" in out.stdout, out.stdout
    out = run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir",
               str(tmp_path / "mypy-cache"), str(bad)])
    assert out.returncode != 0 and "Incompatible return value" in out.stdout, out.stdout


def test_no_test_module_imports_another_or_a_benchmark() -> None:
    """Helpers shared by tests live in support modules (tests/fixtures, *_support.py, *_cases.py,
    helpers.py, conftest.py), not in test modules; a test of a benchmark may import it, nothing
    else under bench/ is imported by tests."""
    offenders: list[str] = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == "tests" and parts[-1].startswith("test_") and parts[-1] != path.stem:
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module}")
                if parts[0] == "bench" and path.parent.name not in ("bench",) and not _benchmark_test(path):
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module}")
    assert not offenders, "\n".join(offenders)


def _benchmark_test(path: Path) -> bool:
    """The firmware's heap tests run their benchmark's measurement at a smaller scale."""
    return path.name in ("test_app_memory.py", "test_app_memory_esp32.py")
