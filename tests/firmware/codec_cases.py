"""Contract v1 messages for the codec's tests and the gateway's (compiled codec, ingest): valid
samples, statuses and telemetry, the largest legal sample, and every rejection with its reason."""

from __future__ import annotations

from typing import Any

from sqalfw import codec

DEV = "ESP32_DEMO_LL_01"


def make_sample(res: int = 8, **over: Any) -> dict[str, Any]:
    n = res * res
    s: dict[str, Any] = {
        "v": 1, "device_id": DEV, "boot": 12, "seq": 3041, "ts": 1736850000123, "synced": True,
        "lot_id": "LOT_20250114_0042", "fw": "0.1.0",
        "tof": {"res": res, "dist": [95 - (i * 7) % 60 for i in range(n)], "st": [5 if i % 7 else 9 for i in range(n)]},
        "spec": {"F1": 402, "F2": 598, "F3": 505, "F4": 1893, "F5": 904, "F6": 597, "F7": 1148, "F8": 751,
                 "CLEAR": 6497, "NIR": 603, "gain": 4.0, "atime": 29, "astep": 599, "sat": False},
        "q": {"score": 0.812, "grade": "A"},
    }
    s.update(over)
    return s


def worst_case_sample() -> dict[str, Any]:
    """The largest legal sample: every field at its longest encoding."""
    s = make_sample(
        device_id="D" * 48, boot=codec.U32, seq=codec.U32, ts=codec.MAX_TS, synced=False,
        lot_id="LOT_20250114_123456", fw="1.2.3-rc.45+abcd",
        q={"score": 0.123, "grade": "REJECT"},
    )
    s["tof"] = {"res": 8, "dist": [4000] * 64, "st": [255] * 64}
    s["spec"] = {**{ch: 65535 for ch in codec.CHANNELS}, "gain": 512.0, "atime": 255, "astep": 65534, "sat": True}
    return s


def set_path(s: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`s` with the field at dotted `path` set to `value` (DELETE removes it), changed in place."""
    obj = s
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[k]
    if value is DELETE:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value
    return s


def mutate(path: str, value: Any) -> dict[str, Any]:
    return set_path(make_sample(), path, value)


class _Delete:
    # A stable repr keeps test ids identical across processes (pytest-xdist compares them).
    def __repr__(self) -> str:
        return "<delete>"


DELETE = _Delete()
NAN = float("nan")
INF = float("inf")

# (mutation, expected reason); every reason names the field and the problem
REJECTIONS: list[tuple[str, Any, str]] = [
    ("v", 2, "v: unsupported version 2 (this gateway speaks 1)"),
    ("v", "1", "v: expected int, got str"),
    ("v", DELETE, "v: missing"),
    ("device_id", "ab", "device_id: invalid device id"),
    ("device_id", "_ESP32", "device_id: invalid device id"),
    ("device_id", "ESP32 01", "device_id: invalid device id"),
    ("device_id", "x" * 49, "device_id: invalid device id"),
    ("device_id", 12, "device_id: expected str, got int"),
    ("device_id", DELETE, "device_id: missing"),
    ("boot", -1, "boot: -1 out of range 0..4294967295"),
    ("boot", 2**32, "boot: 4294967296 out of range 0..4294967295"),
    ("boot", 1.0, "boot: expected int, got float"),
    ("boot", True, "boot: expected int, got bool"),
    ("seq", "3", "seq: expected int, got str"),
    ("seq", DELETE, "seq: missing"),
    ("ts", -5, "ts: -5 out of range"),
    ("ts", None, "ts: missing"),
    ("synced", 1, "synced: expected bool, got int"),
    ("lot_id", "LOT_2025_0001", "lot_id: invalid lot id"),
    ("lot_id", "LOT_20250114_123", "lot_id: invalid lot id"),
    ("lot_id", "LOT_20250114_1234567", "lot_id: invalid lot id"),
    ("lot_id", 7, "lot_id: expected str, got int"),
    ("fw", "", "fw: expected 1-16 printable"),
    ("fw", "x" * 17, "fw: expected 1-16 printable"),
    ("fw", 'a"b', "fw: expected 1-16 printable"),
    ("tof", [], "tof: expected object, got list"),
    ("tof", DELETE, "tof: expected object, got null"),
    ("tof.res", 6, "tof.res: 6 is not 4 or 8"),
    ("tof.res", 16, "tof.res: 16 out of range 4..8"),
    ("tof.dist", [1] * 12, "tof.dist: expected 64 items for res 8, got 12"),
    ("tof.st", [5] * 65, "tof.st: expected 64 items for res 8, got 65"),
    ("tof.dist", "95,95", "tof.dist: expected list, got str"),
    ("tof.dist", DELETE, "tof.dist: missing"),
    ("tof.dist", [4100] + [1] * 63, "tof.dist[0]: 4100 out of range 0..4000"),
    ("tof.dist", [1] * 63 + [-1], "tof.dist[63]: -1 out of range 0..4000"),
    ("tof.dist", [1] * 10 + [1.5] + [1] * 53, "tof.dist[10]: expected int, got float"),
    ("tof.st", [256] + [5] * 63, "tof.st[0]: 256 out of range 0..255"),
    ("spec.F2", 1.5, "spec.F2: expected int, got float"),
    ("spec.NIR", 65536, "spec.NIR: 65536 out of range 0..65535"),
    ("spec.CLEAR", DELETE, "spec.CLEAR: missing"),
    ("spec.gain", 3.0, "spec.gain: 3 is not one of 0.5, 1, 2, 4 ... 512"),
    ("spec.gain", 1024, "spec.gain: 1024 out of range 0.5..512"),
    ("spec.gain", "4", "spec.gain: expected number, got str"),
    ("spec.atime", 256, "spec.atime: 256 out of range 0..255"),
    ("spec.astep", 65535, "spec.astep: 65535 out of range 0..65534"),
    ("spec.sat", "no", "spec.sat: expected bool, got str"),
    ("spec", None, "spec: expected object, got null"),
    ("q", "A", "q: expected object, got str"),
    ("q.score", 1.5, "q.score: 1.5 out of range 0..1"),
    ("q.score", DELETE, "q.score: missing"),
    ("q.grade", "D", "q.grade: 'D' is not one of A+, A, B, C, REJECT"),
]


def make_status(**over: Any) -> dict[str, Any]:
    s = {"v": 1, "device_id": DEV, "state": "online", "boot": 12, "fw": "0.1.0", "ts": 1736850000000,
         "location": "Ligne A - Landes", "degraded": ["spec"], "safe_mode": False}
    s.update(over)
    return s


def make_telemetry(**over: Any) -> dict[str, Any]:
    t = {"v": 1, "device_id": DEV, "boot": 12, "ts": 1736850000000, "synced": True, "uptime_s": 3600,
         "mem_free": 61000, "mem_min_free": 52000, "spool_depth": 3,
         "counters": {c: i for i, c in enumerate(codec.COUNTERS)}, "fw": "0.1.0", "rssi": -67,
         "lot_id": "LOT_20250114_0042", "sample_s": 30.0}
    t.update(over)
    return t
