"""bench/ingest.py's summary of issue 5's targets: rounds are counted against each bar, a ratio on the
bar meets it, the latency bar is strict."""

from __future__ import annotations

from bench.ingest import bars


def test_rounds_meeting_each_target_are_counted() -> None:
    line = bars([0.69, 0.44, 0.6, 0.75, 0.59], [8.0, 10.0, 6.9, 12.5, 9.99], 177.0)
    assert "0.6 x raw in 3 of 5 rounds (median 0.60)" in line
    assert "10 x naive in 2 of 5 rounds (median 9.99)" in line
    assert line.endswith("met (177 ms)")


def test_the_latency_target_is_strict() -> None:
    assert bars([0.7], [7.0], 250.0).endswith("missed (250 ms)")
    assert bars([0.7], [7.0], 249.0).endswith("met (249 ms)")
