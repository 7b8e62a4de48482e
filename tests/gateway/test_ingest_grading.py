"""The grading worker pool: same results as prepare() in this process, in order, and it survives its
workers dying (killed from outside, or killed by one message) without losing or blaming neighbours.

Workers import this module to run `poisoned_prepare`: its heavy imports (the app, the MQTT and
PostgreSQL helpers) are kept inside the functions that need them, so a fresh worker starts fast."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqalfw import codec

from gateway.ingest.envelope import Envelope
from gateway.ingest.grading import Grader, Result, Wire, _dumps, prepare_wire
from gateway.ingest.prepare import ClockPolicy, Prepared, prepare
from registry.samples import ENCODED, JsonText, encode_row
from tests.gateway.ingest_support import sample_bytes

if TYPE_CHECKING:
    import asyncpg

    from tests.fixtures.mqtt import NatsBroker

NOW = datetime.now(UTC)
POISON = b"POISON: this payload kills the worker that grades it"


def poisoned_prepare(wires: Sequence[Wire], policy: ClockPolicy, payload_limit: int) -> list[Result]:
    """A worker job that dies (no exception, no cleanup) on one payload: a crash in C code or the
    kernel's OOM killer looks like this to the pool."""
    if any(w[2] == POISON for w in wires):
        os._exit(3)
    return prepare_wire(wires, policy, payload_limit)


def mixed(n: int, dev: str = "ESP32_DEMO_LL_01") -> list[Envelope]:
    """Valid JSON and binary samples (several clock cases), hostile payloads, status, telemetry and a
    WebSocket frame, in one stream."""
    from tests.gateway.ingest_support import sample

    topic = codec.topic(dev, "sample")
    out: list[Envelope] = []
    now_ms = int(NOW.timestamp() * 1000)
    for i in range(n):
        s = sample(dev, boot=2, seq=i, ts=now_ms - (i % 3) * 4_000_000, synced=i % 7 != 0, seed=i)
        k = i % 10
        if k == 3:
            payload = codec.encode_sample_bin(s)
        elif k == 5:
            payload = b'{"v":1,"device_id":"' + dev.encode() + b'","seq":NaN}'
        elif k == 7:
            s["device_id"] = "ESP32_SPOOF_99"
            payload = codec.encode_sample(s)
        else:
            payload = codec.encode_sample(s)
        out.append(Envelope("mqtt", topic, bytes(payload), NOW))
    out.append(Envelope("mqtt", codec.topic(dev, "status"),
                        codec.encode_status({"v": 1, "device_id": dev, "state": "online", "boot": 2, "fw": "0.1.0", "ts": now_ms}),
                        NOW))
    out.append(Envelope("mqtt", "sqal/v1/bad id!/sample", b"{}", NOW))
    out.append(Envelope("ws", "/ws/sensors/", b"", NOW, obj=sample(dev, seq=n + 1), kind_hint="sample"))
    return out


def comparable(p: Prepared) -> dict[str, Any]:
    """What the pipeline stores and answers from a Prepared. A row graded in a worker carries its COPY
    line instead of the JSON columns: it must be the very line the registry makes from the row
    prepare() gives in this process (JSON columns encoded by the workers' encoder)."""
    row = None
    if p.row is not None:
        row = dict(p.row)
        line = row.pop(ENCODED, None)
        if line is None:  # prepare() in this process: make the line the worker should have made
            full = {**row, "features": JsonText(_dumps(row["features"])), "raw": JsonText(_dumps(row["raw"]))}
            line = encode_row(full)
        for k in ("features", "raw"):
            row.pop(k, None)
        row["copy_line"] = line
    return {"kind": p.kind, "device_id": p.device_id, "row": row, "data": p.data, "reject": p.reject,
            "clock_flags": p.clock_flags, "env": p.env}


def reference(envs: list[Envelope]) -> list[dict[str, Any]]:
    return [comparable(prepare(e, ClockPolicy(), 4096)) for e in envs]


@pytest.mark.parametrize("workers", [0, 1, 2])
async def test_pool_grades_exactly_like_prepare_in_order(workers: int) -> None:
    envs = mixed(300)
    grader = Grader(workers)
    await grader.start()
    try:
        got = await grader.prepare(envs)
    finally:
        await grader.close()
    assert [comparable(p) for p in got] == reference(envs)
    kinds = {p.kind for p in got}
    assert kinds == {"sample", "reject", "status"}
    rows = [p.row for p in got if p.row is not None]
    # encoded in the worker: the event loop gets the COPY line, not the JSON columns to encode
    assert rows and all(type(r[ENCODED]) is bytes and "features" not in r and "raw" not in r for r in rows)
    assert all(math.isfinite(r["score"]) for r in rows)


async def test_workers_killed_mid_batch_nothing_lost_or_blamed() -> None:
    envs = mixed(1000)
    grader = Grader(2)
    await grader.start()
    try:
        task = asyncio.create_task(grader.prepare(envs))
        await asyncio.sleep(0.02)
        assert not task.done()
        pids = grader.worker_pids()
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        got = await task
        assert grader.restarts >= 1 and grader.crash_rejects == 0
        assert [comparable(p) for p in got] == reference(envs)
        assert not set(grader.worker_pids()) & set(pids)  # fresh workers
        again = await grader.prepare(envs[:100])  # and the rebuilt pool keeps working
        assert [comparable(p) for p in again] == reference(envs[:100])
    finally:
        await grader.close()


async def test_a_message_that_kills_its_worker_becomes_a_reject_neighbours_graded() -> None:
    dev = "ESP32_DEMO_LL_02"
    envs = mixed(120, dev)
    poison = Envelope("mqtt", codec.topic(dev, "sample"), POISON, NOW)
    envs.insert(57, poison)
    grader = Grader(2, fn=poisoned_prepare)
    await grader.start()
    try:
        got = await grader.prepare(envs)
    finally:
        await grader.close()
    assert len(got) == len(envs) and [p.env for p in got] == envs
    bad = got.pop(57)
    envs.pop(57)
    assert bad.kind == "reject" and bad.reject is not None and bad.device_id == dev
    assert bad.reject.reason_key == "internal" and "grading worker died" in bad.reject.reason
    assert bytes(bad.reject.payload) == POISON
    assert grader.crash_rejects == 1 and grader.restarts >= 2
    assert [comparable(p) for p in got] == reference(envs)


async def test_gateway_keeps_every_reading_when_grading_workers_die(db_pool: asyncpg.Pool,
                                                                   nats_broker: NatsBroker) -> None:
    from gateway.ingest.service import IngestService, IngestSettings
    from tests.gateway.ingest_support import Publisher, metric, sample, uid, wait_until

    svc = IngestService(db_pool, IngestSettings(nats_url=nats_broker.nats_url, mqtt_url=nats_broker.url, workers=2,
                                                batch_max=100, flush_ms=20))
    await svc.start()
    devs = [uid(), uid()]
    pub = Publisher(nats_broker.host, nats_broker.port)
    try:
        killed: list[int] = []

        async def killer() -> None:  # kill the workers twice while the stream is being graded
            for _ in range(2):
                await wait_until(lambda: _stored_some(db_pool, devs, len(killed) * 150 + 50), timeout=60, step=0.01)
                pids = svc.pipeline.grader.worker_pids()
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed.extend(pids)

        k = asyncio.create_task(killer())
        for seq in range(300):
            for d in devs:
                pub.publish(codec.topic(d, "sample"), codec.encode_sample(sample(d, boot=1, seq=seq)))
            if seq % 50 == 0:
                await asyncio.sleep(0.05)
        for seq in range(100):  # redelivered duplicates still absorbed
            pub.publish(codec.topic(devs[0], "sample"), codec.encode_sample(sample(devs[0], boot=1, seq=seq)))
        await asyncio.to_thread(pub.wait_all, 60)
        await asyncio.wait_for(k, 60)

        async def all_stored() -> bool:
            return await db_pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = ANY($1)", devs) == 600

        assert await wait_until(all_stored, timeout=60)
        assert await svc.pipeline.drain(20)
        assert len(killed) >= 2 and svc.pipeline.grader.restarts >= 1
        n, distinct = await db_pool.fetchrow("SELECT count(*), count(DISTINCT (device_id, boot, seq)) FROM sqal_samples "
                                             "WHERE device_id = ANY($1)", devs)
        assert n == distinct == 600
        assert await db_pool.fetchval("SELECT count(*) FROM ingest_rejects") == 0
        assert metric(svc.metrics, "sqal_ingest_duplicates_total") == 100
    finally:
        pub.close()
        await svc.stop()


async def _stored_some(pool: asyncpg.Pool, devs: list[str], n: int) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM sqal_samples WHERE device_id = ANY($1)", devs) >= n)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_grading_workers_exit_when_the_gateway_is_sigkilled(database_url: str, nats_broker: NatsBroker,
                                                                  tmp_path: Any) -> None:
    import psutil

    from tests.gateway.ingest_support import GatewayProcess

    gw = GatewayProcess(database_url, nats_broker, tmp_path, extra_env={"SQAL_INGEST_WORKERS": "2"})
    await asyncio.to_thread(gw.start)
    try:
        assert gw.proc is not None
        kids = psutil.Process(gw.proc.pid).children(recursive=True)
        workers = [p.pid for p in kids if "forkserver" in " ".join(p.cmdline())]
        assert len(workers) >= 2  # the fork server and its workers
    finally:
        await asyncio.to_thread(gw.kill)
    for _ in range(100):
        if not any(_alive(pid) for pid in workers):
            break
        await asyncio.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)], "grading processes outlived the gateway"


def test_large_chunk_results_come_back_through_a_file_small_ones_inline(tmp_path: Path) -> None:
    from gateway.ingest.grading import INLINE_MAX, _unspill, run_spilled

    def fn(wires: Any, policy: Any, limit: int) -> list[Any]:
        return [("x" * n,) for n in wires]

    sizes: Any = [10]  # fn's stand-in wires: the sizes of the results to make
    kind, value = run_spilled(fn, str(tmp_path), sizes, ClockPolicy(), 0)
    assert kind == "inline" and len(value) <= INLINE_MAX  # one pipe write of at most PIPE_BUF: atomic
    assert _unspill(kind, value) == [("x" * 10,)]
    sizes = [200_000, 5]
    kind, value = run_spilled(fn, str(tmp_path), sizes, ClockPolicy(), 0)
    assert kind == "file" and len(value) < 200  # only the file's name crosses the shared pipe
    assert _unspill(kind, value) == [("x" * 200_000,), ("x" * 5,)]
    assert list(tmp_path.iterdir()) == []  # read once, then gone


async def test_grader_spill_directory_goes_with_the_grader() -> None:
    g = Grader(1)
    await g.start()
    try:
        envs = [Envelope("mqtt", codec.topic("ESP32_SPILL_01", "sample"), sample_bytes("ESP32_SPILL_01", boot=1, seq=i),
                         datetime.now(UTC)) for i in range(40)]
        out = await g.prepare(envs)
        assert [p.kind for p in out] == ["sample"] * 40 and g._spill_dir is not None
        spill = Path(g._spill_dir)
        assert spill.is_dir() and list(spill.iterdir()) == []
    finally:
        await g.close()
    assert not spill.exists()
