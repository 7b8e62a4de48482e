"""Prometheus metrics of the ingest, on a registry of their own (several gateways may live in one
test process; the default global registry would refuse the second)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
        self.redelivered = Counter("sqal_ingest_redelivered",
                                   "Messages the engine handed out again (an ack lost, or a replica died before its "
                                   "commit; the dedupe key absorbs the second copy)", registry=r)
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
    """`h.observe(v)` for each value (prometheus_client's public API only)."""
    for v in values:
        h.observe(v)
