"""The message engine: NATS with JetStream. Boards speak MQTT 3.1.1 to its MQTT listener; the
gateway reads their messages from JetStream streams (gateway/ingest/nats_source.py) and sends
commands back over MQTT QoS 1 (gateway/dispatch.py). Embedded by default (embedded.py), a cluster
by URL (docs/scale-out.md)."""
