"""Histograms observed per batch (`observe_many`) export what one observe per value exports."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from gateway.ingest.metrics import _LATENCY_BUCKETS, IngestMetrics, observe_many


def samples_of(h: Histogram) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in h.collect() for s in m.samples
            if not s.name.endswith("_created")}


def test_observe_many_matches_observe_one_by_one() -> None:
    rnd = random.Random(5)
    # on bucket bounds exactly (a value equal to a bound belongs to that bucket), between them, past the last
    values = list(_LATENCY_BUCKETS) + [0.0, 1e-9, 31.0, 1e6] + [rnd.expovariate(10) for _ in range(2000)]
    one = Histogram("one", "x", buckets=_LATENCY_BUCKETS, registry=CollectorRegistry())
    many = Histogram("many", "x", buckets=_LATENCY_BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_many(many, values[:1000])
    observe_many(many, [])
    observe_many(many, iter(values[1000:]))
    a = {(k[0].replace("one", ""), k[1]): v for k, v in samples_of(one).items()}
    b = {(k[0].replace("many", ""), k[1]): v for k, v in samples_of(many).items()}
    sums = a.pop(("_sum", ())), b.pop(("_sum", ()))
    assert a == b and a[("_count", ())] == len(values)
    assert math.isclose(*sums, rel_tol=1e-12)  # the same values added in another order


def test_pipeline_histograms_export_what_observe_many_saw() -> None:
    m = IngestMetrics()
    observe_many(m.latency_seconds, [0.01, 0.2])
    text = m.render().decode()
    assert 'sqal_ingest_latency_seconds_bucket{le="0.01"} 1.0' in text
    assert 'sqal_ingest_latency_seconds_bucket{le="0.25"} 2.0' in text
    assert "sqal_ingest_latency_seconds_count 2.0" in text
