"""gateway/nats/streams.py against a real 3-node cluster on loopback: a gateway that starts while
the cluster is still forming (two nodes of three up: a JetStream leader, too few peers for a stream
of 3 replicas) waits for the third node instead of exiting, and a refusal that waiting cannot cure
is raised at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from gateway.nats import streams
from gateway.nats.cluster import LocalCluster
from gateway.nats.streams import StreamLimits


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", 3)
    try:
        yield c
    finally:
        c.stop()


async def test_a_cluster_still_forming_is_waited_for(cluster: LocalCluster) -> None:
    cluster.start(0)
    cluster.start(1)
    nc = await nats.connect(cluster.nats_urls()[:2], connect_timeout=5)
    try:
        js = nc.jetstream(timeout=3)
        ensuring = asyncio.create_task(streams.ensure(js, StreamLimits(replicas=3), timeout=90))
        await asyncio.sleep(8)
        assert not ensuring.done(), ensuring.exception() if ensuring.done() else None
        started = time.monotonic()
        cluster.start(2)
        await asyncio.wait_for(ensuring, 60)
        assert time.monotonic() - started < 60
        for name in streams.STREAMS:
            info = await js.stream_info(name)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, info.cluster
    finally:
        await nc.close()


async def test_a_refusal_that_waiting_cannot_cure_is_raised_at_once(cluster: LocalCluster) -> None:
    cluster.start()
    nc = await nats.connect(cluster.nats_urls(), connect_timeout=5)
    try:
        js = nc.jetstream(timeout=3)
        await streams.ensure(js, StreamLimits(replicas=3), timeout=60)
        # another stream already holds the telemetry subject: "subjects overlap", not retried
        await js.delete_stream(streams.TELEMETRY)
        await js.add_stream(StreamConfig(name="SQUATTER", subjects=[streams.subjects.TELEMETRY], num_replicas=3))
        started = time.monotonic()
        with pytest.raises(APIError) as refused:
            await streams.ensure(js, StreamLimits(replicas=3), timeout=60)
        assert time.monotonic() - started < 10
        assert "overlap" in str(refused.value.description), refused.value
    finally:
        await nc.close()
