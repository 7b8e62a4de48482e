"""Contract v1 codec (firmware/sqalfw/codec.py): round trips, every rejection, sizes, and the same
bytes and the same reasons on CPython and on the real MicroPython interpreter."""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from sqalfw import codec
from sqalfw.codec import ContractError

from tests.firmware.codec_cases import (
    DEV,
    INF,
    NAN,
    REJECTIONS,
    make_sample,
    make_status,
    make_telemetry,
    mutate,
    worst_case_sample,
)

# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("res", [4, 8])
@pytest.mark.parametrize("encode", [codec.encode_sample, codec.encode_sample_bin])
def test_round_trip(res: int, encode: Callable[[dict[str, Any]], bytes]) -> None:
    s = make_sample(res)
    out = codec.decode_sample(encode(s), topic_device_id=DEV)
    assert out == s


def test_optional_fields_absent_round_trip() -> None:
    s = make_sample()
    del s["lot_id"], s["q"]
    for enc in (codec.encode_sample, codec.encode_sample_bin):
        out = codec.decode_sample(enc(s))
        assert out == s and "lot_id" not in out and "q" not in out
    # null is accepted for an optional field and normalised away
    assert "lot_id" not in codec.decode_sample(json.dumps({**s, "lot_id": None}).encode())


def test_json_is_compact_and_binary_is_tagged() -> None:
    j = codec.encode_sample(make_sample())
    assert b" " not in j and j.startswith(b'{"v":1,"device_id":"ESP32_DEMO_LL_01"')
    assert json.loads(j)["tof"]["dist"][:3] == [95, 88, 81]
    b = codec.encode_sample_bin(make_sample())
    assert b[0] == codec.MAGIC and b[1] == 1
    # the binary layout of docs/contract.md section 3.2, checked field by field
    assert struct.unpack_from("<BBBBIIQ", b, 0) == (0xA5, 1, 0b1101, 8, 12, 3041, 1736850000123)
    assert b[44] == len(DEV) and b[45:45 + len(DEV)] == DEV.encode()
    assert len(b) == 44 + 1 + len(DEV) + 1 + 5 + 1 + 17 + 3 + 64 * 3


def test_json_binary_json_is_lossless() -> None:
    s = make_sample()
    assert codec.encode_sample(codec.decode_sample(codec.encode_sample_bin(s))) == codec.encode_sample(s)


def test_int_gain_and_score_are_normalised_to_float() -> None:
    s = make_sample()
    s["spec"]["gain"] = 4
    s["q"] = {"score": 1, "grade": "A+"}
    out = codec.decode_sample(codec.encode_sample(s))
    assert out["spec"]["gain"] == 4.0 and type(out["spec"]["gain"]) is float
    assert out["q"]["score"] == 1.0 and type(out["q"]["score"]) is float


def test_unknown_fields_are_ignored_and_dropped() -> None:
    s = make_sample()
    raw = json.dumps({**s, "future_field": {"x": 1}}, separators=(",", ":")).encode()
    assert codec.decode_sample(raw) == s


# --- sizes ---------------------------------------------------------------------------------------

def test_full_8x8_sample_fits_1_kib() -> None:
    assert len(codec.encode_sample(make_sample())) < 1024
    worst = codec.encode_sample(worst_case_sample())
    assert len(worst) <= codec.MAX_SAMPLE_BYTES < 1025
    assert codec.decode_sample(worst) == worst_case_sample()
    assert len(codec.encode_sample_bin(worst_case_sample())) < 0.5 * len(worst)


# --- rejections ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path,value,reason", REJECTIONS, ids=[f"{p}={v!r}"[:40] for p, v, _ in REJECTIONS])
def test_json_rejections_name_field_and_problem(path: str, value: Any, reason: str) -> None:
    raw = json.dumps(mutate(path, value)).encode()
    with pytest.raises(ContractError) as err:
        codec.decode_sample(raw)
    assert str(err.value).startswith(reason), str(err.value)
    assert err.value.reason == str(err.value)


@pytest.mark.parametrize("text,reason", [
    ('{"v":1,"ts":NaN}', "ts: expected int, got float"),
    (None, "q.score: not a finite number"),
    ('{"v":1,"boot":1e999}', "boot: expected int, got float"),
])
def test_non_finite_numbers_rejected(text: str | None, reason: str) -> None:
    if text is None:  # a NaN inside an otherwise valid sample, as CPython's json writes it
        raw = json.dumps(mutate("q.score", NAN)).encode()
        assert b"NaN" in raw
    else:
        raw = json.dumps({**json.loads(json.dumps(make_sample())), **json.loads(text.replace("NaN", "null"))}).encode()
        raw = raw.replace(b'"ts": null', b'"ts": NaN')
    with pytest.raises(ContractError, match="^" + reason.replace("(", r"\(")):
        codec.decode_sample(raw)
    with pytest.raises(ContractError, match="not a finite number"):
        codec.decode_sample(json.dumps(mutate("spec.gain", INF)).encode())


@pytest.mark.parametrize("raw,reason", [
    (b"", "payload: empty"),
    (b"{" + b" " * 1100 + b"}", "size: payload is 1102 bytes, limit is 1024"),
    (b'{"v":1,', "json: not valid JSON"),
    (b"\xff\xfe{}", "json: payload is not UTF-8 text"),
    (b"[1,2]", "json: expected object, got list"),
    (b"42", "json: expected object, got int"),
    (b"[" * 600 + b"]" * 600, "size: payload is 1200 bytes"),
    (b"[" * 500 + b"]" * 500, "json: expected object, got list"),
])
def test_payload_level_rejections(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        codec.decode_sample(raw)
    assert str(err.value).startswith(reason)


def test_size_checked_before_parsing() -> None:
    # 1 MB of garbage: rejected on size alone (a parse would say "not valid JSON")
    with pytest.raises(ContractError, match="^size: payload is 1048576 bytes"):
        codec.decode_sample(b"\x00" * 1_048_576)
    with pytest.raises(ContractError, match="^payload: expected bytes, got str"):
        codec.decode_sample("{}")  # type: ignore[arg-type]


def test_spoofed_device_id_rejected() -> None:
    for enc in (codec.encode_sample, codec.encode_sample_bin):
        with pytest.raises(ContractError) as err:
            codec.decode_sample(enc(make_sample()), topic_device_id="ESP32_OTHER_01")
        assert str(err.value) == "device_id: payload says 'ESP32_DEMO_LL_01' but topic says 'ESP32_OTHER_01'"


def bin_sample(**over: Any) -> bytearray:
    return bytearray(codec.encode_sample_bin(make_sample(**over)))


@pytest.mark.parametrize("edit,reason", [
    (lambda b: b.__setitem__(1, 2), "v: unsupported version 2 (this gateway speaks 1)"),
    (lambda b: b.__setitem__(2, b[2] | 0x10), "binary.flags: unknown bits 0x10"),
    (lambda b: b.__setitem__(3, 5), "tof.res: 5 is not 4 or 8"),
    (lambda b: b.__setitem__(3, 6), "tof.res: 6 is not 4 or 8"),
    (lambda b: b.__setitem__(40, 11), "spec.gain: code 11 is not 0..10"),
    (lambda b: b.__setitem__(slice(12, 20), struct.pack("<Q", 2**63)), "ts: 9223372036854775808 out of range"),
    (lambda b: b.__setitem__(slice(42, 44), b"\xff\xff"), "spec.astep: 65535 out of range 0..65534"),
    (lambda b: b.__setitem__(45, ord(" ")), "device_id: invalid device id"),
    (lambda b: b.__setitem__(44, 255), "binary: truncated at device_id"),
    (lambda b: b.__setitem__(45, 0xFF), "device_id: not UTF-8 text"),
    (lambda b: b.__delitem__(slice(-1, None)), "binary: truncated at tof.dist (needs 280 bytes, got 279)"),
    (lambda b: b.extend(b"\x00\x00"), "binary: 2 trailing bytes after tof.st"),
    (lambda b: b.__delitem__(slice(30, None)), "binary: truncated header (needs 44 bytes, got 30)"),
    (lambda b: b.__setitem__(-1, 0) or b.__setitem__(slice(-128 - 64, -126 - 64), b"\xa1\x0f"),
     "tof.dist[0]: 4001 out of range 0..4000"),
])
def test_binary_rejections(edit: Callable[[bytearray], Any], reason: str) -> None:
    b = bin_sample()
    edit(b)
    with pytest.raises(ContractError) as err:
        codec.decode_sample(bytes(b))
    assert str(err.value).startswith(reason), str(err.value)


def test_binary_q_rejections() -> None:
    b = bin_sample()
    q_at = 44 + 1 + len(DEV) + 1 + 5 + 1 + 17
    b[q_at:q_at + 3] = struct.pack("<HB", 1001, 1)
    with pytest.raises(ContractError, match=r"^q.score: 1.001 out of range 0..1"):
        codec.decode_sample(bytes(b))
    b[q_at:q_at + 3] = struct.pack("<HB", 500, 5)
    with pytest.raises(ContractError, match=r"^q.grade: index 5 is not 0..4"):
        codec.decode_sample(bytes(b))


def test_encoders_refuse_invalid_samples() -> None:
    for enc in (codec.encode_sample, codec.encode_sample_bin):
        with pytest.raises(ContractError, match=r"^tof.dist: expected 64 items"):
            enc(mutate("tof.dist", [1, 2]))


# --- topics --------------------------------------------------------------------------------------

def test_topics() -> None:
    for kind in codec.KINDS:
        t = codec.topic(DEV, kind)
        assert t == f"sqal/v1/{DEV}/{kind}"
        assert codec.parse_topic(t) == (DEV, kind)
    for bad, reason in [("sqal/v2/ESP32_A1/sample", "is not sqal/v1"), ("sqal/v1/E/sample", "invalid device id"),
                        ("sqal/v1/ESP32_A1/other", "'other' is not one of"), ("sqal/v1/ESP32_A1", "is not sqal/v1")]:
        with pytest.raises(ContractError, match=reason):
            codec.parse_topic(bad)
    with pytest.raises(ContractError, match="is not one of"):
        codec.topic(DEV, "samples")


# --- status, telemetry -----------------------------------------------------------------------------

def test_status_round_trip_and_rejections() -> None:
    s = make_status()
    assert codec.decode_status(codec.encode_status(s), DEV) == s
    will = {"v": 1, "device_id": DEV, "state": "offline", "boot": 12, "fw": "0.1.0"}
    assert codec.decode_status(codec.encode_status(will)) == will
    with_conn = dict(will, conn=3, ts=1736850000123)
    assert codec.decode_status(codec.encode_status(with_conn)) == with_conn
    cases: list[tuple[dict[str, Any], str]] = [({"state": "gone"}, "state: 'gone' is not one of online, offline"),
                         ({"degraded": ["tof", "wifi"]}, "degraded[1]: 'wifi' is not one of tof, spec"),
                         ({"location": "x" * 65}, "location: expected 0-64 printable"),
                         ({"boot": -1}, "boot: -1 out of range"), ({"v": 3}, "v: unsupported version 3"),
                         ({"conn": 0}, "conn: 0 out of range")]
    for over, reason in cases:
        with pytest.raises(ContractError) as err:
            codec.decode_status(json.dumps(make_status(**over)).encode())
        assert str(err.value).startswith(reason)
    with pytest.raises(ContractError, match="topic says 'OTHER_1'"):
        codec.decode_status(codec.encode_status(s), "OTHER_1")


def test_telemetry_round_trip_and_rejections() -> None:
    t = make_telemetry()
    assert codec.decode_telemetry(codec.encode_telemetry(t), DEV) == t
    assert codec.decode_telemetry(codec.encode_telemetry(make_telemetry(rssi=None)))["rssi"] is None
    counters = dict(make_telemetry()["counters"])
    del counters["acked"]
    tcases: list[tuple[dict[str, Any], str]] = [({"rssi": 5}, "rssi: 5 out of range -127..0"),
                         ({"counters": counters}, "counters.acked: missing"),
                         ({"mem_free": -1}, "mem_free: -1 out of range"),
                         ({"sample_s": 0.01}, "sample_s: 0.01 out of range 0.1..86400")]
    for over, reason in tcases:
        with pytest.raises(ContractError) as err:
            codec.decode_telemetry(json.dumps(make_telemetry(**over)).encode())
        assert str(err.value).startswith(reason)
    bare = make_telemetry()
    del bare["rssi"]
    with pytest.raises(ContractError, match="^rssi: missing"):
        codec.decode_telemetry(json.dumps(bare).encode())


def test_telemetry_carries_degraded_sensors_and_safe_mode() -> None:
    t = make_telemetry(degraded=["tof"], safe_mode=True)
    out = codec.decode_telemetry(codec.encode_telemetry(t), DEV)
    assert out["degraded"] == ["tof"] and out["safe_mode"] is True
    with pytest.raises(ContractError, match=r"^degraded\[0\]: 'gps' is not one of tof, spec"):
        codec.decode_telemetry(json.dumps(make_telemetry(degraded=["gps"])).encode())


# --- commands and results ---------------------------------------------------------------------------

def test_commands_round_trip() -> None:
    cases: list[tuple[str, dict[str, Any] | None]] = [("set_interval", {"sample_s": 30}), ("set_interval", {"telemetry_s": 60.5}),
             ("assign_lot", {"lot_id": "LOT_20250114_0042"}), ("clear_lot", None), ("status", None), ("reboot", {})]
    for name, args in cases:
        c = codec.decode_command(codec.encode_command("c-1", name, args))
        assert c["id"] == "c-1" and c["cmd"] == name and c["v"] == 1
        assert c["args"] == {k: (float(v) if name == "set_interval" else v) for k, v in (args or {}).items()}


@pytest.mark.parametrize("payload,reason,cmd_id", [
    ({"v": 1, "id": "c1", "cmd": "fly"}, "cmd: 'fly' is not one of", "c1"),
    ({"v": 1, "cmd": "status"}, "id: missing", None),
    ({"v": 1, "id": "bad id!", "cmd": "status"}, "id: expected 1-64 chars", None),
    ({"v": 1, "id": 5, "cmd": "status"}, "id: expected str, got int", None),
    ({"v": 2, "id": "c2", "cmd": "status"}, "v: unsupported version 2", "c2"),
    ({"v": 1, "id": "c3", "cmd": "set_interval", "args": {}}, "args: set_interval needs sample_s or telemetry_s", "c3"),
    ({"v": 1, "id": "c4", "cmd": "set_interval", "args": {"sample_s": 0}}, "args.sample_s: 0 out of range 0.1..86400", "c4"),
    ({"v": 1, "id": "c5", "cmd": "set_interval", "args": {"sample_s": "5"}}, "args.sample_s: expected number", "c5"),
    ({"v": 1, "id": "c6", "cmd": "assign_lot", "args": {}}, "args.lot_id: missing", "c6"),
    ({"v": 1, "id": "c7", "cmd": "assign_lot", "args": {"lot_id": "LOT_1"}}, "args.lot_id: invalid lot id", "c7"),
    ({"v": 1, "id": "c8", "cmd": "reboot", "args": {"now": True}}, "args: unknown key 'now' for reboot", "c8"),
    ({"v": 1, "id": "c9", "cmd": "status", "args": [1]}, "args: expected object, got list", "c9"),
])
def test_command_rejections_echo_the_id(payload: dict[str, Any], reason: str, cmd_id: str | None) -> None:
    with pytest.raises(ContractError) as err:
        codec.decode_command(json.dumps(payload).encode())
    assert str(err.value).startswith(reason), str(err.value)
    assert err.value.cmd_id == cmd_id


def test_results() -> None:
    ok = codec.decode_result(codec.encode_result("c1", "assign_lot", True, {"lot_id": "LOT_20250114_0042"}))
    assert ok == {"v": 1, "id": "c1", "cmd": "assign_lot", "ok": True, "data": {"lot_id": "LOT_20250114_0042"}}
    err = codec.decode_result(codec.encode_result(None, None, False, error="x" * 500))
    assert err["ok"] is False and err["id"] is None and len(err["error"]) == 200 and err["error"].endswith("...")
    assert "retry" not in err
    busy = codec.decode_result(codec.encode_result("c2", "ota_chunk", False, error="ota_chunk: out of memory",
                                                   retry=True))
    assert busy["retry"] is True and busy["error"] == "ota_chunk: out of memory"
    for bad, reason in [({"v": 1, "id": "c1", "cmd": "status", "ok": False}, "error: expected a reason"),
                        ({"v": 1, "id": "c1", "cmd": "x", "ok": True}, "cmd: 'x' is not one of"),
                        ({"v": 1, "cmd": "status", "ok": True}, "id: missing"),
                        ({"v": 1, "id": "c1", "cmd": "status", "ok": 1}, "ok: expected bool"),
                        ({"v": 1, "id": "c1", "cmd": "status", "ok": False, "error": "e", "retry": 1},
                         "retry: expected bool")]:
        with pytest.raises(ContractError) as e:
            codec.decode_result(json.dumps(bad).encode())
        assert str(e.value).startswith(reason)
    with pytest.raises(ContractError, match="^size: result is"):
        codec.encode_result("c1", "status", True, {"blob": "x" * 2000})


# --- the same codec on MicroPython ----------------------------------------------------------------

# One case per line and one answer per line, so the board-sized heap holds only one at a time.
MP_SCRIPT = r"""
import json, gc
from binascii import hexlify, unhexlify
from sqalfw import codec


for line in open("cases.txt"):
    kind, _, arg = line.rstrip("\n").partition(" ")
    if kind == "S":
        s = json.loads(arg)
        j = codec.encode_sample(s)
        b = codec.encode_sample_bin(s)
        row = [j.decode(), hexlify(b).decode(),
               codec.decode_sample(j) == codec.decode_sample(b), codec.decode_sample(b) == s]
    elif kind == "R":
        try:
            codec.decode_sample(unhexlify(arg), "ESP32_DEMO_LL_01")
            row = None
        except codec.ContractError as e:
            row = str(e)
    else:
        try:
            row = ["ok", getattr(codec, "decode_" + kind)(arg.encode())]
        except codec.ContractError as e:
            row = ["err", str(e), getattr(e, "cmd_id", None)]
    print(json.dumps(row))
    gc.collect()
"""


def cpython_side(lines: list[str]) -> list[Any]:
    rows: list[Any] = []
    for line in lines:
        kind, _, arg = line.partition(" ")
        if kind == "S":
            s = json.loads(arg)
            j, b = codec.encode_sample(s), codec.encode_sample_bin(s)
            rows.append([j.decode(), b.hex(), codec.decode_sample(j) == codec.decode_sample(b),
                         codec.decode_sample(b) == s])
        elif kind == "R":
            try:
                codec.decode_sample(bytes.fromhex(arg), DEV)
                rows.append(None)
            except ContractError as e:
                rows.append(str(e))
        else:
            try:
                rows.append(["ok", getattr(codec, "decode_" + kind)(arg.encode())])
            except ContractError as e:
                rows.append(["err", str(e), e.cmd_id])
    return rows


def test_micropython_gives_the_same_bytes_and_reasons(micropython_run: Any, tmp_path: Any) -> None:
    samples = [make_sample(8), make_sample(4), worst_case_sample()]
    bare = make_sample()
    del bare["lot_id"], bare["q"]
    samples.append(bare)
    rejects = [json.dumps(mutate(p, v)).encode().hex() for p, v, _ in REJECTIONS]
    rejects += [b"".hex(), (b"{" + b" " * 1100 + b"}").hex(), b"\xff\xfe{}".hex(), b'{"v":1,'.hex(),
                (b"[" * 500 + b"]" * 500).hex(), b"1e999".hex()]
    for edit in (lambda b: b.__setitem__(1, 2), lambda b: b.__delitem__(slice(-1, None)),
                 lambda b: b.__setitem__(44, 255), lambda b: b.__setitem__(40, 11)):
        b = bin_sample()
        edit(b)
        rejects.append(bytes(b).hex())
    rejects.append(codec.encode_sample(make_sample(device_id="ESP32_SPOOF_01")).hex())
    messages = [
        ["status", codec.encode_status(make_status()).decode()],
        ["telemetry", codec.encode_telemetry(make_telemetry()).decode()],
        ["command", codec.encode_command("c1", "set_interval", {"sample_s": 2.5}).decode()],
        ["command", json.dumps({"v": 1, "id": "c9", "cmd": "reboot", "args": {"now": 1}})],
        ["command", '{"v":1,"cmd":"status"}'],
        ["result", codec.encode_result("c1", "status", True, {"spool_depth": 3}).decode()],
        ["telemetry", json.dumps(make_telemetry(rssi=3))],
    ]
    lines = [f"S {json.dumps(x)}" for x in samples] + [f"R {h}" for h in rejects] + [f"{k} {m}" for k, m in messages]
    (tmp_path / "cases.txt").write_text("\n".join(lines) + "\n")
    mp = [json.loads(x) for x in micropython_run(MP_SCRIPT, cwd=tmp_path).stdout.splitlines()]
    py = cpython_side(lines)
    assert len(py) == len(lines) == len(mp)
    assert mp == py  # byte-identical encodings, the same decoded values and the same reasons
    assert all(row[2] and row[3] for row in py[:len(samples)])
    assert None not in py[len(samples):len(samples) + len(rejects)]
    assert [row[0] for row in py[-len(messages):]] == ["ok", "ok", "ok", "err", "err", "ok", "err"]


# --- the fast path of the field checks against the precise check it skips -----------------------

def literal_fields(obj: dict[str, Any], table: tuple[Any, ...], prefix: str) -> dict[str, Any]:
    """_fields as it was before its fast path: every present value through _value."""
    out: dict[str, Any] = {}
    for key, kind, lo, hi, flag in table:
        x = obj.get(key)
        if x is None:
            if flag == 1:
                continue
            if flag == 0 or key not in obj:
                raise codec._err(prefix + key, "missing")
            out[key] = None
            continue
        out[key] = codec._value(x, prefix + key, kind, lo, hi)
    return out


def _field_outcome(fn: Callable[[], dict[str, Any]]) -> str:
    try:
        return repr(fn())  # repr: 4 and 4.0 differ
    except ContractError as exc:
        return "reject: " + exc.reason


def test_field_fast_path_matches_the_precise_check() -> None:
    import random

    rng = random.Random(3)
    values: list[Any] = [0, 1, -1, 4, 255, 256, 599, 65534, 65535, 65536, 4294967295, 4294967296, 2 ** 70,
                         0.0, 0.5, 4.0, 512.0, 512.5, -0.0, float("nan"), float("inf"), -float("inf"), 1e400,
                         True, False, None, "4", "", "0.1.0", "LOT_20250114_0042", [], {}]
    tables = [codec._SAMPLE, codec._SPEC, codec._TELEMETRY, codec._STATUS, codec._COUNTERS,
              codec._ARGS["set_interval"]]
    checked = 0
    for table in tables:
        for _ in range(400):
            obj = {key: rng.choice(values) for key, *_ in table if rng.random() > 0.1}
            want = _field_outcome(functools.partial(literal_fields, obj, table, "p."))
            assert _field_outcome(functools.partial(codec._fields, obj, table, "p.", {})) == want, obj
            checked += want.startswith("{")
    assert checked > 20  # some objects pass whole, the rest fail on one field or another
