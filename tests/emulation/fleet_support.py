"""Helpers of the fleet tests: waiting on a fleet, the samples a collector saw, gaps in seqs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqalfw import codec

from emulation.fleet import Fleet
from tests.fixtures.mqtt import MqttCollector


def wait_fleet(pred: Callable[[], Any], timeout: float, what: str, fleet: Fleet) -> None:
    """Until pred() is true, or fail naming `what` with the fleet's totals."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; totals {fleet.totals()}")


def caught_up(fleet: Fleet) -> bool:
    """Every sample each boot reported sampled (its telemetry) has been received."""
    got = fleet.received()
    for did, boots in fleet.reported().items():
        for boot, v in boots.items():
            seqs = got[did].get(boot, set())
            if v.sampled and (not seqs or max(seqs) + 1 < v.sampled):
                return False
    return True


def fleet_samples(col: MqttCollector) -> list[dict[str, Any]]:
    """Every sample the collector received, decoded."""
    out = []
    for t, p, _r in list(col.messages):
        if t.endswith("/sample"):
            out.append(codec.decode_sample(p, t.split("/")[2]))
    return out


def gaps(seqs: set[int]) -> list[tuple[int, int]]:
    """Maximal runs [a, b] of missing seqs below the highest one received."""
    out: list[tuple[int, int]] = []
    s = -1
    for q in sorted(seqs):
        if q > s + 1:
            out.append((s + 1, q - 1))
        s = q
    return out


def by_key_and_boot(samples: list[dict[str, Any]]) -> tuple[dict[tuple[str, int, int], dict[str, Any]],
                                                             dict[tuple[str, int], set[int]]]:
    """The samples by dedupe key (device, boot, seq; the first copy kept), and the seqs of each
    (device, boot)."""
    by_key: dict[tuple[str, int, int], dict[str, Any]] = {}
    for s in samples:
        by_key.setdefault((s["device_id"], s["boot"], s["seq"]), s)
    per_boot: dict[tuple[str, int], set[int]] = {}
    for did, boot, seq in by_key:
        per_boot.setdefault((did, boot), set()).add(seq)
    return by_key, per_boot
