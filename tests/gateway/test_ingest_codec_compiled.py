"""The gateway's compiled copy of the contract codec (setup.py, gateway/ingest/codec_c.pxd,
gateway/ingest/model.py): the same results and the same error messages as the pure codec on a corpus
of valid and hostile payloads, one ContractError class for both, used only when built from the
current codec.py, and reported. With SQAL_REQUIRE_COMPILED_MODEL=1 (the test suite's CI setting) a
missing or stale compiled codec fails here instead of quietly decoding with the pure one."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import pytest
from sqalfw import codec as pure

from gateway.ingest import model
from gateway.ingest import prepare as prepare_mod
from gateway.ingest.envelope import Envelope
from gateway.ingest.grading import prepare_wire, to_wire
from gateway.ingest.prepare import ClockPolicy, prepare
from gateway.ingest.rejects import reason_key
from tests.firmware.codec_cases import (
    DELETE,
    REJECTIONS,
    make_sample,
    make_status,
    make_telemetry,
    mutate,
    set_path,
    worst_case_sample,
)
from tests.gateway.compiled_support import REQUIRED, import_compiled
from tests.gateway.ingest_support import sample

DEV = "ESP32_DEMO_LL_01"
NOW = datetime(2025, 1, 14, 12, 0, tzinfo=UTC)


def compiled_module() -> ModuleType:
    return import_compiled("_codec_c", "codec")


def test_the_compiled_codec_is_what_runs_when_required() -> None:
    if not REQUIRED:
        impl, why = model.describe_all()["codec"]
        pytest.skip(f"SQAL_REQUIRE_COMPILED_MODEL is not 1: running the {impl} codec ({why})")
    assert model.describe_all()["codec"][0] == "compiled", model.describe_all()
    assert model.codec is compiled_module() and model.codec is not pure
    assert prepare_mod.codec is model.codec  # prepare() decodes with it
    assert not hasattr(model.codec.validate_sample, "__code__")  # a C function, not Python bytecode
    assert "codec: compiled" in model.describe()[1]


# --- one ContractError class ---------------------------------------------------------------------

def test_the_compiled_codec_raises_the_pure_codecs_contract_error() -> None:
    c = compiled_module()
    assert c.ContractError is pure.ContractError
    bad = json.dumps(mutate("tof.dist", [4100] + [1] * 63)).encode()
    with pytest.raises(pure.ContractError) as err:  # what prepare, grading and mqtt_source catch
        c.decode_sample(bad)
    assert type(err.value) is pure.ContractError and isinstance(err.value, ValueError)
    assert err.value.reason == str(err.value) == "tof.dist[0]: 4100 out of range 0..4000"
    # raised in the compiled validate_command, caught there by `except ContractError`, id attached
    with pytest.raises(pure.ContractError) as err:
        c.decode_command(b'{"v":1,"id":"c8","cmd":"reboot","args":{"now":true}}')
    assert err.value.cmd_id == "c8" and str(err.value) == "args: unknown key 'now' for reboot"


def test_prepare_turns_the_compiled_codecs_errors_into_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through prepare() with the compiled codec: every kind of message gives the codec's reason
    (an uncaught class would show as 'internal: ContractError: ...')."""
    c = compiled_module()
    monkeypatch.setattr(prepare_mod, "codec", c)
    cases = [("sample", json.dumps(mutate("boot", -1)).encode(), "boot: -1 out of range 0..4294967295"),
             ("sample", b"\xa5\x01", "binary: truncated header (needs 44 bytes, got 2)"),
             ("status", b'{"v":1,"device_id":"%s","state":"gone"}' % DEV.encode(),
              "state: 'gone' is not one of online, offline"),
             ("telemetry", b"[]", "json: expected object, got list"),
             ("cmd/result", b'{"v":1,"id":"c1","cmd":"x","ok":true}', "cmd: 'x' is not one of")]
    for kind, payload, reason in cases:
        it = prepare(Envelope("mqtt", pure.topic(DEV, kind), payload, NOW))
        assert it.kind == "reject" and it.reject is not None, (kind, it)
        assert it.reject.reason.startswith(reason), it.reject.reason
    it = prepare(Envelope("mqtt", "sqal/v1/x/sample", b"{}", NOW))  # parse_topic's error
    assert it.reject is not None and it.reject.reason.startswith("topic: invalid device id")


def test_a_compiled_codec_with_its_own_error_class_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    c = compiled_module()
    monkeypatch.delenv("SQAL_INGEST_MODEL", raising=False)
    assert model._select(pure, "_codec_c", "codec")[:2] == (c, "compiled")

    class ContractError(ValueError):
        pass

    monkeypatch.setattr(c, "ContractError", ContractError)  # as a build without setup.py's rebinding
    mod, impl, why = model._select(pure, "_codec_c", "codec")
    assert (mod, impl) == (pure, "pure") and "own ContractError class" in why


def test_a_stale_or_missing_build_falls_back_to_the_pure_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    c = compiled_module()
    monkeypatch.delenv("SQAL_INGEST_MODEL", raising=False)
    assert model._select(pure, "_codec_c", "codec")[:2] == (c, "compiled")  # built from the codec.py on disk
    monkeypatch.setattr(c, "_SOURCE_SHA256", "0" * 64)  # as if codec.py changed after the build
    mod, impl, why = model._select(pure, "_codec_c", "codec")
    assert (mod, impl) == (pure, "pure") and "compiled codec is stale" in why
    monkeypatch.undo()
    monkeypatch.setenv("SQAL_INGEST_MODEL", "pure")  # forces both pure
    assert model._select(pure, "_codec_c", "codec")[:2] == (pure, "pure")
    assert model._select()[1] == "pure"
    mod, impl, why = model._select(pure, "_no_such_codec_c", "codec")
    assert (mod, impl) == (pure, "pure")
    monkeypatch.delenv("SQAL_INGEST_MODEL")
    mod, impl, why = model._select(pure, "_no_such_codec_c", "codec")
    assert (mod, impl) == (pure, "pure") and "compiled codec not built" in why


# --- the corpus ------------------------------------------------------------------------------------

def outcome(fn: Callable[..., Any], *args: Any) -> str:
    try:
        return repr(fn(*args))  # repr: key order, int vs float vs bool, floats to the last bit
    except Exception as exc:  # noqa: BLE001 -- the error itself is the outcome compared
        return f"{type(exc).__name__}: {exc} (cmd_id={getattr(exc, 'cmd_id', '-')!r})"


def valid_samples() -> list[dict[str, Any]]:
    """Both resolutions, with and without the optional fields, edge values."""
    out: list[dict[str, Any]] = []
    for k in range(40):
        res = 4 if k % 3 == 0 else 8
        s = sample(f"SQALB_{k % 10:02d}", boot=k, seq=k * 7, res=res, seed=k, synced=k % 5 != 0,
                   lot_id=f"LOT_20250114_{k:04d}" if k % 2 else None,
                   q={"score": (k % 11) / 10, "grade": pure.GRADES[k % 5]} if k % 4 else None)
        s["spec"]["gain"] = pure.GAINS[k % len(pure.GAINS)]
        out.append(s)
    out += [make_sample(4), make_sample(8), worst_case_sample()]
    zero = make_sample(4, boot=0, seq=0, ts=0, synced=False, q={"score": 0, "grade": "REJECT"})
    zero["tof"] = {"res": 4, "dist": [0] * 16, "st": [0] * 16}
    zero["spec"] = {**{ch: 0 for ch in pure.CHANNELS}, "gain": 0.5, "atime": 0, "astep": 0, "sat": False}
    out.append(zero)
    return out


HOSTILE_VALUES: list[Any] = [None, True, False, 0, -1, 1, 255, 256, 4000, 4001, 65535, 65536, 2**32 - 1, 2**32,
                             2**63, 2**64, -2**63 - 1, 10**30, -10**30, 0.0, -0.0, 0.5, 1.5, 4.0, 512.0, 1e308,
                             float("nan"), float("inf"), -float("inf"), "", "1", "ESP32_X_01", "LOT_20250114_0042",
                             "x" * 65, 'a"b', "\u00e9", [], [1], {}, {"v": 1}]


def _paths(obj: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in obj.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from _paths(value, prefix + key + ".")


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    return set_path(json.loads(json.dumps(obj)), path, value)  # on a copy


def hostile_objects(base: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every field of `base` deleted and set to each hostile value (wrong types, NaN/inf, huge ints,
    unknown versions, spoofed ids...), and list items broken one at a time."""
    for path in list(_paths(base)):
        yield _set(base, path, DELETE)
        for value in HOSTILE_VALUES:
            yield _set(base, path, value)
    rng = random.Random(11)
    for key in ("dist", "st") if "tof" in base else ():
        for _ in range(60):
            obj = _set(base, "tof." + key, list(base["tof"][key]))
            obj["tof"][key][rng.randrange(len(obj["tof"][key]))] = rng.choice(HOSTILE_VALUES)
            yield obj
    yield {**base, "extra": 2**70, "more": {"x": [float("nan")]}}  # unknown keys


def json_payloads() -> list[bytes]:
    rng = random.Random(7)
    out: list[bytes] = []
    for s in valid_samples()[::4]:
        text = pure.encode_sample(s)
        out.append(text)
        out.append(json.dumps(s).encode())  # spaces, the stdlib's float repr
        for obj in hostile_objects(s):
            out.append(json.dumps(obj, allow_nan=True).encode())
        for _ in range(150):  # byte-level damage: bad JSON, bad UTF-8, odd numbers
            b = bytearray(text)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(b))
                op = rng.random()
                if op < 0.4:
                    b[i] = rng.choice(b'0123456789-.eE+ ,:{}[]"\\nulltrue\xff\xc3\x80aZ')
                elif op < 0.7:
                    del b[i]
                else:
                    b[i:i] = rng.choice([b"9" * 25, b"1e999", b"NaN", b"-", b"\xef\xbb\xbf", b"\\ud800"])
            out.append(bytes(b))
    for p, v, _ in REJECTIONS:
        out.append(json.dumps(mutate(p, v)).encode())
    out += [b"", b" ", b"{}", b"[]", b"null", b"42", b'"x"', b"\xff\xfe{}", b"{" * 600, b"[" * 500 + b"]" * 500,
            b'{"v":1,', b"{" + b" " * 1100 + b"}", b"x" * 1025, b"x" * 1024, b"\x00" * 10]
    return out


def binary_payloads() -> list[bytes | bytearray]:
    out: list[bytes | bytearray] = []
    rng = random.Random(3)
    for s in valid_samples()[::6] + [make_sample(8), make_sample(4)]:
        b = pure.encode_sample_bin(s)
        out.append(b)
        for i in range(len(b)):  # every byte: zero, all ones, and a random value
            for v in (0, 0xFF, rng.randrange(256)):
                out.append(b[:i] + bytes([v]) + b[i + 1:])
        out += [b[:n] for n in range(len(b))]  # truncated at every length
        out += [b + b"\x00", b + b"\x00" * (1025 - len(b)), bytearray(b)]  # trailing, oversize, bytearray
    out.append(struct.pack("<BBBBIIQ10HBBH", 0xA5, 1, 0, 8, 1, 2, 2**64 - 1, *[0] * 10, 3, 29, 599))
    return out


def topics() -> list[Any]:
    return [f"sqal/v1/{DEV}/{k}" for k in pure.KINDS] + [
        "sqal/v2/ESP32_A1/sample", "sqal/v1/E/sample", "sqal/v1/ESP32_A1/other", "sqal/v1/ESP32_A1", "",
        "sqal/v1/ESP32_A1/sample/extra", "sqal/v1/_bad/sample", f"sqal/v1/{'x' * 49}/status", 5, None, b"sqal"]


def messages() -> list[tuple[str, bytes]]:
    """Status, telemetry, commands and results: valid and hostile."""
    out: list[tuple[str, bytes]] = []
    for kind, base in (("status", make_status()), ("telemetry", make_telemetry()),
                       ("telemetry", make_telemetry(rssi=None, degraded=["tof"], safe_mode=True))):
        out.append((kind, json.dumps(base).encode()))
        for obj in hostile_objects(base):
            out.append((kind, json.dumps(obj, allow_nan=True).encode()))
    cmd = {"v": 1, "id": "c-1", "cmd": "set_interval", "args": {"sample_s": 2.5, "telemetry_s": 60}}
    for obj in hostile_objects(cmd):
        out.append(("command", json.dumps(obj, allow_nan=True).encode()))
    for name in pure.COMMANDS + ("fly",):
        for args in (None, {}, {"lot_id": "LOT_20250114_0042"}, {"sample_s": 30}, {"now": True}, [1]):
            out.append(("command", json.dumps({"v": 1, "id": "c2", "cmd": name, "args": args}).encode()))
    res = {"v": 1, "id": "c1", "cmd": "status", "ok": True, "data": {"spool_depth": 3}}
    for obj in list(hostile_objects(res)) + [{**res, "ok": False, "error": "x" * 200},
                                             {**res, "ok": False, "error": "x" * 201}]:
        out.append(("result", json.dumps(obj, allow_nan=True).encode()))
    return out


def test_compiled_and_pure_give_identical_results_on_samples() -> None:
    c = compiled_module()
    jsons, bins = json_payloads(), binary_payloads()
    accepted = 0
    reasons: set[str] = set()
    for data in jsons + bins:
        for dev in (None, DEV, "SQALB_01"):
            want = outcome(pure.decode_sample, data, dev)
            assert outcome(c.decode_sample, data, dev) == want, (data[:80], dev)
            accepted += want.startswith("{")
            if want.startswith("ContractError: "):
                reasons.add(reason_key(want[len("ContractError: "):]))
    # both outcomes, many times over; the rejects name every field of a sample and the payload-level
    # problems (size, json, binary header and flags, truncation)
    assert accepted > 5000 and len(reasons) >= 35, (accepted, sorted(reasons))
    # the parsed-object entry point (prepare() hands it orjson's dict) and the encoders
    for s in valid_samples():
        for obj in [s] + list(hostile_objects(s))[::7]:
            assert outcome(c.validate_sample, obj, DEV) == outcome(pure.validate_sample, obj, DEV), obj
        assert c.encode_sample(s) == pure.encode_sample(s)
        assert c.encode_sample_bin(s) == pure.encode_sample_bin(s)
    bad: Any
    for bad in ("{}", None, 5, [], memoryview(b"{}")):
        assert outcome(c.decode_sample, bad) == outcome(pure.decode_sample, bad)
        assert outcome(c.validate_sample, bad) == outcome(pure.validate_sample, bad)


def test_compiled_and_pure_give_identical_results_on_other_messages() -> None:
    c = compiled_module()
    msgs = messages()
    oks = 0
    for kind, data in msgs:
        for dev in ((None, DEV, "OTHER_1") if kind in ("status", "telemetry") else (None,)):
            call: tuple[Any, ...] = (data, dev) if dev is not None else (data,)
            want = outcome(getattr(pure, "decode_" + kind), *call)
            assert outcome(getattr(c, "decode_" + kind), *call) == want, (kind, data, dev)
            oks += want.startswith("{")
    assert oks > 20 and len(msgs) > 500
    for t in topics():
        assert outcome(c.parse_topic, t) == outcome(pure.parse_topic, t)
        for kind in pure.KINDS + ("samples",):
            assert outcome(c.topic, t, kind) == outcome(pure.topic, t, kind)
    for fn in ("encode_status", "encode_telemetry"):
        for obj in (make_status(), make_telemetry(), make_telemetry(rssi=None)):
            assert outcome(getattr(c, fn), obj) == outcome(getattr(pure, fn), obj)
    for args in (("c1", "assign_lot", {"lot_id": "LOT_20250114_0042"}), ("c1", "set_interval", {"sample_s": 1}),
                 ("bad id", "status", None), ("c1", "fly", None)):
        assert outcome(c.encode_command, *args) == outcome(pure.encode_command, *args)
    for rargs in (("c1", "status", True, {"a": 1}), (None, None, False, None, "x" * 500),
                  ("c1", "status", True, {"blob": "x" * 2000}), ("c1", "status", 1),
                  ("c1", "ota_chunk", False, None, "busy", True)):
        assert outcome(c.encode_result, *rargs) == outcome(pure.encode_result, *rargs)
    for s in ("ESP32_A_01", "ab", "a" * 48, "a" * 49, "_ab", "ab-c_d", "ab c", "\u00e9bc", 5, None, ""):
        assert c.valid_device_id(s) is pure.valid_device_id(s)
    for s in ("LOT_20250114_0042", "LOT_20250114_123456", "LOT_2025011a_0042", "LOT_20250114-0042", 5, None):
        assert c.valid_lot_id(s) is pure.valid_lot_id(s)


def test_compiled_field_checks_match_the_pure_ones() -> None:
    """The table-driven field checks on their own, every table, random values."""
    c = compiled_module()
    rng = random.Random(5)
    tables = ["_SAMPLE", "_SPEC", "_TELEMETRY", "_STATUS", "_COUNTERS"]
    for name in tables:
        table = getattr(pure, name)
        assert getattr(c, name) == table
        for _ in range(400):
            obj = {key: rng.choice(HOSTILE_VALUES) for key, *_ in table if rng.random() > 0.1}
            assert outcome(c._fields, obj, table, "p.", {}) == outcome(pure._fields, obj, table, "p.", {}), obj


def test_prepare_gives_the_same_results_with_either_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grading workers' job end to end (decode, grade, rejects, COPY lines) with each codec."""
    c = compiled_module()
    envs = [Envelope("mqtt", pure.topic(DEV, "sample"), bytes(d), NOW)
            for d in json_payloads()[::5] + binary_payloads()[::9]]
    topic_kind = {"status": "status", "telemetry": "telemetry", "command": "cmd", "result": "cmd/result"}
    envs += [Envelope("mqtt", pure.topic(DEV, topic_kind[k]), d, NOW) for k, d in messages()[::3]]
    envs += [Envelope("mqtt", str(t), b"{}", NOW) for t in topics()]
    envs += [Envelope("ws", "/ws/sensors/", b"", NOW, kind_hint="sample", obj=make_sample(8))]
    wires = [to_wire(e) for e in envs]
    policy = ClockPolicy()
    monkeypatch.setattr(prepare_mod, "codec", pure)
    want = prepare_wire(wires, policy, 4096)
    monkeypatch.setattr(prepare_mod, "codec", c)
    got = prepare_wire(wires, policy, 4096)
    assert len(got) == len(want) == len(envs)
    for g, w, e in zip(got, want, envs):
        assert repr(g) == repr(w), e.payload[:80]
    kinds = {r[0] for r in want}
    assert kinds == {"sample", "status", "telemetry", "result", "reject"}, kinds
    assert not [r for r in want if r[0] == "reject" and r[4].reason.startswith("internal:")]
