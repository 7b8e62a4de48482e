"""Where the boards' messages wait for the gateway, and the gateway's durable consumers.

QoS 1 messages (samples, status, command results): the engine's own MQTT message stream,
`$MQTT_msgs`. NATS's MQTT listener stores every QoS 1 PUBLISH there (subject `$MQTT.msgs.<subject>`)
and sends the PUBACK only once it is stored (with its replicas' quorum in a cluster): a reading a
board saw acknowledged is in that stream. The stream keeps a message while a consumer whose filter
matches has not acknowledged it (interest retention), so the gateway's durable consumer, filtered on
the boards' QoS 1 subjects and acknowledging after the commit, holds each reading until it is
stored. A stream of our own capturing `sqal.v1.*.sample` by subject was tried first and is NOT
equivalent: the engine acknowledges before such a capture, which is lost when the capturing stream
has no leader for a moment (a node lost in a cluster: readings acknowledged and never stored) or
when the server is stopping (tests/emulation/test_fleet_cluster.py, tests/gateway/test_nats_embedded.py).

This leans on how nats-server implements MQTT (the stream's name and subjects, its interest
retention, that the server creates it only when it is missing): stable since nats-server 2.2, and
checked by tests against the real server at every run. The gateway creates the stream itself when
it is missing, with the same settings as the server would plus limits: bounded by
SQAL_NATS_SAMPLES_MAX_BYTES, and when full the engine refuses new messages (no PUBACK: the board
keeps the reading in its spool and sends it again later) rather than dropping stored ones.

Telemetry (QoS 0: the engine stores nothing for it) is captured by subject in SQAL_TELEMETRY,
bounded by bytes and age, oldest dropped first: a health signal, worth little after a day.

One durable pull consumer on each, `sqal-gateway`, shared by every replica: each message goes to
one replica, explicit acks, redelivered after `ack_wait` when a replica died with it (the dedupe key
absorbs the second copy). `max_ack_pending` bounds what is handed out and not acknowledged across
all replicas: the engine's backpressure. Nothing may delete that consumer: a message published
while no consumer is interested is not kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeoutError
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
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from gateway.nats import subjects

log = logging.getLogger(__name__)

MQTT_MESSAGES = "$MQTT_msgs"  # nats-server's MQTT QoS 1/2 message stream (server/mqtt.go)
MQTT_PREFIX = "$MQTT.msgs."   # its subjects: this prefix + the message's subject
SAMPLES = MQTT_MESSAGES       # where the samples (and status, command results) wait
TELEMETRY = "SQAL_TELEMETRY"
STREAMS = (SAMPLES, TELEMETRY)
DURABLE = "sqal-gateway"
MAX_MSG_SIZE = 65536  # the engine's max_payload; the contract's messages are < 4 KiB


@dataclass(frozen=True)
class StreamLimits:
    replicas: int = 1
    samples_max_bytes: int = 4 << 30    # 4 GiB: about 5 million 8x8 JSON samples waiting for the gateway
    telemetry_max_bytes: int = 512 << 20
    telemetry_max_age_s: float = 24 * 3600
    ack_wait_s: float = 60.0            # a message handed to a replica that died is redelivered after this
    max_ack_pending: int = 20000        # handed out and not acknowledged, across all replicas


def mqtt_messages_config(limits: StreamLimits) -> StreamConfig:
    """The engine's MQTT message stream as the server makes it (subjects, file, interest), with our
    limits."""
    return StreamConfig(name=MQTT_MESSAGES, subjects=[MQTT_PREFIX + ">"], retention=RetentionPolicy.INTEREST,
                        storage=StorageType.FILE, num_replicas=limits.replicas, max_bytes=limits.samples_max_bytes,
                        discard=DiscardPolicy.NEW)


def telemetry_config(limits: StreamLimits) -> StreamConfig:
    return StreamConfig(name=TELEMETRY, subjects=[subjects.TELEMETRY], retention=RetentionPolicy.WORK_QUEUE,
                        storage=StorageType.FILE, num_replicas=limits.replicas, max_msg_size=MAX_MSG_SIZE,
                        max_bytes=limits.telemetry_max_bytes, max_age=limits.telemetry_max_age_s,
                        discard=DiscardPolicy.OLD, description="SQAL device telemetry (MQTT QoS 0)")


def consumer_config(limits: StreamLimits, filters: list[str]) -> ConsumerConfig:
    return ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                          ack_wait=limits.ack_wait_s, max_deliver=-1, max_ack_pending=limits.max_ack_pending,
                          num_replicas=limits.replicas, filter_subjects=filters)


def message_subject(stream_subject: str) -> str:
    """The board's subject of a message of either stream (`$MQTT.msgs.` stripped)."""
    return stream_subject.removeprefix(MQTT_PREFIX)


async def ensure(js: JetStreamContext, limits: StreamLimits, timeout: float = 60.0) -> None:
    """Create the streams and consumers, or bring their settings to these (every replica calls it
    at start; creating what exists with the same settings is a no-op for the engine). A cluster
    that is still electing its JetStream leader answers with timeouts or "unavailable" for a few
    seconds, and one whose nodes have not all joined yet refuses a replicated stream with "no
    suitable peers for placement": both retried until `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await _ensure_once(js, limits)
            return
        except (TimeoutError, NatsTimeoutError, APIError) as exc:
            if isinstance(exc, APIError) and not _not_ready(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            log.info("message engine: JetStream not ready yet (%r); trying again", exc)
            await asyncio.sleep(1.0)


# JetStream's error code for a replicated stream or consumer whose replicas find too few peers
NO_SUITABLE_PEERS = 10005


def _not_ready(exc: APIError) -> bool:
    return isinstance(exc, ServiceUnavailableError) or exc.err_code == NO_SUITABLE_PEERS


def consumer_filters() -> dict[str, list[str]]:
    """The durable consumer's filter subjects, per stream."""
    return {MQTT_MESSAGES: [MQTT_PREFIX + s for s in subjects.QOS1], TELEMETRY: [subjects.TELEMETRY]}


async def _ensure_once(js: JetStreamContext, limits: StreamLimits) -> None:
    try:
        info = await js.stream_info(MQTT_MESSAGES)
    except NotFoundError:
        await js.add_stream(mqtt_messages_config(limits))
        log.info("message engine: stream %s created (the boards' QoS 1 messages)", MQTT_MESSAGES)
    else:
        c = info.config
        if (c.max_bytes, c.discard) != (limits.samples_max_bytes, DiscardPolicy.NEW):
            # only the limits: the rest is the server's (its subjects, retention, replicas)
            c.max_bytes, c.discard = limits.samples_max_bytes, DiscardPolicy.NEW
            await js.update_stream(c)
    await js.add_consumer(MQTT_MESSAGES, consumer_config(limits, consumer_filters()[MQTT_MESSAGES]))
    try:
        await js.stream_info(TELEMETRY)
    except NotFoundError:
        await js.add_stream(telemetry_config(limits))
        log.info("message engine: stream %s created (%s)", TELEMETRY, subjects.TELEMETRY)
    else:
        await js.update_stream(telemetry_config(limits))
    await js.add_consumer(TELEMETRY, consumer_config(limits, consumer_filters()[TELEMETRY]))
