"""Prometheus metrics of the ingest, on a registry of their own (several gateways may live in one
test process; the default global registry would refuse the second)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


class IngestMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter("sqal_ingest_received", "Messages received", ["source", "kind"], registry=r)
        self.stored = Counter("sqal_ingest_stored", "Samples stored (first arrival of a dedupe key)", registry=r)
        self.duplicates = Counter("sqal_ingest_duplicates", "Samples already stored (same device, boot, seq)",
                                  registry=r)
        self.rejected = Counter("sqal_ingest_rejected", "Messages rejected, by reason key", ["reason"], registry=r)
        self.device_updates = Counter("sqal_ingest_device_updates", "Status/telemetry/result messages applied",
                                      ["kind"], registry=r)
        self.db_retries = Counter("sqal_ingest_db_retries", "Batch commits retried after a database error",
                                  registry=r)
        self.acks_skipped = Counter("sqal_ingest_acks_skipped",
                                    "MQTT acks not sent because the connection that delivered the message is gone "
                                    "(the broker redelivers; the dedupe key absorbs it)", registry=r)
        self.internal_errors = Counter("sqal_ingest_internal_errors",
                                       "Bugs caught in the ingest's own code, by stage (the log has the traceback)",
                                       ["stage"], registry=r)
        self.queue_depth = Gauge("sqal_ingest_queue_depth", "Messages received and not yet committed", registry=r)
        self.batch_size = Histogram("sqal_ingest_batch_size", "Messages per committed batch", buckets=_BATCH_BUCKETS,
                                    registry=r)
        self.commit_seconds = Histogram("sqal_ingest_commit_seconds", "Time to commit one batch",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.latency_seconds = Histogram("sqal_ingest_latency_seconds", "Receive -> commit, per message",
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.lag_seconds = Histogram("sqal_ingest_lag_seconds",
                                     "Measurement (device clock, synced only) -> commit, per stored sample",
                                     buckets=_LAG_BUCKETS, registry=r)
        self.grades = Counter("sqal_ingest_grades", "Stored samples by authoritative grade", ["grade"], registry=r)
        self.clock_flags = Counter("sqal_ingest_clock_flags", "Samples with a clock flag", ["flag"], registry=r)
        self.model_compiled = Gauge("sqal_ingest_model_compiled",
                                    "1 when the grading workers run the compiled quality model, 0 for the pure one",
                                    registry=r)
        self.realtime_dropped = Counter("sqal_realtime_dropped", "Realtime messages dropped for slow dashboards",
                                        registry=r)

    def set_queue_depth_source(self, fn: Callable[[], float]) -> None:
        self.queue_depth.set_function(fn)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def observe_many(h: Histogram, values: Iterable[float]) -> None:
    """`h.observe(v)` for each value, with one lock round per bucket hit and one for the sum instead
    of two per value (prometheus_client internals `_upper_bounds`, `_buckets`, `_sum`; without them,
    one observe per value). Same buckets as observe: the first upper bound >= the value."""
    bounds, buckets, total = (getattr(h, "_upper_bounds", None), getattr(h, "_buckets", None),
                              getattr(h, "_sum", None))
    if bounds is None or buckets is None or total is None or getattr(h, "_labelnames", None):
        for v in values:
            h.observe(v)
        return
    counts = [0] * len(bounds)
    s = 0.0
    n = 0
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the last bound is +Inf
        s += v
        n += 1
    if not n:
        return
    for i, c in enumerate(counts):
        if c:
            buckets[i].inc(c)
    total.inc(s)
