"""Inputs of the quality model's tests and the gateway's (compiled model): the reference spectrum,
flat blocks, a synthetic liver scene (domain.md section 3) and the cross-interpreter cases."""

from __future__ import annotations

import math
import random
from typing import Any

# Reference counts of domain.md (gain 4, 100 ms): every ratio falls in its optimal band.
REF = {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150, "F8": 750, "NIR": 600,
       "CLEAR": 6500}


def block(res: int = 8, height: float = 40, rows: range = range(2, 6), cols: range = range(2, 6)) -> list[int]:
    """A flat block of `height` mm on the tray (distance 95 - height), bare tray (distance 95) elsewhere."""
    d = [95] * (res * res)
    for r in rows:
        for c in cols:
            d[r * res + c] = int(95 - height)
    return d


def scene(rng: random.Random, res: int = 8, bump: float = 0.0, invalid: int = 0, size: float = 1.0,
          c_mm: tuple[float, float] = (55, 80)) -> list[int]:
    """Half-ellipsoid liver (85 x 42.5 x 55-80 mm, x size) at 45 +/- 22 deg, zone = mean height over the zone."""
    c = rng.uniform(*c_mm)
    th = math.radians(rng.gauss(45, 22))
    cx, cy = rng.uniform(-10, 10), rng.uniform(-8, 8)
    bx, by = cx + rng.uniform(-15, 15), cy + rng.uniform(-8, 8)
    zw, zh = 300 / res, 180 / res

    def h(x: float, y: float) -> float:
        u = (x - cx) * math.cos(th) + (y - cy) * math.sin(th)
        v = -(x - cx) * math.sin(th) + (y - cy) * math.cos(th)
        r = 1 - (u / (85 * size)) ** 2 - (v / (42.5 * size)) ** 2
        z = c * math.sqrt(r) if r > 0 else 0.0
        if z > 0:
            z += 0.75 * (math.sin(x / 20) + math.sin(y / 15)) + bump * math.exp(-((x - bx) ** 2 + (y - by) ** 2) / 288)
        return max(z, 0.0)

    out = []
    for r in range(res):
        for col in range(res):
            vals = [h(-150 + col * zw + (i + 0.5) * zw / 5, -90 + r * zh + (j + 0.5) * zh / 5)
                    for i in range(5) for j in range(5)]
            out.append(round(95 - sum(vals) / 25 + rng.gauss(0, 1)))
    return out


def cross_cases() -> list[list[Any]]:
    rng = random.Random(11)
    cases: list[list[Any]] = []
    spectra = [REF, dict(REF, F1=575, F2=425), dict(REF, F1=100, F2=200), dict(REF, CLEAR=65535, NIR=3),
               {k: rng.randint(0, 3000) for k in REF}, {k: 0 for k in REF}]
    for k in range(24):
        res = 4 if k % 6 == 5 else 8
        d = scene(rng, res, bump=25 if k % 4 == 1 else 0)
        st = [5 if rng.random() > 0.08 else rng.choice([0, 4, 255]) for _ in range(res * res)]
        if k % 5 == 0:
            st = [9] * (res * res)
        cases.append([d, st, res, spectra[k % len(spectra)]])
    d = block()
    d[27] = 40
    cases += [[block(), [5] * 64, 8, REF], [d, [5] * 64, 8, REF], [[95] * 64, [5] * 64, 8, REF]]
    return cases
