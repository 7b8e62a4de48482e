"""The two ingest benchmarks run end to end, tiny: the engine started by the bench (one node, or a
3-node cluster), the preloads, the drains with every reading checked stored once and linked to its
lot, the figures and the bars line. Keeps the benchmarks from rotting when the product moves
(bench/ingest.py imported a broker module that no longer existed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*argv: str, timeout: float = 280) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SQAL_DATABASE_URL"}
    r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env,
                       check=False)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_ingest_bench_prints_every_figure_and_the_bars() -> None:
    out = run_bench("bench/ingest.py", "--n", "600", "--naive-n", "150", "--repeat", "1")
    assert re.search(r"round 1: raw [\d,]+ msg/s \(nats-py fetch [\d,]+\), naive [\d,]+/s, SQAL [\d,]+/s = [\d.]+ raw "
                     r"\([\d.]+ fetch raw\); CPU per stored "
                     r"reading SQAL [\d.]+ ms, naive [\d.]+ ms: SQAL / naive [\d.]+", out), out
    for group in ("gateway process", "grading workers", "nats-server", "postgresql", "naive consumer"):
        assert group in out, out
    assert re.search(r"SQAL live at half the median max rate .* p99 \d+ ms", out), out
    assert out.splitlines()[-2].startswith("targets: SQAL >= 0.6 x raw in "), out


@pytest.mark.slow
def test_cluster_bench_drains_with_one_then_two_replicas() -> None:
    out = run_bench("bench/ingest_cluster.py", "--n", "1200", "--rounds", "1")
    assert "$MQTT_msgs with 3 replicas" in out, out
    one = re.search(r"round 1, 1 replica: [\d,]+ stored readings/s \(per replica ([\d,]+)\)", out)
    two = re.search(r"round 1, 2 replicas: [\d,]+ stored readings/s \(per replica ([\d,]+) / ([\d,]+)\)", out)
    assert one and two, out
    assert one.group(1) == "1,200"
    assert int(two.group(1).replace(",", "")) + int(two.group(2).replace(",", "")) == 1200
    assert "gateway replicas" in out and "nats-server" in out, out
