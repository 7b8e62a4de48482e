"""MQTT topics as NATS subjects, and back.

NATS's MQTT listener maps a topic to a subject level by level: '/' becomes '.', a '.' inside a
level becomes '//' (so that it is not a level separator), and an empty level (a leading, trailing or
doubled '/') becomes '/'. The contract's topics are `sqal/v1/<device id>/<kind>` with kinds sample,
status, telemetry, cmd, cmd/result; device ids have no '.', so their subjects are
`sqal.v1.<device id>.<kind with / as .>`. Both functions do what the server does
(tests/gateway/test_nats_source.py checks them against it), odd topics included.
"""

from __future__ import annotations

PREFIX = "sqal.v1"
# what the boards send (gateway/nats/streams.py): at QoS 1, and telemetry at QoS 0
QOS1 = (f"{PREFIX}.*.sample", f"{PREFIX}.*.status", f"{PREFIX}.*.cmd.result")
TELEMETRY = f"{PREFIX}.*.telemetry"


def topic_to_subject(topic: str) -> str:
    return ".".join(level.replace(".", "//") if level else "/" for level in topic.split("/"))


def subject_to_topic(subject: str) -> str:
    """The MQTT topic a board published on. Any subject maps to some text: a hostile one is judged
    by the ingest's topic rules like any other topic. Read as the server reads a subject for its MQTT
    subscribers: '.' is a level separator, '//' a '.', '/.' an empty level, a lone '/' dropped."""
    out: list[str] = []
    i, n = 0, len(subject)
    while i < n:
        c = subject[i]
        if c == "/":
            nxt = subject[i + 1] if i + 1 < n else ""
            if nxt in ("/", "."):
                out.append("." if nxt == "/" else "/")
                i += 2
                continue
        else:
            out.append("/" if c == "." else c)
        i += 1
    return "".join(out)


def device_subjects(device_id: str) -> dict[str, list[str]]:
    """The subjects one board may use: publish under its own id, subscribe to its own commands
    (the topic ACL of docs/security.md, as NATS permissions)."""
    base = f"{PREFIX}.{device_id}"
    return {"publish": [f"{base}.sample", f"{base}.status", f"{base}.telemetry", f"{base}.cmd.result"],
            "subscribe": [f"{base}.cmd"]}
