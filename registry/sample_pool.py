"""Realistic graded readings without a board: the emulator's product scene (emulation/peripherals)
gives a liver's ToF frame and spectrum, the shared quality model (sqalfw.quality) grades it, as
the gateway does. Used by the data generator (registry/generate.py) and to build the preset
dictionaries of the compact row format (registry/blobs.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqalfw import codec, quality

from emulation.peripherals.as7341 import REFERENCE
from emulation.peripherals.scene import Scene

_SPEC_BASE = {"gain": 4.0, "atime": 29, "astep": 599, "sat": False}


@dataclass(frozen=True)
class PoolReading:
    """One graded reading, without its identity (device, boot, seq, time, lot are the caller's)."""

    tof: dict[str, Any]  # {"res", "dist", "st"}
    spec: dict[str, Any]
    q: dict[str, Any]  # the device's provisional grade (the same model)
    score: float
    grade: str
    weight_g: float | None
    volume_cm3: float | None
    alerts: tuple[str, ...]
    features: dict[str, Any]  # as gateway/ingest/prepare.sample_row builds them (clock block left out)


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def graded(tof: dict[str, Any], spec: dict[str, Any]) -> PoolReading:
    channels = dict(spec)
    channels["saturated"] = spec["sat"]
    q = quality.analyze(tof["dist"], tof["st"], tof["res"], channels)
    features = {"tof": q["tof"], "spectral": q["spectral"], "reject_reasons": q.get("reject_reasons", [])}
    return PoolReading(tof=tof, spec=spec, q={"score": int(q["score"] * 1000 + 0.5) / 1000, "grade": q["grade"]},
                       score=q["score"], grade=q["grade"], weight_g=_finite(q["tof"].get("weight_g")),
                       volume_cm3=_finite(q["tof"].get("volume_cm3")), alerts=tuple(q["alerts"]), features=features)


def pool(n: int, *, profile: str = "default", seed: int = 1, res: int = 8) -> list[PoolReading]:
    """`n` readings of livers drawn from the lot quality `profile` (domain.md section 3)."""
    scene = Scene(profile, seed=seed)
    out = []
    for _ in range(n):
        scene.next_product()
        dist, st = scene.tof_zone(res)
        factors = scene.spectral_factors()
        spec = dict(_SPEC_BASE)
        for ch in codec.CHANNELS:
            spec[ch] = max(0, min(65535, int(REFERENCE[ch] * factors[ch])))
        out.append(graded({"res": res, "dist": [max(0, min(codec.MAX_DIST, int(d))) for d in dist],
                           "st": [int(s) for s in st]}, spec))
    return out
