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
