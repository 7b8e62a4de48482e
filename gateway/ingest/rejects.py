"""Reason keys and payload truncation for rejected messages.

The stored reason is the codec's ContractError text, verbatim ('tof.dist[3]: 4100 out of range
0..4000'). Metrics and queries need a bounded set of labels, so the key is the field part with
indices removed ('tof.dist'), at most 48 chars of a safe alphabet.
"""

from __future__ import annotations

import re

DEFAULT_PAYLOAD_LIMIT = 4096  # bytes kept of a rejected payload; enough to see what was sent
_INDEX = re.compile(r"\[\d+\]")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def reason_key(reason: str) -> str:
    head = reason.split(":", 1)[0] if ":" in reason else reason
    key = _UNSAFE.sub("_", _INDEX.sub("", head.strip()))[:48]
    return key or "unknown"


def truncate(payload: bytes, limit: int = DEFAULT_PAYLOAD_LIMIT) -> bytes:
    return payload if len(payload) <= limit else bytes(payload[:limit])
