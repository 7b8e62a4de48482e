"""/ws/realtime/: devices and lots pushed as they change (from any writer), a slow client losing old
messages and told to resync, the lot event cursor across out-of-order commits, and a departed client
that must not keep the server from shutting down."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from fastapi import FastAPI
from sqalfw import codec

from gateway.app import create_app
from gateway.config import Settings
from gateway.ingest.metrics import IngestMetrics
from gateway.ingest.realtime import LotEventCursor, RealtimeHub
from registry import feedback, gavage, live, lots
from tests.fixtures.gateway import GatewayProcess, serve_app
from tests.fixtures.mqtt import NatsBroker
from tests.gateway.ingest_support import Publisher, metric, sample, uid
from tests.registry.helpers import LOT_ARGS, lot_in_state, new_lot


async def test_server_stops_promptly_after_a_realtime_client_left(gateway: GatewayProcess) -> None:
    url = f"ws://127.0.0.1:{gateway.port}/ws/realtime/"
    async with websockets.connect(url) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "snapshot" and "grade_counts" in first
    # the client is gone and nothing is being published: SIGTERM must still end the server quickly
    assert gateway.proc is not None
    gateway.proc.terminate()
    try:
        code = gateway.proc.wait(15)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"gateway still running 15 s after SIGTERM:\n{gateway.log()[-2000:]}") from None
    assert code == 0, gateway.log()[-2000:]


# ---- devices and lots pushed ---------------------------------------------------------------------------

@pytest.fixture
async def served(database_url: str, nats_broker: NatsBroker, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, int]]:
    """The gateway in this event loop on a real port (uvicorn), its ingest on a test engine."""
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, nats_url=nats_broker.nats_url,
                              mqtt_url=nats_broker.url, ingest_flush_ms=10))
    async with serve_app(app) as port:
        yield app, port


async def next_message(ws: Any, pred: Callable[[dict[str, Any]], bool], timeout: float = 10,
                       seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The first message (from now on) for which `pred` holds; the others go to `seen`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no such message in {timeout} s; got {[m.get('type') for m in seen or []]}")
        try:
            msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            continue
        if pred(msg):
            return msg  # type: ignore[no-any-return]
        if seen is not None:
            seen.append(msg)


def lot_msg(lot_id: str, event: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "lot" and m["lot_id"] == lot_id and event in m["events"]


async def test_device_and_lot_changes_are_pushed(served: tuple[FastAPI, int], nats_broker: NatsBroker,
                                                 database_url: str) -> None:
    app, port = served
    hub: RealtimeHub = app.state.ingest.hub
    dev = uid("ESP32_RT_LL")
    other_writer = await asyncpg.create_pool(database_url, min_size=1, max_size=2)  # not the gateway's pool
    pub = Publisher(nats_broker.host, nats_broker.port)
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/realtime/") as ws, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert json.loads(await ws.recv())["type"] == "snapshot"
            assert hub.watching

            # a device's birth, then a sample: its row as GET /api/devices/{id} answers it, each time
            status = {"v": 1, "device_id": dev, "state": "online", "boot": 3, "fw": "0.1.0", "ts": 1000,
                      "location": "Ligne A"}
            pub.publish(codec.topic(dev, "status"), bytes(codec.encode_status(status)))
            m = await next_message(ws, lambda m: m["type"] == "device" and m["device"]["id"] == dev)
            assert (m["device"]["state"], m["device"]["boot"], m["device"]["location"]) == ("online", 3, "Ligne A")
            pub.publish(codec.topic(dev, "sample"), bytes(codec.encode_sample(sample(dev, boot=3, seq=0))))
            m = await next_message(ws, lambda m: m["type"] == "device" and m["device"]["id"] == dev
                                   and m["device"]["samples_stored"] == 1)
            assert m["device"] == (await http.get(f"/api/devices/{dev}")).json()
            pub.publish(codec.topic(dev, "status"), bytes(codec.encode_status({**status, "state": "offline"})))
            m = await next_message(ws, lambda m: m["type"] == "device" and m["device"]["id"] == dev)
            assert m["device"]["state"] == "offline"

            # a lot created through this gateway's API
            r = await http.post("/api/lots", json=dict(LOT_ARGS))
            assert r.status_code == 201, r.text
            lot_id = r.json()["id"]
            m = await next_message(ws, lot_msg(lot_id, "lot_created"))
            assert m["lot"]["state"] == "created" and m["lot"] == (await http.get(f"/api/lots/{lot_id}")).json()

            # changes made by another process's connection (a script, another replica): seen all the same
            await gavage.record_feeding(other_writer, lot_id, day=1, moment="morning", planned_dose_g=200,
                                        actual_dose_g=203, mean_weight_g=4500, live_ducks=49, mortality_pct=2)
            m = await next_message(ws, lot_msg(lot_id, "gavage_feeding"))
            assert m["events"] == ["record_feeding", "gavage_feeding"]
            assert (m["lot"]["state"], m["lot"]["current_day"], m["lot"]["live_ducks"], m["lot"]["mortality_pct"],
                    m["lot"]["maize_total_per_duck_g"]) == ("gavage", 1, 49, 2.0, 203.0)
            await lots.suspend(other_writer, lot_id, "check")
            m = await next_message(ws, lot_msg(lot_id, "suspend"))
            assert m["lot"]["state"] == "suspended" and m["lot"]["suspended_from"] == "gavage"

            # inspection closed, consumer feedback
            inspected = await lot_in_state(other_writer, "inspected", device_id=uid("ESP32_RT_LS"))
            m = await next_message(ws, lot_msg(inspected, "close_inspection"))
            assert m["lot"]["state"] == "inspected" and m["lot"]["sample_count"] == 1 and m["lot"]["itm"] is not None
            await feedback.add_feedback(other_writer, lot_id=inspected, rating=4)
            m = await next_message(ws, lot_msg(inspected, "consumer_feedback"))  # (the dispatcher may
            assert m["lot"]["id"] == inspected  # have made the lot's products meanwhile: product_created)
        # the client left: nothing is read for nobody
        deadline = time.monotonic() + 5
        while hub.watching and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not hub.watching and hub.subscribers == 0
    finally:
        pub.close()
        await other_writer.close()


async def test_a_slow_client_loses_the_oldest_messages_and_is_told_to_resync(served: tuple[FastAPI, int]) -> None:
    app, port = served
    hub: RealtimeHub = app.state.ingest.hub
    hub.queue_size = 5  # per client, from the next subscriber on
    before = metric(hub.metrics, "sqal_realtime_dropped_total")
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/realtime/") as ws:
        snap = json.loads(await ws.recv())
        assert snap["type"] == "snapshot" and "resync" not in snap
        for i in range(12):  # in one go: the handler cannot take any before the 6th arrives
            hub._publish({"type": "probe", "i": i})
        got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(6)]
    assert got[0]["type"] == "snapshot" and got[0]["resync"] is True and got[0]["lost"] == 7
    assert got[0]["grade_counts"] == snap["grade_counts"]
    assert [m["i"] for m in got[1:]] == [7, 8, 9, 10, 11]  # the newest kept, in order
    assert metric(hub.metrics, "sqal_realtime_dropped_total") == before + 7


# ---- the lot event cursor ------------------------------------------------------------------------------

def test_cursor_takes_each_event_once_and_waits_for_gaps() -> None:
    c = LotEventCursor(after=10, grace_s=5)
    assert c.take([(11, "L1", "a"), (12, "L2", "b"), (13, "L1", "c"), (14, "L1", "a")], now=0) == \
        {"L1": ["a", "c"], "L2": ["b"]}
    assert (c.after, c.seen) == (14, set())
    # 15 is not committed yet, 16 is: 16 now, 15 when it comes
    assert c.take([(16, "L3", "x")], now=1) == {"L3": ["x"]}
    assert c.after == 14 and c.take([(16, "L3", "x")], now=2) == {}
    assert c.take([(15, "L4", "y"), (16, "L3", "x")], now=3) == {"L4": ["y"]}
    assert (c.after, c.seen, c.gap_since) == (16, set(), None)
    # 17 never comes (rolled back): given up after the grace time, not before
    assert c.take([(18, "L5", "z")], now=10) == {"L5": ["z"]}
    assert c.take([(18, "L5", "z")], now=14.9) == {} and c.after == 16
    assert c.take([(18, "L5", "z")], now=15) == {} and (c.after, c.seen) == (18, set())
    # two gaps: each gets its own grace time
    assert c.take([(20, "A", "a"), (22, "B", "b")], now=20) == {"A": ["a"], "B": ["b"]}
    c.take([], now=25)
    assert c.after == 20 and c.seen == {22}
    c.take([], now=29)
    assert c.after == 20
    c.take([], now=30)
    assert (c.after, c.seen) == (22, set())


async def test_lot_messages_across_out_of_order_commits(db_pool: asyncpg.Pool) -> None:
    """Transaction A takes the lower event ids but commits last: its lot is still sent, once; a gap
    left by a rolled back transaction is given up after the grace time."""
    hub = RealtimeHub(IngestMetrics())
    sub = hub.subscribe()  # no pool: no watcher, the test turns the crank
    lot_x, lot_y = await new_lot(db_pool), await new_lot(db_pool)
    cursor = LotEventCursor(await live.last_lot_event_id(db_pool), grace_s=0.5)

    def sent() -> list[tuple[str, list[str]]]:
        out = []
        while not sub.queue.empty():
            m = sub.queue.get_nowait()
            out.append((m["lot_id"], m["events"]))
        return out

    feeding: dict[str, Any] = {"day": 1, "moment": "morning", "planned_dose_g": 200, "actual_dose_g": 200}
    async with db_pool.acquire() as conn_a:
        tx = conn_a.transaction()
        await tx.start()
        await gavage.record_feeding(conn_a, lot_x, **feeding)
        lot_b = await new_lot(db_pool)
        await hub.flush_lots(db_pool, cursor)
        assert sent() == [(lot_b, ["lot_created"])]
        await tx.commit()
    await hub.flush_lots(db_pool, cursor)
    assert sent() == [(lot_x, ["record_feeding", "gavage_feeding"])]
    await hub.flush_lots(db_pool, cursor)
    assert sent() == [] and cursor.seen == set()

    async with db_pool.acquire() as conn_c:
        tx = conn_c.transaction()
        await tx.start()
        await gavage.record_feeding(conn_c, lot_y, **feeding)
        lot_d = await new_lot(db_pool)
        await tx.rollback()
    await hub.flush_lots(db_pool, cursor)
    assert sent() == [(lot_d, ["lot_created"])] and cursor.seen
    await asyncio.sleep(0.6)
    await hub.flush_lots(db_pool, cursor)
    assert sent() == [] and cursor.after == await live.last_lot_event_id(db_pool) and cursor.seen == set()
