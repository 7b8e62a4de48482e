"""What a source hands to the pipeline, and what the pipeline answers once the batch is committed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Outcome:
    """The result for one message, known only after its batch committed.

    status: 'saved' | 'duplicate' (samples), 'rejected' (reason set), 'applied' (status, telemetry,
    command result), 'stale' (an older status than the one stored: kept out, not an error),
    'committed' (the batch is committed but a bug lost which of these it was: logged and counted
    as sqal_ingest_internal_errors_total{stage="outcomes"}).
    """

    status: str
    kind: str
    device_id: str | None = None
    boot: int | None = None
    seq: int | None = None
    sample_id: int | None = None
    score: float | None = None
    grade: str | None = None
    lot_id: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class Envelope:
    """One received message.

    `payload` is the raw bytes (already truncated when `size` says it was larger); `obj` is set
    instead when the source already parsed JSON (a WebSocket `sensor_data` frame). `pre_reject` is a
    reason found by the source itself (oversize, a frame that is not JSON...): the pipeline stores it
    as a reject without decoding. `done` is called on the event loop after the commit, in receive order.
    """

    source: str  # 'mqtt' | 'ws'
    topic: str
    payload: bytes
    received_at: datetime
    size: int = -1
    obj: Any = None
    kind_hint: str | None = None  # 'sample' for WebSocket frames; MQTT uses the topic
    path_device_id: str | None = None  # /ws/sensors/{device_id}
    pre_reject: str | None = None
    done: Callable[[Outcome], None] | None = None

    def __post_init__(self) -> None:
        if self.size < 0:
            self.size = len(self.payload)
