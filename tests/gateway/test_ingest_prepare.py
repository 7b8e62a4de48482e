"""prepare(): decode, grade, clock flags and reject reasons (pure CPU, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqalfw import codec

from gateway.ingest.envelope import Envelope
from gateway.ingest.prepare import ClockPolicy, decode_sample, prepare
from gateway.ingest.rejects import reason_key
from tests.gateway.ingest_support import sample

NOW = datetime(2025, 1, 14, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
DEV = "ESP32_DEMO_LL_01"


def env(payload: bytes, topic: str = codec.topic(DEV, "sample")) -> Envelope:
    return Envelope("mqtt", topic, payload, NOW)


@pytest.mark.parametrize("ts_offset_s, synced, flags, trusted", [
    (-2, True, [], True), (-7200, True, ["late"], True), (120, True, ["future"], False),
    (-2, False, ["unsynced"], False), (30, True, [], True)])
def test_clock_flags(ts_offset_s: int, synced: bool, flags: list[str], trusted: bool) -> None:
    ts = NOW_MS + ts_offset_s * 1000
    it = prepare(env(codec.encode_sample(sample(DEV, ts=ts, synced=synced))), ClockPolicy(future_s=60, late_s=3600))
    assert it.kind == "sample" and it.row is not None
    assert it.row["features"]["clock"] == {"device_ts": ts, "skew_ms": -ts_offset_s * 1000, "flags": flags}
    assert (it.row["measured_at"] == NOW + timedelta(seconds=ts_offset_s)) if trusted else it.row["measured_at"] is None
    assert it.row["received_at"] == NOW and it.row["clock_synced"] is synced


def test_reject_reasons_are_the_codecs() -> None:
    spoof = sample("ESP32_X_01")
    it = prepare(env(codec.encode_sample(spoof)))
    assert it.kind == "reject" and it.reject is not None
    assert it.reject.reason == f"device_id: payload says 'ESP32_X_01' but topic says '{DEV}'"
    assert (it.reject.reason_key, it.reject.device_id, it.reject.source) == ("device_id", DEV, "mqtt")
    it = prepare(env(b"{}", topic="sqal/v1/ESP32_A_01/cmd"))
    assert it.reject is not None and it.reject.reason_key == "topic"


def test_internal_errors_become_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.ingest.model import quality  # the model prepare() grades with (compiled or pure)

    def boom(*a: object) -> None:
        raise ZeroDivisionError("model bug")

    monkeypatch.setattr(quality, "analyze", boom)
    it = prepare(env(codec.encode_sample(sample(DEV))))
    assert it.reject is not None and it.reject.reason == "internal: ZeroDivisionError: model bug"


@pytest.mark.parametrize("reason, key", [("tof.dist[3]: 4100 out of range 0..4000", "tof.dist"),
                                         ("json: not valid JSON", "json"), ("no colon here", "no_colon_here"),
                                         ("", "unknown")])
def test_reason_key(reason: str, key: str) -> None:
    assert reason_key(reason) == key


def _codec_outcome(data: bytes, dev: str | None) -> object:
    try:
        return codec.decode_sample(data, dev)
    except codec.ContractError as exc:
        return ("reject", str(exc))


def _fast_outcome(data: bytes, dev: str | None) -> object:
    try:
        return decode_sample(data, dev)
    except codec.ContractError as exc:
        return ("reject", str(exc))


def _json_corpus() -> list[bytes]:
    base = codec.encode_sample(sample(DEV, seq=5, q={"score": 0.5, "grade": "C"})).decode()
    swaps = [('"boot":1', f'"boot":{x}') for x in ("18446744073709551616", "-9223372036854775809", "4294967296",
                                                    "1e400", "NaN", "-Infinity", "1.0", "-0", "true", "null",
                                                    '"1"', "99999999999999999999999")]
    swaps += [('"seq":5', '"seq":5,"seq":6'), ('"fw":"0.1.0"', '"fw":"\\ud800"'), ('"fw":"0.1.0"', '"fw":"\\u0041"'),
              ('"gain":4.0', '"gain":4'), ('"gain":4.0', '"gain":4e0'), ('"score":0.5', '"score":0.49999999999999999'),
              ('"v":1', '"v":1.0'), ('{"v":1', '{ "v" : 1 '), ('"dist":[', '"dist":[ 1e2,'),
              # huge integers where no field is checked (orjson reads them as floats): still stored alike
              ('"v":1', '"v":1,"x":99999999999999999999999'), ('"v":1', '"v":1,"x":[-99999999999999999999999]'),
              ('"fw":"0.1.0"', '"fw":"0.1.0","q":{"score":0.5,"grade":"A","n":18446744073709551616}'),
              ('"gain":4.0', '"gain":18446744073709551616.0')]
    out = [base.encode()] + [base.replace(a, b, 1).encode() for a, b in swaps]
    out += [b"\xef\xbb\xbf" + base.encode(), base.encode() + b" ", base.encode() + b"x", b"[1,2]", b'"s"', b"{}",
            b"\xff\xfe", b"", b"{" * 600, b"[" * 500 + b"]" * 500, base[:200].encode(), ("x" * 1100).encode()]
    return out


def test_fast_json_decode_is_exactly_the_codecs() -> None:
    # prepare() parses JSON samples with orjson; on every payload it must give what the codec gives
    # (the same sample dict, or the same reject reason).
    corpus = _json_corpus()
    assert len({_codec_outcome(d, DEV) != _codec_outcome(corpus[0], DEV) for d in corpus}) == 2
    for data in corpus:
        for dev in (DEV, None):
            assert _fast_outcome(data, dev) == _codec_outcome(data, dev), data[:80]
