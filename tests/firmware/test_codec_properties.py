"""Property tests of the decoders: whatever the input, only ContractError (with a reason) escapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqalfw import codec
from sqalfw.codec import ContractError

from .test_codec import make_sample, make_status, make_telemetry

DECODERS: list[Callable[[bytes], Any]] = [
    codec.decode_sample, codec.decode_status, codec.decode_telemetry, codec.decode_command, codec.decode_result,
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=6) | st.dictionaries(st.text(max_size=10), kids, max_size=6),
    max_leaves=40,
)


def only_contract_errors(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except ContractError as e:
            assert str(e) and e.reason == str(e) and ": " in str(e)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_arbitrary_bytes(data: bytes) -> None:
    only_contract_errors(data)
    only_contract_errors(b"\xa5" + data)  # forced down the binary path


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_values(value: Any) -> None:
    only_contract_errors(json.dumps(value).encode())


FIELDS = ["v", "device_id", "boot", "seq", "ts", "synced", "lot_id", "fw", "tof", "spec", "q"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), json_values, st.sampled_from(["tof", "spec", "q", None]), st.text(max_size=8))
def test_one_field_replaced_by_anything(field: str, value: Any, inner: str | None, inner_key: str) -> None:
    s: dict[str, Any] = make_sample()
    if inner is not None:
        s[inner][inner_key or "res"] = value
    else:
        s[field] = value
    for obj in (s, {**make_status(), field: value}, {**make_telemetry(), field: value}):
        only_contract_errors(json.dumps(obj).encode())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_binary_samples(data: st.DataObject) -> None:
    b = bytearray(codec.encode_sample_bin(make_sample(data.draw(st.sampled_from([4, 8])))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    for payload in (bytes(b), bytes(b[:cut])):
        try:
            out = codec.decode_sample(payload)
        except ContractError as e:
            assert str(e)
        else:  # whatever survives is a valid sample that re-encodes to itself
            assert codec.decode_sample(codec.encode_sample_bin(out)) == out
