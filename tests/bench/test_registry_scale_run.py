"""bench/registry_scale.py runs end to end, tiny: every section prints its figures and the bars
line comes last (keeps the benchmark from rotting when the registry moves)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_registry_scale_bench_prints_every_figure_and_the_bars() -> None:
    env = {k: v for k, v in os.environ.items() if k != "SQAL_DATABASE_URL"}
    r = subprocess.run([sys.executable, "bench/registry_scale.py", "--days", "1", "--boards", "3", "--rate", "0.05",
                        "--compare-readings", "2000", "--lots", "5", "--ingest-batches", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=280, env=env, check=False)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    out = r.stdout
    assert re.search(r"ratio before / after: [\d.]+x", out), out
    assert re.search(r"generated [\d,]+ readings, [\d,]+ lots, [\d,]+ events", out), out
    for label in ("lot timeline (first page): p50", "lot stats (lot + summary): p50", "devices list: p50",
                  "ratio full / empty (medians)", "writer seen waiting on a lock"):
        assert label in out, out
    assert out.strip().splitlines()[-1].startswith("bars: bytes/reading before/after >= 3x: "), out
