"""The main command's setup (the gateway with its embedded engine) with a fleet running, the gateway
SIGKILLed mid-stream and started again: every reading a board saw acknowledged is stored, exactly
once.

Why it holds: the engine runs in its own session, so the kill does not reach it; it keeps taking the
boards' readings into its stream on disk (and acknowledging them) while no gateway runs. The next
gateway adopts it and fetches what it holds: what the dead gateway had fetched but not committed is
handed out again (its acks never went out), and the dedupe key absorbs what it had committed but not
yet acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from emulation.fleet import Fleet
from tests.fixtures.gateway import GatewayProcess, stored_keys

N = 8
INTERVAL = 0.5


def _gaps(seqs: list[int]) -> list[int]:
    return sorted(set(range(max(seqs) + 1)) - set(seqs)) if seqs else []


async def _stored(database_url: str, fleet: Fleet) -> dict[str, list[tuple[int, int]]]:
    return {did: await stored_keys(database_url, did) for did in fleet.ids}


async def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await pred():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
async def test_gateway_killed_mid_stream_loses_no_acknowledged_reading(database_url: str, tmp_path: Path) -> None:
    gw = GatewayProcess(database_url, tmp_path / "gw")
    gw.start()
    fleet: Fleet | None = None
    try:
        broker_url = gw.status()["broker_url"]
        engine = gw.engine_pid()
        assert engine is not None and broker_url.startswith("mqtt://127.0.0.1:")
        fleet = Fleet(N, broker_url, interval=INTERVAL, seed=21, base_dir=tmp_path / "fleet", id_prefix="ESP32_GK",
                      telemetry_interval=1, resolution=4, config={"keepalive_s": 5})
        fleet.start()

        async def some_stored() -> bool:
            return all(len(k) >= 6 for k in (await _stored(database_url, fleet)).values())

        await _wait(some_stored, 90, "6 readings stored from every board")

        # the kill lands while the gateway holds fetched readings it cannot commit yet: a table lock
        # holds its batches; had it acknowledged on receipt, those readings would be lost
        blocker = await asyncpg.connect(database_url)
        try:
            await blocker.execute("BEGIN; LOCK TABLE sqal_samples IN ACCESS EXCLUSIVE MODE")
            end = time.monotonic() + 30
            while gw.status()["in_hand"] < N and time.monotonic() < end:
                await asyncio.sleep(0.2)
            assert gw.status()["in_hand"] >= N
            gw.kill()  # SIGKILL: no clean stop of anything
        finally:
            await blocker.close()  # rolls the lock back
        assert gw.engine_pid() == engine
        acked_at_kill = fleet.totals()["acked"]
        await asyncio.sleep(5)
        # the engine went on acknowledging the boards' readings while no gateway ran
        assert fleet.totals()["acked"] > acked_at_kill
        gw.start()
        assert gw.engine_pid() == engine, gw.log()[-3000:]  # adopted, not a second engine

        async def caught_up() -> bool:
            stored = await _stored(database_url, fleet)
            for did, boots in fleet.reported().items():
                for boot, v in boots.items():
                    seqs = [s for b, s in stored[did] if b == boot]
                    if v.sampled - v.spool > len(seqs):
                        return False
            return True

        await asyncio.sleep(3)
        await _wait(caught_up, 90, "every acknowledged reading to be stored")
        fleet.stop()  # the boards' last readings and telemetry; then the gateway stores what is left
        await _wait(caught_up, 60, "the last acknowledged readings to be stored")
        stored = await _stored(database_url, fleet)
    finally:
        if fleet is not None:
            fleet.stop()
        gw.stop()
    reported = fleet.reported()
    for did in fleet.ids:
        keys = stored[did]
        assert len(keys) == len(set(keys)), f"{did}: a reading stored twice"
        for boot, v in reported[did].items():
            seqs = [s for b, s in keys if b == boot]
            # seq counts from 0 in a boot: what the board no longer holds in its spool was acknowledged
            assert len(seqs) >= v.sampled - v.spool, (did, boot, v, len(seqs))
            assert _gaps(seqs) == [], f"{did} boot {boot}: readings missing: {_gaps(seqs)}"
