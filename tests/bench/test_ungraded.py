"""bench/ungraded.py: a device's first sample is prepared for real, its later ones reuse that result
with their own seq in the row and the COPY line; devices do not share results."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench import ungraded
from gateway.ingest.envelope import Envelope
from gateway.ingest.grading import Wire, prepare_wire, to_wire
from gateway.ingest.prepare import ClockPolicy
from registry.samples import ENCODED
from tests.gateway.ingest_support import sample_bytes


def wire(device: str, seq: int, seed: int = 0) -> Wire:
    return to_wire(Envelope("mqtt", f"sqal/v1/{device}/sample", sample_bytes(device, 1, seq, seed=seed),
                            datetime.now(UTC), size=0))


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    ungraded._first.clear()


def columns(line: bytes) -> list[bytes]:
    return line.rstrip(b"\n").split(b"\t")


def test_later_samples_reuse_the_first_result_with_their_own_seq() -> None:
    first, later = wire("BENCH_A_LL_01", 3, seed=1), wire("BENCH_A_LL_01", 40, seed=9)
    got = ungraded.prepare_cached([first, later], ClockPolicy(), 4096)
    real = prepare_wire([first, later], ClockPolicy(), 4096)
    assert got[0] == real[0]  # the first one is the real thing
    row, line = got[1][2], got[1][2][ENCODED]
    assert row["seq"] == 40 and columns(line)[2] == b"40"
    # all else is the first sample's, not the later one's own grading (seed 9 is another product)
    assert columns(line)[3:] == columns(real[0][2][ENCODED])[3:]
    assert columns(line)[3:] != columns(real[1][2][ENCODED])[3:]


def test_each_device_is_graded_once_on_its_own() -> None:
    a, b = wire("BENCH_A_LL_01", 1, seed=1), wire("BENCH_B_LL_01", 1, seed=5)
    got = ungraded.prepare_cached([a, b, wire("BENCH_B_LL_01", 2, seed=5)], ClockPolicy(), 4096)
    assert [r[1] for r in got] == ["BENCH_A_LL_01", "BENCH_B_LL_01", "BENCH_B_LL_01"]
    assert got[1] == prepare_wire([b], ClockPolicy(), 4096)[0]
    assert columns(got[2][2][ENCODED])[0] == b"BENCH_B_LL_01"


def test_a_reject_is_never_reused() -> None:
    bad = to_wire(Envelope("mqtt", "sqal/v1/BENCH_A_LL_01/sample", b"{not json", datetime.now(UTC), size=9))
    got = ungraded.prepare_cached([bad, wire("BENCH_A_LL_01", 2)], ClockPolicy(), 4096)
    assert got[0][0] == "reject" and got[1][0] == "sample"
