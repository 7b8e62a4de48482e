"""Calibration through the full firmware path, on MicroPython:
scene -> VL53L8/AS7341 models -> I2C bus -> drivers -> sqalfw.quality.analyze.

Targets (a *choice*, shared/domain.md section 4 and docs/emulation.md "Calibration"): each
profile grades as its name says (premium A+, good A, acceptable B, low C, defective REJECT); a
premium lot is mostly A+/A, a defective lot mostly C/REJECT; the default mix is mostly A and B
with a few C and REJECT and not mostly A+; liver weights fall in 400-800 g.
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

def make_clock():
    now = [0.0]
    def clock():
        now[0] += 5.0   # model time moves with every look at it: no real waiting
        return now[0]
    return clock

async def lot(profile, seed, n):
    # each lot has its own clock and bus, so running the lots concurrently (their drivers' 2 ms
    # polling sleeps overlap) gives the same numbers as running them one by one
    scene = Scene(profile, seed)
    bus = RetryingI2C(build(make_clock(), scene=scene, seed=seed))
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

async def main():
    res = await asyncio.gather(*[lot(p, SEED, N) for p in PROFILES])
    return dict(zip(PROFILES, res))

print(json.dumps(asyncio.run(main())))
"""
PROFILES = ("premium", "good", "acceptable", "low", "defective", "default")
EXPECTED = {"premium": "A+", "good": "A", "acceptable": "B", "low": "C", "defective": "REJECT"}


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory, micropython_bin: str) -> dict:
    import os
    import subprocess

    from tests.fixtures.micropython import micropython_path

    d: Path = tmp_path_factory.mktemp("cal")
    fw = d / "fw.bin"
    fwblob.write_blob(str(fw))
    script = d / "cal.py"
    script.write_text(f"FW = {str(fw)!r}\nSEED = 2024\nN = {N}\nPROFILES = {PROFILES!r}\n" + SCRIPT)
    proc = subprocess.run([micropython_bin, "-X", "heapsize=512k", str(script)], capture_output=True, check=False,
                          text=True, timeout=300, env=dict(os.environ, MICROPYPATH=micropython_path()),
                          cwd=d)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    order = ("A+", "A", "B", "C", "REJECT")
    for name in PROFILES:
        g = result[name]["grades"]
        print(f"calibration {name:<10} " + " ".join(f"{x}={g.get(x, 0)}" for x in order))
    return result


def share(result: dict, *grades: str) -> float:
    g = result["grades"]
    return sum(g.get(x, 0) for x in grades) / sum(g.values())


@pytest.mark.parametrize("profile", sorted(EXPECTED))
def test_each_profile_grades_as_its_name_says(calibration: dict, profile: str) -> None:
    g = calibration[profile]["grades"]
    assert max(g, key=lambda k: g[k]) == EXPECTED[profile], g


def test_premium_lot_grades_mostly_a_plus_or_a(calibration: dict) -> None:
    assert share(calibration["premium"], "A+", "A") >= 0.8, calibration["premium"]["grades"]


def test_defective_lot_grades_mostly_c_or_reject(calibration: dict) -> None:
    assert share(calibration["defective"], "C", "REJECT") >= 0.8, calibration["defective"]["grades"]


def test_default_mix_grades_mostly_a_or_b_with_a_few_c_or_reject(calibration: dict) -> None:
    g = calibration["default"]
    assert share(g, "A", "B") >= 0.55, g["grades"]
    assert 0.05 <= share(g, "C", "REJECT") <= 0.3, g["grades"]
    assert share(g, "A+") <= 0.3, g["grades"]  # the original graded almost everything A+ or REJECT


def test_weights_are_realistic(calibration: dict) -> None:
    w = [x for name in PROFILES for x in calibration[name]["weights"]]
    inside = [x for x in w if 400 <= x <= 800]
    assert len(inside) >= 0.9 * len(w), sorted(w)
    for name, least in (("premium", 0.95), ("good", 0.95), ("default", 0.9)):  # lot by lot too
        w = calibration[name]["weights"]
        assert sum(1 for x in w if 400 <= x <= 800) >= least * len(w), (name, sorted(w))
