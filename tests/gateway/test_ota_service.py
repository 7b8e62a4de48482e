"""The gateway's rollout driver across replicas (gateway/ota/service.py), on a real PostgreSQL: one
gateway drives a rollout at a time (its advisory lock, held on a connection of its own); another
replica neither resumes it at start nor acts on it; once the driver is gone (its connection closed,
as when its process dies), the next gateway to start takes it up, here to find it cannot reach the
boards (no broker) and say so instead of resuming."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from gateway.config import Settings
from gateway.ota.service import OtaService
from registry import ota as reg
from registry.errors import InvalidInput

MANIFEST = {"version": "0.2.0", "files": [{"path": "sqalfw/app.mpy", "size": 10, "sha256": "0" * 64}]}


async def test_one_replica_drives_a_rollout_the_next_takes_it_when_it_dies(database_url: str,
                                                                           tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path, ingest_enabled=False)
    pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=4) for _ in range(3)]
    try:
        await reg.add_release(pools[0], "0.2.0", MANIFEST, "a" * 128)
        row = await reg.create_rollout(pools[0], "0.2.0", ["ESP32_LL_01", "ESP32_LL_02"], selector={},
                                       waves=[1, 2], max_failures=0.2, probation_s=60)
        rid = int(row["id"])
        await reg.set_rollout_state(pools[0], rid, "running", None)
        driver = OtaService(pools[0], None, settings)
        assert await driver._claim(rid)  # the replica running it (its engine thread is not needed here)

        other = OtaService(pools[1], None, settings)
        await other.start()  # finds it running, and driven: leaves it alone
        assert (await reg.get_rollout(pools[1], rid))["state"] == "running"
        for act in (other.cancel, other.retry_failed, other.rollback):
            with pytest.raises(InvalidInput, match=f"rollout {rid} is driven by another gateway replica"):
                await act(rid)
        await other.close()

        pools[0].terminate()  # the driver dies: its connections close, and the lock goes with them
        nxt = OtaService(pools[2], None, settings)
        await nxt.start()
        got = await reg.get_rollout(pools[2], rid)
        assert got["state"] == "interrupted", got
        assert got["reason"] == ("not resumed: over-the-air updates need the boards' broker "
                                 "(the ingest is disabled)"), got
        await nxt.close()
    finally:
        for p in pools:
            p.terminate()
