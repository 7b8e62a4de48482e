"""bench/ingest.py's summary of the message engine issue's targets: rounds are counted against each
bar (a ratio on the bar meets it), the latency bar is strict."""

from __future__ import annotations

from bench.ingest import bars


def test_rounds_meeting_each_target_are_counted() -> None:
    line = bars([0.69, 0.44, 0.6, 0.75, 0.59], [0.2, 0.7, 0.7, 0.7, 0.7], [0.2, 0.125, 0.13, 0.1, 0.3], 177.0)
    assert "0.6 x raw in 3 of 5 rounds (median 0.60)" in line
    assert "x nats-py fetch raw in 4 of 5 rounds (median 0.70)" in line
    assert "SQAL / naive <= 1/8 in 2 of 5 rounds (median 0.13)" in line
    assert line.endswith("met (177 ms)")


def test_the_cpu_bar_is_an_upper_bound() -> None:
    assert "1/8 in 1 of 1 rounds" in bars([0.7], [0.7], [1 / 8], 100.0)
    assert "1/8 in 0 of 1 rounds" in bars([0.7], [0.7], [0.126], 100.0)


def test_the_latency_target_is_strict() -> None:
    assert bars([0.7], [0.7], [0.2], 250.0).endswith("missed (250 ms)")
    assert bars([0.7], [0.7], [0.2], 249.0).endswith("met (249 ms)")
