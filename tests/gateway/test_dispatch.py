"""The dispatcher: ready lots -> online devices over MQTT (the message engine's MQTT listener, a real
nats-server; a paho client playing the device), inspection closed after N samples, clear_lot, products with valid GTINs; no double
assignment with two replicas; a lot leaves a device that went offline."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as paho
import pytest
from sqalfw import codec

from gateway.app import create_app
from gateway.config import Settings
from gateway.dispatch import Dispatcher
from registry import devices, gavage, inspection_queue, lots
from registry.gs1 import check_digit_ok
from tests.gateway.ingest_support import sample
from tests.registry.helpers import new_lot


class FakeDevice:
    """A SQAL device as the broker sees it: birth status, answers commands, publishes samples.
    `ignore_first` commands are dropped unanswered (to exercise the re-send)."""

    def __init__(self, host: str, port: int, device_id: str, ignore_first: int = 0) -> None:
        self.device_id = device_id
        self.ignore = ignore_first
        self.lot_id: str | None = None
        self.commands: list[dict[str, Any]] = []
        self.seq = 0
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}")
        self.client.will_set(codec.topic(device_id, "status"),
                             bytes(codec.encode_status({"v": 1, "device_id": device_id, "state": "offline",
                                                        "boot": 1, "fw": "0.1.0"})), qos=1, retain=True)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(codec.topic(device_id, "cmd"), qos=1)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def online(self) -> None:
        self.client.publish(codec.topic(self.device_id, "status"),
                            bytes(codec.encode_status({"v": 1, "device_id": self.device_id, "state": "online",
                                                       "boot": 1, "fw": "0.1.0", "location": "Ligne A - Landes",
                                                       "ts": int(time.time() * 1000)})), qos=1, retain=True)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        cmd = codec.decode_command(msg.payload)
        with self._lock:
            self.commands.append(cmd)
            if self.ignore > 0:
                self.ignore -= 1
                return
            if cmd["cmd"] == "assign_lot":
                self.lot_id = cmd["args"]["lot_id"]
                data = {"lot_id": self.lot_id}
            else:
                self.lot_id = None
                data = {}
        client.publish(codec.topic(self.device_id, "cmd/result"),
                       bytes(codec.encode_result(cmd["id"], cmd["cmd"], True, data)), qos=1)

    def publish_samples(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            s = sample(self.device_id, 1, self.seq, lot_id=self.lot_id)
            self.client.publish(codec.topic(self.device_id, "sample"), bytes(codec.encode_sample(s)), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def wait_for(pred: Any, timeout: float = 30.0, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


async def feed_to_ready(pool: asyncpg.Pool, days: int = 2) -> str:
    lot_id = await new_lot(pool, planned_duration_days=days)
    for day in range(1, days + 1):
        for moment in ("morning", "evening"):
            await gavage.record_feeding(pool, lot_id, day=day, moment=moment, planned_dose_g=300,
                                        actual_dose_g=300, ready_for_slaughter=(day == days and moment == "evening"))
    return lot_id


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path, nats_broker: Any,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    monkeypatch.setenv("SQAL_INSPECTION_SAMPLES", "6")
    monkeypatch.setenv("SQAL_DISPATCH_POLL_S", "0.2")
    monkeypatch.setenv("SQAL_DISPATCH_CMD_TIMEOUT_S", "1.0")
    monkeypatch.setenv("SQAL_PRODUCTS_PER_LOT", "3")
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, nats_url=nats_broker.nats_url,
                              mqtt_url=nats_broker.url))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sqal.test") as c:
        yield app, c


async def test_assign_inspect_close_and_products(gateway: tuple[Any, httpx.AsyncClient], nats_broker: Any) -> None:
    app, client = gateway
    pool = app.state.pool
    assert app.state.dispatcher is not None and app.state.dispatcher.settings.inspection_samples == 6
    dev_id = f"ESP32_DEMO_LL_{uuid.uuid4().hex[:4].upper()}"
    dev = FakeDevice(nats_broker.host, nats_broker.port, dev_id, ignore_first=1)
    try:
        lot_id = await feed_to_ready(pool)
        # no device online yet: the lot waits in `ready`
        await asyncio.sleep(0.6)
        assert (await lots.get_lot(pool, lot_id))["state"] == "ready"
        dev.online()
        await wait_for(lambda: _state(pool, lot_id, "inspecting"))
        # the first assign_lot was dropped by the device: the dispatcher re-sends the same command id
        await wait_for(lambda: _async(dev.lot_id == lot_id), timeout=15)
        assigns = [c for c in dev.commands if c["cmd"] == "assign_lot"]
        assert len(assigns) >= 2 and len({c["id"] for c in assigns}) == 1
        assert app.state.dispatcher.counters.commands_resent >= 1
        a = (await inspection_queue.open_inspections(pool))[0]
        assert (a["lot_id"], a["device_id"]) == (lot_id, dev_id)
        assert a["device_id"] == dev_id

        dev.publish_samples(4)
        await asyncio.sleep(1.0)
        assert (await lots.get_lot(pool, lot_id))["state"] == "inspecting"  # 4 < 6 samples: still open
        dev.publish_samples(2)
        lot = await wait_for(lambda: _state(pool, lot_id, "inspected"))
        assert lot["sample_count"] == 6 and sum(lot["grade_distribution"].values()) == 6
        assert lot["mean_liver_weight_g"] and lot["itm"] == pytest.approx(1200 / lot["mean_liver_weight_g"], rel=1e-3)
        await wait_for(lambda: _async(dev.lot_id is None and dev.commands[-1]["cmd"] == "clear_lot"), timeout=10)
        assert not await inspection_queue.device_has_open_assignment(pool, dev_id)

        # products are created one per transaction: wait for all three, not the first
        r = await wait_for(lambda: _n_products(client, lot_id, 3))
        assert len(r) == 3
        for p in r:
            assert check_digit_ok(p["gtin"]) and p["qr_uri"] == f"https://id.gs1.org/01/{p['gtin']}/10/{lot_id}"
        status = (await client.get("/api/dispatch/status")).json()
        assert status["enabled"] and status["closed"] == 1 and status["products"] == 3
        assert any("inspection closed" in e for e in status["events"])
        types = [e["type"] for e in (await client.get(f"/api/lots/{lot_id}/timeline")).json()["events"]]
        assert types.index("mark_ready") < types.index("assign") < types.index("sqal_samples") \
            < types.index("close_inspection") < types.index("product_created")
    finally:
        dev.close()


async def _n_products(client: httpx.AsyncClient, lot_id: str, n: int) -> Any:
    r = await _products(client, lot_id)
    return r if r and len(r) >= n else None


async def _async(v: Any) -> Any:
    return v


async def _state(pool: asyncpg.Pool, lot_id: str, state: str) -> dict[str, Any] | None:
    lot = await lots.get_lot(pool, lot_id)
    return lot if lot["state"] == state else None


async def _products(client: httpx.AsyncClient, lot_id: str) -> list[dict[str, Any]] | None:
    r = await client.get("/api/consumer/products", params={"lot_id": lot_id})
    return r.json() or None


async def _online(pool: asyncpg.Pool, device_id: str, state: str = "online", at: datetime | None = None) -> None:
    await devices.apply_status(pool, {"device_id": device_id, "state": state, "boot": 1, "fw": "0.1.0",
                                      "ts": int(time.time() * 1000)}, at or datetime.now(UTC))


async def test_two_replicas_never_double_assign(db_pool: asyncpg.Pool, nats_broker: Any) -> None:
    ds = Settings(inspection_samples=5, dispatch_poll_s=0.1, products_per_lot=0)
    d1 = Dispatcher(db_pool, nats_broker.url, ds)
    d2 = Dispatcher(db_pool, nats_broker.url, ds)
    devs = [f"ESP32_R_{i:02d}" for i in range(3)]
    for d in devs:
        await _online(db_pool, d)
    ready = [await feed_to_ready(db_pool, days=1) for _ in range(5)]
    for _ in range(3):
        await asyncio.gather(d1.run_once(), d2.run_once(), d1.run_once(), d2.run_once())
    rows = await db_pool.fetch("SELECT lot_id, device_id FROM device_assignments")
    assert len(rows) == 3
    assert sorted(r["device_id"] for r in rows) == devs  # each device exactly once
    assert len({r["lot_id"] for r in rows}) == 3
    # which 3 lots win is not determined: concurrent calls lock different lots (SKIP LOCKED) and race
    # for the devices; oldest-first holds for one dispatcher (test below)
    assert {r["lot_id"] for r in rows} <= set(ready)
    assert d1.counters.assigned + d2.counters.assigned == 3
    states = {lid: (await lots.get_lot(db_pool, lid))["state"] for lid in ready}
    assert sorted(states.values()) == ["inspecting"] * 3 + ["ready"] * 2


async def test_one_dispatcher_assigns_the_oldest_ready_lot_first(db_pool: asyncpg.Pool,
                                                                  nats_broker: Any) -> None:
    d = Dispatcher(db_pool, nats_broker.url, Settings(inspection_samples=5, products_per_lot=0))
    ready = [await feed_to_ready(db_pool, days=1) for _ in range(3)]
    await _online(db_pool, "ESP32_OF_01")
    await d.run_once()
    rows = await db_pool.fetch("SELECT lot_id, device_id FROM device_assignments")
    assert [(r["lot_id"], r["device_id"]) for r in rows] == [(ready[0], "ESP32_OF_01")]
    await _online(db_pool, "ESP32_OF_02")
    await d.run_once()
    assert {r["lot_id"] for r in await db_pool.fetch("SELECT lot_id FROM device_assignments")} == set(ready[:2])


async def test_offline_device_releases_its_lot(db_pool: asyncpg.Pool, nats_broker: Any) -> None:
    ds = Settings(inspection_samples=5, dispatch_reassign_s=30, products_per_lot=0)
    d = Dispatcher(db_pool, nats_broker.url, ds)
    await _online(db_pool, "ESP32_OFF_01")
    lot_id = await feed_to_ready(db_pool, days=1)
    await d.run_once()
    assert (await inspection_queue.open_inspections(db_pool))[0]["device_id"] == "ESP32_OFF_01"
    # goes offline, recently: the lot stays with it
    await _online(db_pool, "ESP32_OFF_01", "offline")
    await _online(db_pool, "ESP32_OFF_02")
    await d.run_once()
    assert [i["device_id"] for i in await inspection_queue.open_inspections(db_pool)] == ["ESP32_OFF_01"]
    # offline for longer than dispatch_reassign_s: released, then given to the online device
    await devices.apply_status(db_pool, {"device_id": "ESP32_OFF_01", "state": "offline", "boot": 2, "fw": "0.1.0"},
                               datetime.now(UTC) - timedelta(seconds=60))
    await d.run_once()
    open_now = await inspection_queue.open_inspections(db_pool)
    assert [(i["lot_id"], i["device_id"]) for i in open_now] == [(lot_id, "ESP32_OFF_02")]
    assert d.counters.released == 1
    ev = await db_pool.fetch("SELECT type, data FROM lot_events WHERE lot_id = $1 ORDER BY id", lot_id)
    assert [e["type"] for e in ev][-3:] == ["assign", "unassigned", "assign"]
    assert json.loads(ev[-2]["data"])["reason"] == "device offline"


async def test_non_compliant_lot_gets_no_product(db_pool: asyncpg.Pool, nats_broker: Any) -> None:
    from registry import samples

    ds = Settings(inspection_samples=4, products_per_lot=2)
    d = Dispatcher(db_pool, nats_broker.url, ds)
    await _online(db_pool, "ESP32_NC_01")
    await _online(db_pool, "ESP32_NC_02")
    bad, good = await feed_to_ready(db_pool, days=1), await feed_to_ready(db_pool, days=1)
    await d.run_once()
    by_lot = {i["lot_id"]: i["device_id"] for i in await inspection_queue.open_inspections(db_pool)}
    now = datetime.now(UTC)
    for lot_id, grades in ((bad, ["REJECT", "REJECT", "B", "C"]), (good, ["A", "B", "REJECT", "A+"])):
        await samples.store_samples(db_pool, [
            {"device_id": by_lot[lot_id], "boot": 1, "seq": i, "measured_at": now + timedelta(milliseconds=i),
             "grade": g, "score": 0.5, "weight_g": 600.0} for i, g in enumerate(grades)])
    await d.run_once()
    assert (await lots.get_lot(db_pool, bad))["state"] == "inspected"
    assert (await lots.get_lot(db_pool, good))["state"] == "inspected"
    n = {lid: await db_pool.fetchval("SELECT count(*) FROM products WHERE lot_id = $1", lid) for lid in (bad, good)}
    assert n == {bad: 0, good: 2}
    assert d.counters.closed == 2


async def test_a_device_still_holding_an_ended_lot_gets_clear_lot_from_a_fresh_dispatcher(
        db_pool: asyncpg.Pool, nats_broker: Any) -> None:
    """The clear_lot of a closed inspection was pending in a dispatcher that went away (gateway
    restart): the next dispatcher sees the device still naming the lot and sends it, once."""
    from registry import samples
    from tests.fixtures.mqtt import MqttCollector

    dev = "ESP32_HOLD_01"
    ds = Settings(inspection_samples=3, dispatch_cmd_timeout_s=3600, products_per_lot=0)
    first = Dispatcher(db_pool, nats_broker.url, ds)
    await _online(db_pool, dev)
    lot_id = await feed_to_ready(db_pool, days=1)
    await first.run_once()
    assignment = (await inspection_queue.open_inspections(db_pool))[0]["assignment_id"]
    now = datetime.now(UTC)
    await samples.store_samples(db_pool, [{"device_id": dev, "boot": 1, "seq": i, "lot_id": lot_id,
                                           "measured_at": now, "grade": "A", "score": 0.8} for i in range(3)])
    await first.run_once()  # closes the inspection; its clear_lot goes nowhere (no device connected)
    assert (await lots.get_lot(db_pool, lot_id))["state"] == "inspected"
    assert f"clear-{assignment}" in first.pending

    def telemetry(lot: str | None) -> dict[str, Any]:
        t = {"device_id": dev, "boot": 1, "ts": int(time.time() * 1000), "synced": True, "uptime_s": 60,
             "mem_free": 50000, "mem_min_free": 40000, "spool_depth": 0, "fw": "0.1.0", "rssi": -60,
             "counters": {c: 0 for c in codec.COUNTERS}}
        return {**t, "lot_id": lot} if lot else t

    await devices.apply_telemetry(db_pool, telemetry(lot_id), datetime.now(UTC))  # still holds it
    cmds = MqttCollector(nats_broker, codec.topic(dev, "cmd"))
    fresh = Dispatcher(db_pool, nats_broker.url, ds)
    fresh.client.connect(nats_broker.host, nats_broker.port)
    fresh.client.loop_start()
    try:
        await fresh.run_once()
        assert await asyncio.to_thread(cmds.wait_count, 1, 10)
        cmd = codec.decode_command(cmds.payloads()[0])
        assert (cmd["cmd"], cmd["id"]) == ("clear_lot", f"clear-{assignment}")
        await fresh.run_once()  # pending: not sent again before the timeout
        # the device applies it: confirmed, and its next telemetry no longer names the lot
        await devices.apply_result(db_pool, dev, {"id": cmd["id"], "cmd": "clear_lot", "ok": True}, datetime.now(UTC))
        await fresh.run_once()
        await devices.apply_telemetry(db_pool, telemetry(None), datetime.now(UTC))
        await fresh.run_once()
        await asyncio.sleep(0.5)
        assert len(cmds.payloads()) == 1 and fresh.counters.commands_confirmed == 1
        assert await inspection_queue.devices_holding_ended_lots(db_pool) == []
    finally:
        cmds.close()
        fresh.client.disconnect()
        fresh.client.loop_stop()
