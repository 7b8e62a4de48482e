"""The shared quality model (firmware/sqalfw/quality.py): hand-computed cases, and the same results
on CPython and on the real MicroPython interpreter."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from sqalfw import quality
from sqalfw.quality import analyze, grade_of, ratio_score

from tests.firmware.quality_cases import REF, block, cross_cases, scene


def liver() -> list[int]:
    """A sound liver for score tests: 3 x 4 zones at 70 mm = 708.75 cm3 = 671.19 g."""
    return block(8, 70, range(2, 5), range(2, 6))


# ToF score of liver() by hand: size (671.19 - 300) / 400 = 0.92797; firmness (70 - 30) / 45
LIVER_TOF = 0.6 * (671.18625 - 300) / 400 + 0.4 * 40 / 45


# --- ToF features by hand ------------------------------------------------------------------------

def test_flat_block_volume_weight_and_features() -> None:
    f = quality.tof_features(block(), [5] * 64, 8)
    # 16 zones x 40 mm x (37.5 x 22.5 mm) = 540,000 mm3 = 540 cm3; x 0.947 = 511.38 g
    assert f["volume_cm3"] == pytest.approx(16 * 40 * 37.5 * 22.5 / 1000)
    assert f["volume_cm3"] == pytest.approx(540.0)
    assert f["weight_g"] == pytest.approx(511.38)
    assert (f["occupied_zones"], f["valid_zones"], f["invalid_zones"]) == (16, 64, 0)
    assert (f["height_mean_mm"], f["height_max_mm"], f["height_min_mm"], f["height_sd_mm"]) == (40, 40, 40, 0)
    assert f["uniformity"] == 1.0 and f["defects"] == []


def test_4x4_zone_area_is_75_by_45() -> None:
    f = quality.tof_features(block(4, 30, range(1, 3), range(1, 3)), [9] * 16, 4)
    assert f["volume_cm3"] == pytest.approx(4 * 30 * 75 * 45 / 1000)  # 405 cm3


def test_height_is_from_tray_top_and_clipped() -> None:
    d = [95] * 64
    d[0], d[1] = 100, 120  # below the tray top: height 0, not negative
    d[9] = 45  # 50 mm
    f = quality.tof_features(d, [5] * 64, 8)
    assert f["height_max_mm"] == 50 and f["occupied_zones"] == 1
    assert f["volume_cm3"] == pytest.approx(50 * 843.75 / 1000)


def test_invalid_zones_are_excluded_and_counted() -> None:
    st = [5] * 64
    d = block()
    for i in (18, 19, 63):  # two liver zones and one tray zone untrusted
        st[i] = 0 if i != 63 else 255
    d[18] = 5  # an untrusted zone may say anything: it must not count
    f = quality.tof_features(d, st, 8)
    assert f["invalid_zones"] == 3 and f["valid_zones"] == 61 and f["occupied_zones"] == 14
    assert f["volume_cm3"] == pytest.approx(14 * 40 * 843.75 / 1000)
    assert f["height_max_mm"] == 40


def test_uniformity_is_mean_gradient_per_mm() -> None:
    d = block()
    for r in range(2, 6):
        d[r * 8 + 5] = 95 - 55  # right column 55 mm: 4 horizontal steps of 15 mm over 37.5 mm
    f = quality.tof_features(d, [5] * 64, 8)
    # 12 horizontal pairs (3 per row): 4 with 15/37.5 = 0.4; 12 vertical pairs, all 0
    assert f["uniformity"] == pytest.approx(1 / (1 + 4 * 0.4 / 24))


def test_foreign_body_is_a_zone_above_all_neighbours() -> None:
    d = block()
    d[3 * 8 + 3] = 95 - 60  # +20 mm over a 40 mm block
    f = quality.tof_features(d, [5] * 64, 8)
    assert f["height_median_mm"] == 40
    assert f["defects"] == [{"zone": 27, "type": "foreign_body", "dev_mm": 20.0, "severity": 1.0}]  # 20/(0.5*40)
    d[27] = 95 - 52  # +12 mm: severity 12 / 20 = 0.6
    f = quality.tof_features(d, [5] * 64, 8)
    assert f["defects"] == [{"zone": 27, "type": "foreign_body", "dev_mm": 12.0, "severity": pytest.approx(0.6)}]
    d[27] = 95 - 47  # +7 mm: under the 8 mm threshold
    assert quality.tof_features(d, [5] * 64, 8)["defects"] == []


def test_deformation_is_a_zone_below_both_ends_of_a_line() -> None:
    d = block()
    d[3 * 8 + 3] = 95 - 25  # a 15 mm dent inside the block
    f = quality.tof_features(d, [5] * 64, 8)
    assert f["defects"] == [{"zone": 27, "type": "deformation", "dev_mm": -15.0, "severity": 0.75}]


def test_healthy_dome_edges_and_top_are_not_defects() -> None:
    # the literal "distance from the median height" rule would flag most of these zones
    for seed in range(40):
        d = scene(random.Random(seed))
        f = quality.tof_features(d, [5] * 64, 8)
        assert f["defects"] == [], seed
        assert 350 < f["weight_g"] < 650


def test_tof_score_by_hand() -> None:
    f = quality.tof_features(liver(), [5] * 64, 8)
    assert f["weight_g"] == pytest.approx(671.18625)
    score, reasons = quality.tof_score(f)
    assert score == pytest.approx(LIVER_TOF) and reasons == []
    st = [5] * 64
    for i in range(8):  # 8 invalid tray zones: score - 8/64
        st[i] = 3
    assert quality.tof_score(quality.tof_features(liver(), st, 8))[0] == pytest.approx(score - 0.125)
    # a small, soft liver (the 40 mm block, 511.38 g) scores low enough to be a ToF REJECT
    score, reasons = quality.tof_score(quality.tof_features(block(), [5] * 64, 8))
    assert score == pytest.approx(0.6 * (511.38 - 300) / 400 + 0.4 * 10 / 45)
    assert reasons == ["tof: score below 0.45"]


def test_tof_score_curves() -> None:
    def tof(weight: float, hmax: float, defects: list | None = None) -> float:
        f = {"valid_zones": 64, "invalid_zones": 0, "occupied_zones": 12, "weight_g": weight,
             "height_max_mm": hmax, "defects": defects or []}
        return quality.tof_score(f)[0]

    assert tof(700, 75) == pytest.approx(1.0) and tof(800, 90) == pytest.approx(1.0)
    assert tof(500, 75) == pytest.approx(0.6 * 0.5 + 0.4)  # size halfway from 300 to 700 g
    assert tof(900, 75) == pytest.approx(0.6 * 0.6 + 0.4)  # overfattened
    assert tof(700, 52.5) == pytest.approx(0.6 + 0.4 * 0.5)  # firmness halfway from 30 to 75 mm
    assert tof(250, 20) == 0.0 and tof(1200, 75) == pytest.approx(0.4)
    # defects scale the geometry: x (1 - 0.5 x min(1, sum of severities))
    sev = [{"type": "deformation", "severity": 0.3}, {"type": "deformation", "severity": 0.2}]
    assert tof(700, 75, sev) == pytest.approx(0.75)
    assert tof(700, 75, sev * 3) == pytest.approx(0.5)


def test_tof_reject_rules() -> None:
    _, reasons = quality.tof_score(quality.tof_features([95] * 64, [5] * 64, 8))
    assert reasons == ["tof: no product detected"]
    st = [5] * 48 + [0] * 16
    _, reasons = quality.tof_score(quality.tof_features(liver(), st, 8))
    assert reasons == []  # exactly 25 % invalid is tolerated
    st[47] = 0
    score, reasons = quality.tof_score(quality.tof_features(liver(), st, 8))
    assert reasons == ["tof: 17 of 64 zones invalid"] and score == 0.0


# --- spectral by hand ----------------------------------------------------------------------------

BANDS = [(r[3], r[4], r[5], r[6]) for r in quality.RATIOS]


@pytest.mark.parametrize("olo,ohi,alo,ahi", BANDS)
def test_ratio_score_band_edges(olo: float, ohi: float, alo: float, ahi: float) -> None:
    assert ratio_score(olo, olo, ohi, alo, ahi) == 1.0
    assert ratio_score(ohi, olo, ohi, alo, ahi) == 1.0
    assert ratio_score((olo + ohi) / 2, olo, ohi, alo, ahi) == 1.0
    assert ratio_score(alo, olo, ohi, alo, ahi) == pytest.approx(0.7)
    assert ratio_score(ahi, olo, ohi, alo, ahi) == pytest.approx(0.7)
    assert ratio_score((alo + olo) / 2, olo, ohi, alo, ahi) == pytest.approx(0.85)
    assert ratio_score((ohi + ahi) / 2, olo, ohi, alo, ahi) == pytest.approx(0.85)
    assert ratio_score(alo - 1e-9, olo, ohi, alo, ahi) == 0.3
    assert ratio_score(ahi + 1e-9, olo, ohi, alo, ahi) == 0.3
    assert ratio_score(None, olo, ohi, alo, ahi) == 0.3


def test_bands_are_domain_md() -> None:
    assert BANDS == [(0.25, 0.45, 0.20, 0.55), (1.2, 1.8, 1.0, 2.0), (1.3, 1.7, 1.1, 2.0), (0.8, 1.2, 0.7, 1.4),
                     (0.35, 0.65, 0.25, 0.75), (0.5, 0.8, 0.4, 0.9)]


def test_reference_counts_score_one() -> None:
    s = quality.spectral(REF)
    assert s["ratios"]["F1/F7"] == pytest.approx(400 / 1150)
    assert s["ratios"]["(F7+F8)/F4"] == pytest.approx(1900 / 1900)
    assert (s["freshness"], s["fat_quality"], s["color_uniformity"], s["oxidation"]) == (1, 1, 1, 0)
    assert s["score"] == pytest.approx(1.0)
    assert s["anomalies"] == []


def test_spectral_scores_by_hand() -> None:
    ch = dict(REF, F1=100, F2=200)
    s = quality.spectral(ch)
    # F1/F7 0.087 out; NIR/F1 6 out; (F5+F6)/(F1+F2) 5 out; (F7+F8)/F4 1.0 opt;
    # (F1+F2)/(F7+F8) 0.158 out; (F1+F3)/(F5+F6) 600/1500 = 0.4: acceptable edge 0.7
    fresh, fat, color = 0.3, 0.6 * 1.0 + 0.4 * 0.7, 0.3
    assert s["freshness"] == pytest.approx(fresh) and s["fat_quality"] == pytest.approx(fat)
    assert s["oxidation"] == pytest.approx(1 - fat) and s["color_uniformity"] == pytest.approx(color)
    assert len(s["anomalies"]) == 4
    assert s["score"] == pytest.approx(0.35 * fresh + 0.30 * fat + 0.20 * color + 0.15 * fat - 0.4)
    # a little off-optimal: F1/F7 = 0.5 (acceptable, 0.7 + 0.3 x 0.05/0.10 = 0.85), no anomaly
    s = quality.spectral(dict(REF, F1=575, F2=425))
    assert s["ratio_scores"]["F1/F7"] == pytest.approx(0.85) and s["anomalies"] == []


def test_anomalies_and_penalty_cap() -> None:
    s = quality.spectral(dict(REF, CLEAR=65535))
    assert s["anomalies"] == ["CLEAR saturated"] and s["score"] == pytest.approx(0.9)
    s = quality.spectral(dict(REF, NIR=5))
    assert "NIR dark" in s["anomalies"]
    s = quality.spectral(dict(REF, saturated=True))
    assert s["anomalies"] == ["saturated"]
    s = quality.spectral({k: 0 for k in REF})  # every ratio undefined + every channel dark: capped at -0.5
    assert len(s["anomalies"]) == 16 and s["score"] == 0.0
    s = quality.spectral(dict(REF, F3=65535, F4=65535, F5=65535, F6=65535, F7=65535, F8=65535))
    assert s["score"] == pytest.approx(max(0.0, 0.35 * s["freshness"] + 0.30 * s["fat_quality"]
                                           + 0.20 * s["color_uniformity"] + 0.15 * s["fat_quality"] - 0.5))


def test_bad_channels_are_named() -> None:
    with pytest.raises(ValueError, match="channels.F3"):
        quality.spectral({k: v for k, v in REF.items() if k != "F3"})
    with pytest.raises(ValueError, match="expected 64 distances"):
        analyze([95] * 12, [5] * 64, 8, REF)
    with pytest.raises(ValueError, match="resolution"):
        analyze([95] * 36, [5] * 36, 6, REF)


# --- fusion, grades, forced REJECT, alerts -------------------------------------------------------------

@pytest.mark.parametrize("score,grade", [(1.0, "A+"), (0.85, "A+"), (0.849, "A"), (0.75, "A"), (0.749, "B"),
                                         (0.60, "B"), (0.599, "C"), (0.45, "C"), (0.449, "REJECT"), (0.0, "REJECT")])
def test_grade_thresholds(score: float, grade: str) -> None:
    assert grade_of(score) == grade


def test_fusion_by_hand() -> None:
    r = analyze(liver(), [5] * 64, 8, REF)
    tof = LIVER_TOF
    assert r["tof"]["score"] == round(tof, 3) == 0.912 and r["spectral"]["score"] == 1.0
    assert r["score"] == round(0.6 * tof + 0.4 * 1.0, 3) == 0.947
    assert r["grade"] == "A+" and r["alerts"] == [] and r["reject_reasons"] == []
    ch = dict(REF, F1=575, F2=425, CLEAR=65535)  # spectral 0.35 x (0.6 x 0.85 + 0.4) + ... - 0.1
    s = quality.spectral(ch)["score"]
    r = analyze(liver(), [5] * 64, 8, ch)
    assert r["score"] == round(0.6 * tof + 0.4 * s, 3)


def test_foreign_body_forces_reject() -> None:
    d = block(height=50)  # 4 x 4 zones at 50 mm: 639 g, median height 50
    d[27] = 95 - 69  # +19 mm: severity 19 / 25 = 0.76 > 0.7
    r = analyze(d, [5] * 64, 8, REF)
    assert r["score"] >= 0.6 and r["grade"] == "REJECT"  # the score alone would be B or better
    assert r["reject_reasons"] == ["foreign body in zone 27, severity 0.76"]
    assert r["alerts"] == ["critical:reject", "critical:foreign_body"]
    d[27] = 95 - 66  # +16 mm: severity 0.64, kept as a defect, not a REJECT
    r = analyze(d, [5] * 64, 8, REF)
    assert r["grade"] != "REJECT" and r["alerts"] == ["critical:foreign_body"]


def test_foreign_body_needs_every_neighbour_seen() -> None:
    # an optical patch hides the higher zones around a slope: the zone left visible is not a bump
    d = liver()
    d[3 * 8 + 6] = 95 - 20  # a 20 mm slope zone right of the liver
    st = [5] * 64
    assert [x["zone"] for x in quality.tof_features(d, st, 8)["defects"] if x["type"] == "foreign_body"] == []
    for z in (21, 29, 37):  # the liver zones to its left are untrusted
        st[z] = 4
    for z in (23, 31, 39, 22, 38):  # and the bare tray around it sits lower
        d[z] = 95
    assert [x for x in quality.tof_features(d, st, 8)["defects"] if x["type"] == "foreign_body"] == []
    st = [5] * 64
    d[21] = d[29] = d[37] = 95  # the same zone truly alone above seen neighbours is a bump
    assert [x["zone"] for x in quality.tof_features(d, st, 8)["defects"] if x["type"] == "foreign_body"] == [30]


def test_tof_reject_forces_reject_whatever_the_spectrum() -> None:
    r = analyze([95] * 64, [5] * 64, 8, REF)
    assert r["grade"] == "REJECT" and r["tof"]["grade"] == "REJECT" and r["spectral"]["grade"] == "A+"
    assert r["reject_reasons"] == ["tof: no product detected"]


def test_spectral_reject_forces_reject_whatever_the_shape() -> None:
    r = analyze(liver(), [5] * 64, 8, dict(REF, F1=100, F2=200))
    assert r["spectral"]["grade"] == "REJECT" and r["tof"]["grade"] == "A+"
    assert r["score"] >= 0.6  # 0.6 x 0.912 + 0.4 x 0.161: B by score, REJECT by rule
    assert r["grade"] == "REJECT" and r["reject_reasons"] == ["spectral: score below 0.45"]
    assert r["alerts"] == ["critical:reject", "warning:freshness_low"]


@pytest.mark.parametrize("args,alerts", [
    ((0.399, "REJECT", 1.0, 0.0), ["critical:score_low", "critical:reject"]),
    ((0.40, "C", 1.0, 0.0), ["warning:score_low"]),
    ((0.599, "C", 1.0, 0.0), ["warning:score_low"]),
    ((0.60, "B", 1.0, 0.0), []),
    ((0.9, "A+", 1.0, 0.71), ["warning:oxidation_high"]),
    ((0.9, "A+", 1.0, 0.70), []),
    ((0.9, "A+", 0.49, 0.0), ["warning:freshness_low"]),
    ((0.9, "A+", 0.50, 0.0), []),
])
def test_alerts(args: tuple[float, str, float, float], alerts: list[str]) -> None:
    assert quality.alerts_for(*args, []) == alerts


def test_oxidation_cannot_exceed_070_with_domain_ratio_scores() -> None:
    # every ratio score is >= 0.3, so fat quality >= 0.3 and oxidation <= 0.7: the domain's
    # "oxidation > 0.70" alert cannot fire from real channels (reported to the lead)
    s = quality.spectral({k: 0 for k in REF})
    assert s["oxidation"] == pytest.approx(0.7)


def test_rounding_at_the_end_only() -> None:
    r = analyze(liver(), [5] * 64, 8, REF)
    assert r["tof"]["weight_g"] == 671.186 and r["tof"]["score"] == 0.912
    assert quality.r3(0.0005) == 0.001 and quality.r3(-0.0005) == -0.001 and quality.r3(0.8124999) == 0.812


# --- a synthetic scene (tests/firmware/quality_cases.py), for calibration ------------------------------

def test_calibration_sound_livers_score_well_on_tof() -> None:
    # big, firm livers (about 600-720 g, 70-80 mm): the original graded every liver REJECT on ToF
    rng = random.Random(7)
    frames = [scene(rng, size=1.1, c_mm=(70, 80)) for _ in range(40)]
    scores = [analyze(d, [5] * 64, 8, REF)["tof"]["score"] for d in frames]
    assert min(scores) >= 0.75 and sorted(scores)[20] >= 0.85, sorted(scores)
    assert all(analyze(d, [5] * 64, 8, REF)["grade"] in ("A+", "A") for d in frames)
    # the same livers, smaller and softer, score lower: the ToF score grades size and firmness
    rng = random.Random(7)
    small = [analyze(scene(rng, size=0.95, c_mm=(55, 62)), [5] * 64, 8, REF)["tof"]["score"] for _ in range(40)]
    assert max(small) < min(scores)


MP_SCRIPT = r"""
import json, gc
from sqalfw import quality
for line in open("cases.txt"):
    d, st, res, ch = json.loads(line)
    print(json.dumps(quality.analyze(d, st, res, ch)))
    gc.collect()
"""


def assert_same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-6, path
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_micropython_gives_the_same_results(micropython_run: Any, tmp_path: Any) -> None:
    cases = cross_cases()
    (tmp_path / "cases.txt").write_text("".join(json.dumps(c) + "\n" for c in cases))
    mp = [json.loads(x) for x in micropython_run(MP_SCRIPT, cwd=tmp_path).stdout.splitlines()]
    py = [json.loads(json.dumps(analyze(*c))) for c in cases]
    assert len(mp) == len(py) == len(cases)
    for i, (a, b) in enumerate(zip(py, mp)):
        assert_same(a, b, f"case {i}")
    grades = {r["grade"] for r in py}
    assert "REJECT" in grades and len(grades) >= 3  # the cases cover more than one outcome
    assert any(r["tof"]["defects"] for r in py) and any(r["tof"]["invalid_zones"] for r in py)


# --- the table-driven defect scan against the rule read literally ------------------------------

def literal_defects(h: list[float], valid: list[bool], occ: list[bool], res: int, med: float,
                    threshold: float) -> list[tuple[int, str, float]]:
    """The defect rule of the module comment, zone by zone, with no tables and no early exits."""
    out = []
    for i in range(res * res):
        if not occ[i] or med <= 0:
            continue
        r, c = divmod(i, res)
        nbs = [(r + dr) * res + c + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)
               if (dr or dc) and 0 <= r + dr < res and 0 <= c + dc < res]
        dev = 0.0
        if all(valid[j] for j in nbs) and h[i] - max(h[j] for j in nbs) > threshold:
            dev = h[i] - max(h[j] for j in nbs)
        else:
            for dr1, dc1, dr2, dc2 in ((0, -1, 0, 1), (-1, 0, 1, 0), (-1, -1, 1, 1), (-1, 1, 1, -1)):
                ends = [(r + dr1, c + dc1), (r + dr2, c + dc2)]
                if all(0 <= rr < res and 0 <= cc < res for rr, cc in ends):
                    j, k = (rr * res + cc for rr, cc in ends)
                    if occ[j] and occ[k] and h[i] - min(h[j], h[k]) < min(dev, -threshold):
                        dev = h[i] - min(h[j], h[k])
        if dev:
            out.append((i, "foreign_body" if dev > 0 else "deformation", dev))
    return out


@pytest.mark.parametrize("res", [4, 8])
def test_defect_scan_matches_the_literal_rule(res: int) -> None:
    rng = random.Random(res)
    found = 0
    for _ in range(400):
        n = res * res
        h = [max(0.0, rng.gauss(40, 25)) for _ in range(n)]
        valid = [rng.random() > 0.1 for _ in range(n)]
        h = [x if v else 0.0 for x, v in zip(h, valid)]
        occ = [x > 3 for x in h]
        med, thr = 40.0, quality.DEFECT_MM[res]
        got = [(d["zone"], d["type"], d["dev_mm"]) for d in quality._defects(h, valid, occ, res, med, thr)]
        assert got == literal_defects(h, valid, occ, res, med, thr)
        found += len(got)
    assert found > 100  # the frames are rough enough to exercise both kinds of defect


def literal_uniformity(h: list[float], occ: list[bool], res: int, zw: float, zh: float) -> float:
    """1 / (1 + mean |gradient|) over 4-adjacent occupied pairs, zone by zone (right, then down)."""
    grads = []
    for r in range(res):
        for c in range(res):
            i = r * res + c
            if occ[i] and c + 1 < res and occ[i + 1]:
                grads.append(abs(h[i] - h[i + 1]) / zw)
            if occ[i] and r + 1 < res and occ[i + res]:
                grads.append(abs(h[i] - h[i + res]) / zh)
    total = 0.0
    for g in grads:  # left to right, as the model sums
        total += g
    return 1.0 / (1.0 + total / len(grads)) if grads else 0.0


def literal_rounded(x: Any) -> Any:
    """Every float of nested dicts and lists rounded half away from zero to 3 decimals (a copy)."""
    if type(x) is float:
        return quality.r3(x)
    if type(x) is dict:
        return {k: literal_rounded(v) for k, v in x.items()}
    if type(x) is list:
        return [literal_rounded(v) for v in x]
    return x


@pytest.mark.parametrize("res", [4, 8])
def test_uniformity_and_rounding_match_their_literal_rules(res: int) -> None:
    rng = random.Random(res + 100)
    for _ in range(300):
        n = res * res
        h = [max(0.0, rng.gauss(40, 25)) for _ in range(n)]
        occ = [x > 3 and rng.random() > 0.1 for x in h]
        zw, zh = 300 / res, 180 / res
        assert quality._uniformity(h, occ, res, zw, zh) == literal_uniformity(h, occ, res, zw, zh)
    nested = {"a": -0.0005, "b": [0.0005, -1.23456, 7, "x", True, None, {"c": 2.0004999, "d": [[-3.9995]]}],
              "e": {"f": {}, "g": []}, "h": 1e-9, "i": -2.5e-4}
    for _ in range(200):
        nested["r"] = [rng.uniform(-100, 100) for _ in range(5)]
        want = literal_rounded(nested)
        got = quality._round_in_place(json.loads(json.dumps(nested)))
        assert repr(got) == repr(want)
    # and analyze's output is rounded throughout (its numbers come from those of the model)
    r = analyze(scene(random.Random(1)), [5] * 64, 8, REF)
    assert repr(literal_rounded(r)) == repr(r)
