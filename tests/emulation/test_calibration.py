"""Calibration through the full firmware path, on MicroPython:
scene -> VL53L8/AS7341 models -> I2C bus -> drivers -> sqalfw.quality.analyze.

Targets (shared/domain.md section 4): a premium lot grades mostly A+/A, the default profile mix
mostly A/B with a few C/REJECT, a defective lot mostly C/REJECT; liver weights fall in 400-800 g.
"""

import json
from pathlib import Path

import pytest

from emulation.peripherals import fwblob

N = 60

SCRIPT = """
import asyncio, json
from emulation.peripherals import build
from emulation.peripherals.scene import Scene
from sqalfw.drivers.i2cbus import RetryingI2C
from sqalfw.drivers.vl53l8 import VL53L8
from sqalfw.drivers.as7341 import AS7341
from sqalfw import quality

now = [0.0]
def clock():
    now[0] += 5.0   # model time moves with every look at it: no real waiting
    return now[0]

async def lot(profile, seed, n):
    scene = Scene(profile, seed)
    bus = RetryingI2C(build(clock, scene=scene, seed=seed))
    tof = VL53L8(bus, FW)
    tof.init()
    tof.start(8, 15)
    spec = AS7341(bus)
    spec.init(29, 599, 3)
    grades = {}
    weights = []
    for i in range(n):
        if i:
            scene.next_product()
        dist, st = await tof.measure(timeout_ms=5000)
        ch = await spec.measure(timeout_ms=5000)
        q = quality.analyze(dist, st, 8, ch)
        grades[q["grade"]] = grades.get(q["grade"], 0) + 1
        weights.append(int(q["tof"]["weight_g"]))
    return {"grades": grades, "weights": weights}

out = {}
for profile in ("premium", "default", "defective"):
    out[profile] = asyncio.run(lot(profile, SEED, N))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory, micropython_bin: str) -> dict:
    import os
    import subprocess

    from tests.fixtures.micropython import micropython_path

    d: Path = tmp_path_factory.mktemp("cal")
    fw = d / "fw.bin"
    fwblob.write_blob(str(fw))
    script = d / "cal.py"
    script.write_text(f"FW = {str(fw)!r}\nSEED = 2024\nN = {N}\n" + SCRIPT)
    proc = subprocess.run([micropython_bin, "-X", "heapsize=512k", str(script)], capture_output=True, check=False,
                          text=True, timeout=300, env=dict(os.environ, MICROPYPATH=micropython_path()),
                          cwd=d)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    print("calibration histograms:", {k: v["grades"] for k, v in result.items()})
    return result


def share(result: dict, *grades: str) -> float:
    g = result["grades"]
    return sum(g.get(x, 0) for x in grades) / sum(g.values())


def test_premium_lot_grades_mostly_a_plus_or_a(calibration: dict) -> None:
    assert share(calibration["premium"], "A+", "A") >= 0.8, calibration["premium"]["grades"]


def test_defective_lot_grades_mostly_c_or_reject(calibration: dict) -> None:
    assert share(calibration["defective"], "C", "REJECT") >= 0.8, calibration["defective"]["grades"]


def test_default_mix_grades_mostly_a_or_b_with_a_few_c_or_reject(calibration: dict) -> None:
    g = calibration["default"]
    assert share(g, "A", "B") >= 0.5, g["grades"]
    assert 0.02 <= share(g, "C", "REJECT") <= 0.3, g["grades"]


def test_weights_are_realistic(calibration: dict) -> None:
    for profile in ("premium", "default"):
        w = calibration[profile]["weights"]
        inside = [x for x in w if 400 <= x <= 800]
        assert len(inside) >= 0.9 * len(w), (profile, sorted(w))
