"""The JetStream streams the boards' messages land in, and the gateway's durable consumers.

- SQAL_SAMPLES (`sqal.v1.*.sample`): work-queue retention, a message is deleted once a gateway
  replica acknowledged it (after its commit). Bounded by SQAL_NATS_SAMPLES_MAX_BYTES; when full the
  engine refuses new samples (discard new) rather than dropping stored ones: a board whose publish
  is refused keeps the reading in its spool and tries again.
- SQAL_EVENTS (status, telemetry, command results): work-queue too, bounded by bytes and by age
  (telemetry is a health signal, worth little after a day); when full the oldest go.
Both are file-backed, with the replicas asked for (1 embedded, 3 in a cluster).

One durable pull consumer per stream, `sqal-gateway`, shared by every replica: each message goes to
one replica, explicit acks, redelivered after `ack_wait` when a replica died with it (the dedupe key
absorbs the second copy). `max_ack_pending` bounds what is handed out and not acknowledged across
all replicas: the engine's backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from gateway.nats import subjects

log = logging.getLogger(__name__)

SAMPLES = "SQAL_SAMPLES"
EVENTS = "SQAL_EVENTS"
DURABLE = "sqal-gateway"
MAX_MSG_SIZE = 65536  # the engine's max_payload; the contract's messages are < 4 KiB


@dataclass(frozen=True)
class StreamLimits:
    replicas: int = 1
    samples_max_bytes: int = 4 << 30    # 4 GiB: about 5 million 8x8 JSON samples waiting for the gateway
    events_max_bytes: int = 512 << 20
    events_max_age_s: float = 24 * 3600
    ack_wait_s: float = 60.0            # a message handed to a replica that died is redelivered after this
    max_ack_pending: int = 20000        # handed out and not acknowledged, across all replicas


def stream_configs(limits: StreamLimits) -> list[tuple[str, StreamConfig]]:
    """(name, config) of each stream."""
    def work_queue(name: str, subs: list[str], max_bytes: int, discard: DiscardPolicy, max_age: float | None,
                   description: str) -> tuple[str, StreamConfig]:
        return name, StreamConfig(name=name, subjects=subs, retention=RetentionPolicy.WORK_QUEUE,
                                  storage=StorageType.FILE, num_replicas=limits.replicas, max_msg_size=MAX_MSG_SIZE,
                                  max_bytes=max_bytes, discard=discard, max_age=max_age, description=description)

    return [
        work_queue(SAMPLES, [subjects.SAMPLES], limits.samples_max_bytes, DiscardPolicy.NEW, None,
                   "SQAL readings until a gateway stored them"),
        work_queue(EVENTS, list(subjects.EVENTS), limits.events_max_bytes, DiscardPolicy.OLD, limits.events_max_age_s,
                   "SQAL device status, telemetry and command results"),
    ]


def consumer_config(limits: StreamLimits) -> ConsumerConfig:
    return ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                          ack_wait=limits.ack_wait_s, max_deliver=-1, max_ack_pending=limits.max_ack_pending,
                          num_replicas=limits.replicas)


async def ensure(js: JetStreamContext, limits: StreamLimits, timeout: float = 60.0) -> None:
    """Create the streams and consumers, or bring their settings to these (every replica calls it
    at start; creating what exists with the same settings is a no-op for the engine). A cluster
    that is still electing its JetStream leader answers with timeouts or "unavailable" for a few
    seconds: retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await _ensure_once(js, limits)
            return
        except (NatsTimeoutError, ServiceUnavailableError, asyncio.TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.info("message engine: JetStream not ready yet (%r); trying again", exc)
            await asyncio.sleep(1.0)


async def _ensure_once(js: JetStreamContext, limits: StreamLimits) -> None:
    for name, cfg in stream_configs(limits):
        try:
            await js.stream_info(name)
        except NotFoundError:
            await js.add_stream(cfg)
            log.info("message engine: stream %s created (%s)", name, ", ".join(cfg.subjects or []))
        else:
            await js.update_stream(cfg)
        await js.add_consumer(name, consumer_config(limits))
