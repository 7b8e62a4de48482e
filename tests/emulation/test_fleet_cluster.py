"""Scale-out, tested: a 3-node NATS cluster on loopback (JetStream streams with 3 replicas, MQTT on
every node), 2 gateway replicas sharing the durable consumers, and a fleet of emulated boards, each
given the three nodes' URLs (device i starts on node i mod 3). Mid-stream one NATS node is killed
(kill -9) and one gateway replica too (SIGKILL): the boards of the dead node fail over to the others
and their readings keep being stored while it is down; then both are started again. Every reading
is stored exactly once, none lost, and both replicas did work.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from emulation.fleet import Fleet
from gateway.nats.cluster import LocalCluster
from tests.fixtures.gateway import GatewayProcess, stored_keys

N = 6  # boards: two start on each node
INTERVAL = 0.5


async def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await pred():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def _engine_state(cluster: LocalCluster) -> str:
    """The streams' and the gateway consumer's counts, for a failure message."""
    import nats

    from gateway.nats import streams

    nc = await nats.connect(cluster.nats_urls(), connect_timeout=5, max_reconnect_attempts=3)
    try:
        js = nc.jetstream()
        out = []
        for name in streams.STREAMS:
            si = await js.stream_info(name)
            ci = await js.consumer_info(name, streams.DURABLE)
            out.append(f"{name}: {si.state.messages} msgs, leader {si.cluster.leader if si.cluster else '?'}; "
                       f"consumer pending {ci.num_pending} ack_pending {ci.num_ack_pending} "
                       f"redelivered {ci.num_redelivered} waiting {ci.num_waiting} "
                       f"leader {ci.cluster.leader if ci.cluster else '?'}")
        return "\n".join(out)
    except Exception as exc:  # noqa: BLE001 - a diagnostic
        return f"engine state unavailable: {exc!r}"
    finally:
        await nc.close()


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
        fleet = Fleet(N, cluster.mqtt_urls(), interval=INTERVAL, seed=30, base_dir=tmp_path / "fleet",
                      id_prefix="ESP32_CL", telemetry_interval=1, resolution=4,
                      config={"keepalive_s": 5, "reconnect_cap_s": 2})
        fleet.start()
        fleets.append(fleet)
        ids = fleet.ids
        on_node1 = ids[0::3]  # device i starts on node i mod 3

        async def stored() -> dict[str, list[tuple[int, int]]]:
            return {did: await stored_keys(database_url, did) for did in ids}

        async def each_has(n: int) -> bool:
            return all(len(k) >= n for k in (await stored()).values())

        await _wait(lambda: each_has(5), 120, "5 readings from every board")

        cluster.kill(0)      # a node, with its boards' connections
        replicas[0].kill()   # and a gateway replica with what it had in hand
        at_kill = {did: len(k) for did, k in (await stored()).items()}

        async def failed_over() -> bool:
            now = await stored()
            return all(len(now[did]) >= at_kill[did] + 5 for did in on_node1)

        # node 1's boards moved to the other nodes: their readings keep coming while it is down
        try:
            await _wait(failed_over, 60, "node 1's boards to deliver through the other nodes")
        except AssertionError:
            raise AssertionError("node 1's boards did not deliver through the other nodes\n"
                                 + "\n".join(f"--- {d.device_id}\n{d.log()[-400:]}" for d in fleet.devices[0::3])
                                 + f"\n--- n2\n{cluster.log(1)[-3000:]}") from None
        assert all(f"trying the next broker, 127.0.0.1:{cluster.nodes[1].mqtt_port}" in d.log()
                   for d in fleet.devices[0::3]), [d.log()[-500:] for d in fleet.devices[0::3]]
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

        try:
            await _wait(caught_up, 120, "every acknowledged reading to be stored")
        except AssertionError:
            got = await stored()
            behind = {did: (max(((b, v.sampled, v.spool) for b, v in boots.items()), default=None),
                            len(got[did])) for did, boots in fleet.reported().items()}
            raise AssertionError(f"not caught up: {behind}\n{await _engine_state(cluster)}\n"
                                 + "\n".join(f"--- gw{i}\n{gw.log()[-1500:]}" for i, gw in enumerate(replicas))
                                 + "\n".join(f"--- {d.device_id}\n{d.log()[-300:]}" for d in fleet.devices)) from None
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
