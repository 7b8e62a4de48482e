"""Scale-out, tested: a 3-node NATS cluster on loopback (JetStream streams with 3 replicas, MQTT on
every node), 2 gateway replicas sharing the durable consumers, and a fleet of emulated boards spread
over the nodes. Mid-stream one NATS node is killed (kill -9) and one gateway replica too (SIGKILL);
both are started again. Every reading is stored exactly once, none lost, and both replicas did work.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from emulation.fleet import Fleet
from gateway.nats.cluster import LocalCluster
from tests.fixtures.gateway import GatewayProcess, stored_keys

PER_NODE = 2  # boards connected to each node
INTERVAL = 0.5


async def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await pred():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _gaps(seqs: list[int]) -> list[int]:
    return sorted(set(range(max(seqs) + 1)) - set(seqs)) if seqs else []


async def test_cluster_node_and_replica_killed_mid_stream(database_url: str, tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", 3)
    cluster.start()
    env = {"SQAL_NATS_URL": ",".join(cluster.nats_urls()), "SQAL_NATS_REPLICAS": "3",
           # the dispatcher's commands go through a node that stays up
           "SQAL_MQTT_URL": f"mqtt://sqal-gateway:{cluster.gateway_password}@127.0.0.1:{cluster.nodes[1].mqtt_port}"}
    replicas = [GatewayProcess(database_url, tmp_path / f"gw{i}", env) for i in range(2)]
    fleets: list[Fleet] = []
    try:
        for gw in replicas:
            gw.start()
        for i, url in enumerate(cluster.mqtt_urls()):
            f = Fleet(PER_NODE, url, interval=INTERVAL, seed=30 + i, base_dir=tmp_path / f"fleet{i}",
                      id_prefix=f"ESP32_CL{i + 1}", telemetry_interval=1, resolution=4, config={"keepalive_s": 5})
            f.start()
            fleets.append(f)
        ids = [did for f in fleets for did in f.ids]

        async def stored() -> dict[str, list[tuple[int, int]]]:
            return {did: await stored_keys(database_url, did) for did in ids}

        async def each_has(n: int) -> bool:
            return all(len(k) >= n for k in (await stored()).values())

        await _wait(lambda: each_has(5), 120, "5 readings from every board")

        cluster.kill(0)      # a node, with its boards' connections
        replicas[0].kill()   # and a gateway replica with what it had in hand
        await asyncio.sleep(5)
        cluster.start(0)     # its store is kept: it rejoins and catches up
        replicas[0].start()
        before = {did: len(k) for did, k in (await stored()).items()}
        await _wait(lambda: each_has(max(before.values()) + 5), 120, "5 more readings from every board")

        for f in fleets:
            f.stop()

        async def caught_up() -> bool:
            got = await stored()
            for f in fleets:
                for did, boots in f.reported().items():
                    for boot, v in boots.items():
                        if v.sampled - v.spool > len([s for b, s in got[did] if b == boot]):
                            return False
            return True

        await _wait(caught_up, 120, "every acknowledged reading to be stored")
        work = [gw.metric("sqal_ingest_stored_total") for gw in replicas]
        final = await stored()
    finally:
        for f in fleets:
            f.stop()
        for gw in replicas:
            gw.stop()
        cluster.stop()

    # both replicas stored readings (the restarted one since its restart, its counter starts at 0)
    assert all(w > 0 for w in work), work
    for f in fleets:
        for did, boots in f.reported().items():
            keys = final[did]
            assert len(keys) == len(set(keys)), f"{did}: a reading stored twice"
            for boot, v in boots.items():
                seqs = [s for b, s in keys if b == boot]
                assert len(seqs) >= v.sampled - v.spool, (did, boot, v, len(seqs))
                assert _gaps(seqs) == [], f"{did} boot {boot}: readings missing: {_gaps(seqs)}"
