"""Turn one received message into what the batch writer stores: a sample row, a device update, or a
reject. Pure CPU work, no I/O: decode and validate with the contract's one schema (sqalfw.codec),
grade with the one quality model (sqalfw.quality), both through gateway.ingest.model (their compiled
copies when built), flag the device clock.

Nothing escapes `prepare`: any failure, even a bug in a decoder, becomes a reject with a reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.ingest.envelope import Envelope

# sqalfw.codec and sqalfw.quality, each compiled when built (model.py); one ContractError class for both
from gateway.ingest.model import codec, quality
from gateway.ingest.rejects import reason_key, truncate
from registry.rejects import RejectRow


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    """Thresholds for flagging device clocks (docs/ingest.md, "Time")."""

    future_s: float = 60.0  # measured later than received by more than this: the clock is wrong
    late_s: float = 3600.0  # measured earlier by more than this: a replay from the spool (informational)


DEFAULT_CLOCK = ClockPolicy()


@dataclass(slots=True)
class Prepared:
    env: Envelope
    kind: str  # 'sample' | 'status' | 'telemetry' | 'result' | 'reject'
    device_id: str | None = None
    row: dict[str, Any] | None = None  # for registry.samples.store_samples
    data: dict[str, Any] | None = None  # decoded status / telemetry / result
    reject: RejectRow | None = None
    clock_flags: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, int, int] | None:
        if self.row is None:
            return None
        return (self.row["device_id"], self.row["boot"], self.row["seq"])


def reject_of(env: Envelope, reason: str, device_id: str | None, limit: int) -> Prepared:
    """A reject for `env` with `reason` (the payload kept up to `limit` bytes)."""
    row = RejectRow(received_at=env.received_at, source=env.source, topic=env.topic[:256], device_id=device_id,
                    reason_key=reason_key(reason), reason=reason[:1000], payload=truncate(env.payload, limit),
                    payload_size=env.size)
    return Prepared(env, "reject", device_id=device_id, reject=row)


def clock_of(sample: dict[str, Any], received_at: datetime, policy: ClockPolicy) -> tuple[datetime | None, dict[str, Any]]:
    """(measured_at to store, clock info). measured_at is None when the device time cannot be trusted
    (unsynced, or in the future): the registry then links by received_at, and no 1970 date is shown."""
    ts = int(sample["ts"])
    skew_ms = int(received_at.timestamp() * 1000) - ts  # > 0: measured before received
    flags: list[str] = []
    if not sample["synced"]:
        flags.append("unsynced")
    elif skew_ms < -policy.future_s * 1000:
        flags.append("future")
    elif skew_ms > policy.late_s * 1000:
        flags.append("late")
    measured = None if flags and flags[0] in ("unsynced", "future") else datetime.fromtimestamp(ts / 1000, UTC)
    return measured, {"device_ts": ts, "skew_ms": skew_ms, "flags": flags}


def sample_row(sample: dict[str, Any], received_at: datetime, policy: ClockPolicy) -> tuple[dict[str, Any], tuple[str, ...]]:
    tof, spec = sample["tof"], sample["spec"]
    channels = dict(spec)
    channels["saturated"] = spec["sat"]
    q = quality.analyze(tof["dist"], tof["st"], tof["res"], channels)
    measured_at, clock = clock_of(sample, received_at, policy)
    device_q = sample.get("q") or {}
    features = {"tof": q["tof"], "spectral": q["spectral"], "reject_reasons": q.get("reject_reasons", []),
                "clock": clock}
    row = {
        "device_id": sample["device_id"], "boot": sample["boot"], "seq": sample["seq"],
        "lot_id": sample.get("lot_id"), "measured_at": measured_at, "received_at": received_at,
        "clock_synced": bool(sample["synced"]), "score": q["score"], "grade": q["grade"],
        "device_score": device_q.get("score"), "device_grade": device_q.get("grade"),
        "weight_g": _finite(q["tof"].get("weight_g")), "volume_cm3": _finite(q["tof"].get("volume_cm3")),
        "alerts": list(q["alerts"]), "features": features, "raw": sample,
    }
    return row, tuple(clock["flags"])


def decode_sample(data: bytes, device_id: str | None) -> dict[str, Any]:
    """`codec.decode_sample`, with orjson parsing the JSON (16 -> 3 us a sample) when that gives the
    codec's very result. orjson differs from json.loads only by refusing some inputs (NaN, 1e400,
    lone surrogates, a BOM...) and by reading an integer beyond 64 bits as a float: a refused
    payload, a payload that is not a JSON object and one the codec rejects all go through the codec
    itself, so every reason stays the codec's. A sample the codec accepts from orjson's object is
    the one it gets from json.loads': a float where json.loads has a huge int never passes a field
    check, and unknown keys are dropped. (A rescan of the payload for 19 digits in a row did the
    same job before validation, at 14 us a sample.)"""
    if 0 < len(data) <= codec.MAX_SAMPLE_BYTES and data[0] != codec.MAGIC:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if type(obj) is dict:
            try:
                return codec.validate_sample(obj, device_id)  # type: ignore[no-any-return]
            except codec.ContractError:
                pass  # the codec's own path gives the reason (and its own parse of the numbers)
    return codec.decode_sample(data, device_id)  # type: ignore[no-any-return]


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def prepare(env: Envelope, policy: ClockPolicy = DEFAULT_CLOCK, payload_limit: int = 4096) -> Prepared:
    device_id: str | None = env.path_device_id
    try:
        if env.kind_hint is None:
            device_id, kind = codec.parse_topic(env.topic)
        else:
            kind = env.kind_hint
        if env.pre_reject is not None:
            return reject_of(env, env.pre_reject, device_id, payload_limit)
        if kind == "sample":
            data = env.payload
            if env.obj is not None:
                # A parsed WebSocket object goes through the same decoder as MQTT bytes: one schema.
                data = json.dumps(env.obj, separators=(",", ":"), allow_nan=True).encode()
            sample = decode_sample(data, device_id)
            row, flags = sample_row(sample, env.received_at, policy)
            return Prepared(env, "sample", device_id=sample["device_id"], row=row, clock_flags=flags)
        if kind == "status":
            st = codec.decode_status(env.payload, device_id)
            return Prepared(env, "status", device_id=device_id, data=st)
        if kind == "telemetry":
            tel = codec.decode_telemetry(env.payload, device_id)
            return Prepared(env, "telemetry", device_id=device_id, data=tel)
        if kind == "cmd/result":
            res = codec.decode_result(env.payload)
            return Prepared(env, "result", device_id=device_id, data=res)
        return reject_of(env, f"topic: the gateway does not ingest '{kind}' messages", device_id, payload_limit)
    except codec.ContractError as exc:
        return reject_of(env, str(exc), device_id, payload_limit)
    except Exception as exc:  # noqa: BLE001 - a decoder or model bug must cost one message, never the batch
        return reject_of(env, f"internal: {type(exc).__name__}: {exc}", device_id, payload_limit)
