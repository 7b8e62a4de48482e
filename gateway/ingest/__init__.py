"""Ingest: the boards' readings (MQTT through the message engine's JetStream streams, and WebSocket)
-> one pipeline -> PostgreSQL, exactly once per dedupe key.

Modules, one concern each:
    envelope     what a source hands to the pipeline (raw bytes + how to answer/acknowledge)
    prepare      decode + validate (sqalfw.codec), authoritative grade (sqalfw.quality), clock flags
    model        which codec and quality model run: their compiled copies when built and current, else pure
    grading      runs prepare for a batch in a pool of worker processes (survives a worker dying)
    rejects      reason keys and payload truncation for rejected messages
    pipeline     bounded intake, batches flushed on size or time, one transaction per batch, acks after commit
    nats_source  the engine's durable pull consumers: fetch batches, acknowledge after the commit
    ws_source    /ws/sensors/ (the v1 WebSocket protocol)
    realtime     /ws/realtime/ sample summaries and grade counts for dashboards
    metrics      Prometheus metrics (/metrics)
    service      wires the above (and the embedded engine, gateway/nats/) into the gateway app
See docs/ingest.md for the guarantees and their limits.
"""
