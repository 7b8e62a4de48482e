"""Product scene: deterministic for a seed, the same under CPython and MicroPython."""

import inspect
import json

import pytest

from emulation.peripherals import profiles
from emulation.peripherals.scene import Scene


def dump(profile: str, seed: int, n: int) -> list:
    s = Scene(profile, seed)
    out = []
    for i in range(n):
        if i:
            s.next_product()
        d, st = s.tof_zone(8)
        d4, st4 = s.tof_zone(4)
        f = s.spectral_factors()
        assert s.product is not None
        out.append([s.product["profile"], [x["kind"] for x in s.product["defects"]], d, st, d4, st4,
                    [int(f[k] * 1e6 + 0.5) for k in sorted(f)]])
    return json.loads(json.dumps(out))


def test_same_seed_same_scene_on_both_interpreters(micropython_run) -> None:
    here = dump("default", 42, 12)
    # the same function, run by MicroPython (annotations with builtin names are fine there)
    src = inspect.getsource(dump)
    out = micropython_run("import json\nfrom emulation.peripherals.scene import Scene\n" + src
                          + "print(json.dumps(dump('default', 42, 12)))", heap="256k").stdout
    assert json.loads(out) == here
    assert dump("default", 42, 12) == here
    assert dump("default", 43, 12) != here


def test_liver_on_tray_geometry() -> None:
    s = Scene("premium", seed=5)
    d, st = s.tof_zone(8)
    # corners of the tray are bare: 100 mm sensor - 5 mm tray
    for z in (0, 7, 56, 63):
        assert abs(d[z] - 95) <= 4
    # the liver is up to ~80 mm high: the closest zone is well above the tray
    assert min(d) < 60
    assert all(x in (5, 9) for x in st)  # premium with no optical defect at this seed
    assert s.product is not None
    assert s.product["defects"] == []


def test_defects_show_in_the_frame() -> None:
    s = Scene("defective", seed=1)
    seen = set()
    for _ in range(60):
        p = s.next_product()
        kinds = {x["kind"] for x in p["defects"]}
        _, st = s.tof_zone(8)
        if "optical" in kinds:
            assert any(x not in (5, 9) for x in st)  # low reflectance -> untrusted statuses
        seen |= kinds
    assert seen == {"foreign_body", "deformation", "edge_damage", "optical"}


def test_profile_means_move_the_spectrum() -> None:
    prem = Scene("premium", seed=9).spectral_factors()
    bad = Scene("defective", seed=9).spectral_factors()
    for ch in ("F1", "F2", "F3", "F7", "F8", "CLEAR"):
        assert bad[ch] < prem[ch]
    for ch in ("F4", "F5", "F6", "NIR"):
        assert bad[ch] > prem[ch]


def test_default_mix_and_unknown_profile() -> None:
    s = Scene("default", seed=3)
    counts: dict[str, int] = {}
    for _ in range(1000):
        name = s.next_product()["profile"]
        counts[name] = counts.get(name, 0) + 1
    share = {k: v / 1000 for k, v in counts.items()}
    for name, pct in profiles.DEFAULT_MIX:
        assert abs(share.get(name, 0) - pct / 100) < 0.04, (name, share)
    with pytest.raises(ValueError, match="'gold' unknown"):
        Scene("gold")


REF = {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150, "F8": 750, "NIR": 600,
       "CLEAR": 6500}


def out_of_band(profile: str) -> list[str]:
    from sqalfw import quality

    f = profiles.spectral_factors(*profiles.PROFILES[profile])
    s = quality.spectral({k: REF[k] * f[k] for k in REF})
    return sorted(a.split(" ")[1] for a in s["anomalies"])


def test_profile_means_land_where_the_bands_say() -> None:
    # the deliberate mapping of profiles.POSITION / AGING / OXIDATION / POOR_FAT (docs/emulation.md)
    assert profiles.spectral_factors(1.0, 1.0, 0.0) == {k: 1.0 for k in profiles.CHANNELS}  # reference liver
    assert out_of_band("premium") == out_of_band("good") == out_of_band("acceptable") == []
    assert out_of_band("low") == ["(F5+F6)/(F1+F2)", "NIR/F1"]
    assert len(out_of_band("defective")) >= 4


def test_each_cause_moves_channels_the_physical_way() -> None:
    base = profiles.spectral_factors(0.9, 0.9, 0.1)
    aged = profiles.spectral_factors(0.5, 0.9, 0.1)
    oxid = profiles.spectral_factors(0.9, 0.9, 0.5)
    for ch in ("F1", "F2", "F3", "F7", "F8", "CLEAR"):
        assert aged[ch] < base[ch], ch
    for ch in ("F4", "F5", "NIR"):
        assert aged[ch] > base[ch], ch
    for ch in ("F6", "F4"):
        assert oxid[ch] > base[ch], ch
    for ch in ("F7", "F8"):
        assert oxid[ch] < base[ch], ch


def test_profile_drives_size_and_firmness() -> None:
    def mean(profile: str, key: str) -> float:
        s = Scene(profile, seed=11)
        vals = [s.next_product()[key] for _ in range(40)]
        return sum(vals) / len(vals)

    order = ("premium", "good", "acceptable", "low")
    weights = [mean(p, "weight_g") for p in order]
    heights = [mean(p, "c") for p in order]
    assert weights == sorted(weights, reverse=True) and heights == sorted(heights, reverse=True)
    assert 600 < weights[0] < 720 and 440 < weights[-1] < 520
    # the drawn weight is what the quality model measures (volume x 0.947 over the zone grid)
    from sqalfw import quality

    s = Scene("good", seed=4)
    for _ in range(10):
        p = s.next_product()
        if p["defects"]:
            continue
        d, st = s.tof_zone(8)
        assert abs(quality.tof_features(d, st, 8)["weight_g"] - p["weight_g"]) < 0.08 * p["weight_g"]


def _plain_tof_zone(s: Scene, res: int) -> tuple[list[int], list[int]]:
    """The scene's frame by its definition: each zone is the mean of the fixed-point height
    (point_q8, 1/256 mm) over its SUB x SUB points, plus ranging noise (a sum of four uniform
    bytes of one Rng.u32 draw, scaled to ~1 mm), rounded to mm, then the statuses; the same
    random draws in the same order."""
    from emulation.peripherals import scene as sc

    r = s.rng
    zw, zh = sc.TRAY_W / res, sc.TRAY_H / res
    assert s.product is not None
    optical = [d for d in s.product["defects"] if d["kind"] == "optical"]
    dist, st = [0] * (res * res), [5] * (res * res)
    for row in range(res):
        for col in range(res):
            total = 0
            for i in range(sc.SUB):
                for j in range(sc.SUB):
                    total += s.point_q8(res, col * sc.SUB + j, row * sc.SUB + i)
            z = row * res + col
            x = r.u32()
            noise = (sum((x >> b) & 255 for b in (0, 8, 16, 24)) - 510) * 111 // 64 / 256  # mm, sd ~1
            d = sc.SENSOR_MM - sc.TRAY_MM - total / 256 / (sc.SUB * sc.SUB) + noise
            dist[z] = int(d + 0.5) if d > 0 else 0
            xc, yc = -sc.TRAY_W / 2 + col * zw + zw / 2, -sc.TRAY_H / 2 + row * zh + zh / 2
            for o in optical:
                if (xc - o["x"]) ** 2 + (yc - o["y"]) ** 2 < o["r"] * o["r"]:
                    st[z] = sc.INVALID[int(r.u32() / 2**32 * len(sc.INVALID))]
            if st[z] == 5 and r.u32() < 0.03 * 2**32:
                st[z] = 9
    return dist, st


@pytest.mark.parametrize("profile", ["default", "premium", "low", "defective"])
def test_fast_frames_are_the_plain_definition(profile: str) -> None:
    # tof_zone works by differences along lines of points, in integers; its frames must be the
    # ones the plain point-by-point definition gives, for every kind of liver and both resolutions
    fast, plain = Scene(profile, seed=31), Scene(profile, seed=31)
    defects = set()
    for _ in range(80):
        p = fast.next_product()
        plain.next_product()
        defects |= {d["kind"] for d in p["defects"]}
        for res in (8, 4):
            assert fast.tof_zone(res) == _plain_tof_zone(plain, res)
    if profile == "defective":
        assert defects == {"foreign_body", "deformation", "edge_damage", "optical"}


@pytest.mark.parametrize("profile", ["default", "defective"])
def test_fixed_point_heights_follow_the_continuous_model(profile: str) -> None:
    # the fixed-point liver (point_q8) against height() in floats, at every sample point: within
    # 0.5 mm anywhere (the rim, where sqrt is steep), ~0.01 mm on average; defects included
    from emulation.peripherals import scene as sc

    s = Scene(profile, seed=17)
    worst = total = 0.0
    count = 0
    kinds: set[str] = set()
    for _ in range(40):
        p = s.next_product()
        kinds |= {d["kind"] for d in p["defects"]}
        for res in (8, 4):
            xs, ys = sc._geo(res)[:2]
            for k in range(res * sc.SUB):
                for m in range(res * sc.SUB):
                    f = s.height(xs[m], ys[k])
                    e = abs(s.point_q8(res, m, k) / 256 - f)
                    worst = max(worst, e)
                    if f > 0:
                        total += e
                        count += 1
    assert count > 1000
    assert worst < 0.5 and total / count < 0.02, (worst, total / count)
    if profile == "defective":
        assert {"foreign_body", "deformation", "edge_damage"} <= kinds


def test_ranging_noise_is_about_one_mm() -> None:
    # bare-tray zones read 95 mm + Normal(0, 1)-like noise, rounded to the mm
    s = Scene("premium", seed=3)
    bare = []
    for _ in range(200):
        s.next_product()
        d, _ = s.tof_zone(8)
        bare += [d[z] for z in (0, 7, 56, 63)]
    mean = sum(bare) / len(bare)
    sd = (sum((x - mean) ** 2 for x in bare) / len(bare)) ** 0.5
    assert abs(mean - 95) < 0.1 and 0.9 < sd < 1.15, (mean, sd)
    assert min(bare) >= 91 and max(bare) <= 99  # tails end at ~3.5 sd


def test_viper_frames_are_the_python_frames(micropython_run) -> None:
    # on MicroPython the point loop and the ranges run as viper machine code (_scenefast); they
    # must give what the Python versions give, and they must be the ones in use
    out = micropython_run("""
from array import array
from emulation.peripherals import scene as sc
assert sc._fast is not None and sc._heights is sc._fast.heights
bad = n = 0
for prof in ("default", "defective"):
    a = sc.Scene(prof, 9)
    b = sc.Scene(prof, 9)
    for i in range(60):
        if i:
            a.next_product()
            b.next_product()
        for res in (8, 4):
            fast = a.tof_zone(res)
            geo = sc._geo(res)
            zs = array("i", bytes(4 * res * res))
            sc._heights_py(zs, geo[4], sc._SQRT, sc._SIN, sc._EXP, b._params(res))
            bad += fast != b._frame(res, zs, geo[2], geo[3])
            n += 1
print(bad, n, a.rng.s == b.rng.s)
""", heap="512k").stdout.split()
    assert out == ["0", "240", "True"]


def test_importing_the_scene_needs_no_large_transient_block(micropython_run) -> None:
    """An emulated device imports the scene late (at its first I2C bus use), when its heap is already
    fragmented. Built through lists, the lookup tables needed a 32 KiB block on the way (a 2049-item
    list on the 64-bit unix port) and the import needed 140 KiB of heap for 49 KiB kept: a device's
    sensors then failed to start now and then. From generators it fits in 112 KiB, as compiled for a
    device (.mpy)."""
    from emulation.device import ensure_mpy_cache

    out = micropython_run("import gc\nimport emulation.peripherals.scene\ngc.collect()\nprint(gc.mem_alloc())",
                          heap="112k", env={"MICROPYPATH": f"{ensure_mpy_cache()}:.frozen"}).stdout
    assert 30_000 < int(out.split()[-1]) < 80_000  # what the module keeps
