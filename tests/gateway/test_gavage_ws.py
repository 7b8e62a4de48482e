"""/ws/gavage on a real uvicorn server and a real PostgreSQL: acks, duplicates, ready, precise errors,
and one bad message never closing the connection nor affecting another one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import websockets
from fastapi import FastAPI

from gateway.app import create_app
from gateway.config import Settings
from tests.fixtures.gateway import serve_app
from tests.registry.helpers import new_lot


@pytest.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    app = create_app(Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False))
    async with serve_app(app) as port:
        yield app, f"ws://127.0.0.1:{port}/ws/gavage"


def feeding(lot_id: str, day: int = 1, moment: str = "morning", **over: Any) -> dict[str, Any]:
    msg = {"type": "feeding", "lot_id": lot_id, "farmer_id": "G042", "farmer_name": "Jean Dupont",
           "site_code": "LL", "genetics": "Mulard", "day": day, "moment": moment, "planned_dose_g": 200.0,
           "actual_dose_g": 204.5, "mean_weight_g": 4520.0, "live_ducks": 50, "mortality_pct": 0.0,
           "temperature_c": 21.3, "humidity_pct": 64.0, "timestamp": "2026-01-05T06:00:00+00:00",
           "ready_for_slaughter": False}
    msg.update(over)
    return msg


async def ask(ws: Any, msg: Any) -> dict[str, Any]:
    await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
    return json.loads(await asyncio.wait_for(ws.recv(), 10))  # type: ignore[no-any-return]


async def test_ack_duplicate_and_ready(live: tuple[FastAPI, str], db_pool: asyncpg.Pool) -> None:
    app, url = live
    lot_id = await new_lot(db_pool, planned_duration_days=2)
    async with websockets.connect(url) as ws:
        a = await ask(ws, feeding(lot_id, msg_id="m1"))
        assert a == {"type": "ack", "msg_id": "m1", "lot_id": lot_id, "day": 1, "moment": "morning",
                     "status": "saved", "state": "gavage"}
        again = await ask(ws, feeding(lot_id, actual_dose_g=999.0))
        assert again["status"] == "duplicate"
        for day, moment in ((1, "evening"), (2, "morning")):
            assert (await ask(ws, feeding(lot_id, day, moment)))["status"] == "saved"
        last = await ask(ws, feeding(lot_id, 2, "evening", ready_for_slaughter=True))
        assert last["status"] == "saved" and last["state"] == "ready"
    lot = await db_pool.fetchrow("SELECT state, maize_total_per_duck_g, gavage_ended_at FROM lots WHERE id = $1", lot_id)
    assert lot["state"] == "ready"
    assert float(lot["maize_total_per_duck_g"]) == pytest.approx(4 * 204.5)  # the duplicate's 999 g not added
    assert lot["gavage_ended_at"].isoformat().startswith("2026-01-05")  # simulated time, not the wall clock
    assert await db_pool.fetchval("SELECT count(*) FROM gavage_feedings WHERE lot_id = $1", lot_id) == 4
    st = app.state.gavage_ws
    assert (st.connections_total, st.saved, st.duplicates) == (1, 4, 1)


@pytest.mark.parametrize(("bad", "field", "words"), [
    ("{not json", "message", "not valid JSON"),
    ("[1, 2]", "message", "expected a JSON object"),
    ({"drop": "day"}, "day", "day: missing"),
    ({"day": 61}, "day", "less than or equal to 60"),
    ({"moment": "noon"}, "moment", "moment"),
    ({"planned_dose_g": -3}, "planned_dose_g", "greater than or equal to 0"),
    ({"humidity_pct": 140}, "humidity_pct", "humidity_pct"),
    ({"lot_id": "LOT_1"}, "lot_id", "lot_id"),
    ({"colour": "blue"}, "colour", "colour: unknown field"),
    ({"genetics": "Pekin"}, "genetics", "message says 'Pekin' but lot"),
    ({"site_code": "PX"}, "site_code", "has 'LL'"),
    ({"lot_id": "LOT_20000101_9999"}, "lot_id", "lot LOT_20000101_9999 not found"),
])
async def test_errors_name_the_field_and_keep_the_connection(live: tuple[FastAPI, str], db_pool: asyncpg.Pool,
                                                             bad: Any, field: str, words: str) -> None:
    _, url = live
    lot_id = await new_lot(db_pool)
    async with websockets.connect(url) as ws, websockets.connect(url) as other:
        if isinstance(bad, str):
            msg: Any = bad
        else:
            msg = feeding(lot_id)
            if "drop" in bad:
                del msg[bad["drop"]]
            else:
                msg.update(bad)
        err = await ask(ws, msg)
        assert err["type"] == "error" and err["field"] == field and words in err["reason"], err
        assert err["retryable"] is False
        # same connection still works, and the other connection never noticed
        assert (await ask(ws, feeding(lot_id)))["status"] == "saved"
        assert (await ask(other, feeding(lot_id, 1, "evening")))["status"] == "saved"
        assert (await ask(ws, {"type": "ping"}))["type"] == "pong"
    assert await db_pool.fetchval("SELECT count(*) FROM gavage_feedings WHERE lot_id = $1", lot_id) == 2


async def test_lifecycle_refusal_is_an_error_not_a_crash(live: tuple[FastAPI, str], db_pool: asyncpg.Pool) -> None:
    _, url = live
    lot_id = await new_lot(db_pool, planned_duration_days=1)
    async with websockets.connect(url) as ws:
        assert (await ask(ws, feeding(lot_id, 1, "evening", ready_for_slaughter=True)))["state"] == "ready"
        err = await ask(ws, feeding(lot_id, 2, "morning"))
        assert err["type"] == "error" and "is 'ready': cannot record_feeding" in err["reason"]
        assert err["lot_id"] == lot_id and err["day"] == 2
        assert (await ask(ws, {"type": "ping"}))["type"] == "pong"
