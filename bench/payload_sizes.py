"""Print the JSON and binary sizes of contract v1 samples (docs/contract.md section 10).

Run: .venv/bin/python bench/payload_sizes.py
"""

from __future__ import annotations

import math
import random
from typing import Any

from sqalfw import codec


def typical_frame(res: int, rng: random.Random) -> list[int]:
    """Distances of a liver (half-ellipsoid 85 x 42.5 x 70 mm, 45 deg) on the tray, sensor 100 mm above."""
    zw, zh = 300 / res, 180 / res
    out = []
    for r in range(res):
        for c in range(res):
            x, y = -150 + (c + 0.5) * zw, -90 + (r + 0.5) * zh
            u, v = (x + y) / math.sqrt(2), (y - x) / math.sqrt(2)
            q = 1 - (u / 85) ** 2 - (v / 42.5) ** 2
            out.append(round(95 - (70 * math.sqrt(q) if q > 0 else 0) + rng.gauss(0, 1)))
    return out


def sample(res: int, rng: random.Random, **over: Any) -> dict[str, Any]:
    n = res * res
    s: dict[str, Any] = {
        "v": 1, "device_id": "ESP32_DEMO_LL_01", "boot": 12, "seq": 3041, "ts": 1736850000123, "synced": True,
        "lot_id": "LOT_20250114_0042", "fw": "0.1.0",
        "tof": {"res": res, "dist": typical_frame(res, rng), "st": [5 if rng.random() > 0.05 else 255 for _ in range(n)]},
        "spec": {"F1": 402, "F2": 598, "F3": 505, "F4": 1893, "F5": 904, "F6": 597, "F7": 1148, "F8": 751,
                 "CLEAR": 6497, "NIR": 603, "gain": 4.0, "atime": 29, "astep": 599, "sat": False},
        "q": {"score": 0.812, "grade": "A"},
    }
    s.update(over)
    return s


def worst_case() -> dict[str, Any]:
    s = sample(8, random.Random(0), device_id="D" * 48, boot=codec.U32, seq=codec.U32, ts=codec.MAX_TS,
               synced=False, lot_id="LOT_20250114_123456", fw="1.2.3-rc.45+abcd", q={"score": 0.123, "grade": "REJECT"})
    s["tof"] = {"res": 8, "dist": [4000] * 64, "st": [255] * 64}
    s["spec"] = {**{ch: 65535 for ch in codec.CHANNELS}, "gain": 512.0, "atime": 255, "astep": 65534, "sat": True}
    return s


def main() -> None:
    rng = random.Random(1)
    rows = [("typical 8x8", sample(8, rng)), ("typical 4x4", sample(4, rng)), ("worst-case 8x8", worst_case())]
    print(f"{'sample':<16} {'JSON':>6} {'binary':>7} {'ratio':>6}")
    for name, s in rows:
        j, b = codec.encode_sample(s), codec.encode_sample_bin(s)
        assert codec.decode_sample(j) == codec.decode_sample(b)
        print(f"{name:<16} {len(j):>6} {len(b):>7} {len(b) / len(j):>6.2f}")
    print(f"limit: {codec.MAX_SAMPLE_BYTES} bytes per payload")


if __name__ == "__main__":
    main()
