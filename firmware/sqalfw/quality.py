# The SQAL quality model (shared/domain.md section 4): one implementation, run on the board for a
# provisional grade and by the gateway for the authoritative one. Pure Python, no numpy, so it runs
# unchanged on MicroPython; the tests run it under both interpreters and compare the results.
#
# ToF features (VL53L8, res x res zones over the 300 x 180 mm tray):
#   height = 100 mm (sensor) - 5 mm (tray) - distance, clipped at 0. Subtracting the tray thickness is
#   a choice: heights are measured from the tray top, where the liver rests, not from the belt.
#   Only zones with target status 5 or 9 are trusted; the others are excluded and counted.
#   occupied = valid zones with height > 5 % of the max height (the liver; the rest is bare tray).
#   volume = sum over occupied zones of height x true zone area (37.5 x 22.5 mm at 8x8, 75 x 45 at
#   4x4); summing only occupied zones keeps the tray's range noise out of the volume.
#   weight = volume x 0.947 g/cm3. Mean/max/min height and spread (sd) are over occupied zones.
#   uniformity = 1 / (1 + mean |gradient|), gradient = height step between 4-adjacent occupied zones
#   divided by their spacing (mm/mm, so the value does not depend on the resolution).
# Defects (choice). The literal rule "deviation from the median height" flags every liver: a liver
#   is a dome whose heights run from 0 at the edge to ~80 mm at the top, so its edges and top always
#   sit far from the median. We keep the median as the severity scale and compare each zone with its
#   neighbours instead, using the one fact about a dome that a defect breaks, convexity:
#   - foreign body: a zone higher than every neighbour by more than the threshold (a dome's
#     top exceeds its neighbours by at most curvature x spacing^2 / 2, under 8 mm at 8x8 for the
#     scene's livers); dev = height - max(neighbours) > 0. Every neighbour on the grid must be
#     valid: an untrusted one (e.g. a low-reflectance patch) may hide the higher surface, and
#     without this a slope zone next to such a patch read as a foreign body and forced a REJECT.
#   - deformation: a zone lower than both occupied zones of an opposite pair (left/right, up/down,
#     either diagonal) by more than the threshold; on a convex surface the middle of three aligned
#     points is never below both ends, so this does not fire on healthy edges; dev < 0.
#   threshold 8 mm at 8x8 (the low end of a 10-25 mm foreign body, above the dome top's excess) and
#   20 mm at 4x4 (zones twice as wide: only gross defects are visible there).
#   severity = min(1, |dev| / (0.5 x median height of occupied zones)).
# ToF score (choice; revised with the scene calibration, docs/emulation.md):
#   geometry = 0.6 size + 0.4 firmness, each 0..1:
#   size: weight, 0 at 300 g rising linearly to 1.0 at 700 g (the "extra" class, 700-800 g stays
#     1.0), then down to 0.6 at 900 g and 0 at 1100 g (overfattened livers melt when cooked);
#   firmness: max height, 0 at 30 mm rising linearly to 1.0 at 75 mm: a fresh, well-fattened liver
#     holds a tall dome, a soft or old one slumps.
#   defects scale the geometry: x (1 - 0.5 x min(1, sum of severities)).
#   tof score = geometry x defects - invalid zone fraction, clipped to 0..1.
#   Uniformity stays a reported feature but is not scored: at 8x8 a dome's own slope dominates
#   the mean gradient (0.56-0.62 for every liver of the scene, good or bad), so it does not grade.
#   Scene livers score about: 660 g / 70 mm -> 0.9, 590 g / 63 mm -> 0.73, 500 g / 56 mm -> 0.53.
#   ToF REJECT when no product is seen (max height < 10 mm or fewer than 2 occupied zones), when more
#   than 25 % of zones are invalid, or when the ToF score itself grades REJECT (< 0.45).
# Spectral (AS7341), exactly domain.md: six ratios scored 1.0 inside the optimal band, 0.7..1.0
#   (linear, 1.0 at the optimal edge) inside the acceptable band, 0.3 outside; a ratio with a zero
#   denominator is outside. freshness, fat quality, colour uniformity, oxidation and the spectral
#   score as written there; anomalies (ratio outside its acceptable band, channel >= 65500, channel
#   < 10, or the driver's saturation flag with no channel at 65500) cost 0.10 each, at most 0.50.
#   Spectral REJECT when the spectral score grades REJECT.
# Fusion 0.60 ToF + 0.40 spectral; grades A+ >= 0.85, A >= 0.75, B >= 0.60, C >= 0.45, else REJECT,
#   taken from the published score (3 decimals) so score and grade never disagree. A foreign body of
#   severity > 0.7 or a REJECT on either sensor forces REJECT; nothing later re-grades it.
# Alerts (alerts_for): "critical:score_low" (< 0.40), "warning:score_low" (< 0.60), "critical:reject",
#   "warning:oxidation_high" (> 0.70), "warning:freshness_low" (< 0.50), "critical:foreign_body".
# Rounding to 3 decimals happens once, at the end, in the same way on both interpreters.

SENSOR_MM = 100.0
TRAY_MM = 5.0
TRAY_W_MM = 300.0
TRAY_H_MM = 180.0
DENSITY = 0.947  # g/cm3
VALID_STATUS = (5, 9)
OCCUPIED_FRAC = 0.05
DEFECT_MM = {8: 8.0, 4: 20.0}
FB_REJECT_SEVERITY = 0.7
MAX_INVALID_FRAC = 0.25
MIN_PRODUCT_MM = 10.0
WEIGHT_CURVE = ((300, 0.0), (700, 1.0), (800, 1.0), (900, 0.6), (1100, 0.0))
FIRMNESS_CURVE = ((30, 0.0), (75, 1.0))
W_SIZE, W_FIRM = 0.6, 0.4
DEFECT_COST = 0.5
W_TOF, W_SPEC = 0.60, 0.40
GRADE_BANDS = ((0.85, "A+"), (0.75, "A"), (0.60, "B"), (0.45, "C"))

# name, numerator channels, denominator channels, optimal band, acceptable band
RATIOS = (
    ("F1/F7", ("F1",), ("F7",), 0.25, 0.45, 0.20, 0.55),
    ("NIR/F1", ("NIR",), ("F1",), 1.2, 1.8, 1.0, 2.0),
    ("(F5+F6)/(F1+F2)", ("F5", "F6"), ("F1", "F2"), 1.3, 1.7, 1.1, 2.0),
    ("(F7+F8)/F4", ("F7", "F8"), ("F4",), 0.8, 1.2, 0.7, 1.4),
    ("(F1+F2)/(F7+F8)", ("F1", "F2"), ("F7", "F8"), 0.35, 0.65, 0.25, 0.75),
    ("(F1+F3)/(F5+F6)", ("F1", "F3"), ("F5", "F6"), 0.5, 0.8, 0.4, 0.9),
)
CHANNELS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR")
SATURATED = 65500
DARK = 10


def grade_of(score):
    """Grade of a score in 0..1 (use the published, rounded score)."""
    for lo, g in GRADE_BANDS:
        if score >= lo:
            return g
    return "REJECT"


def r3(x):
    """Round half away from zero to 3 decimals; the same double on CPython and MicroPython."""
    if x < 0:
        return -r3(-x)
    return int(x * 1000 + 0.5) / 1000


def _clip(x, lo=0.0, hi=1.0):
    return lo if x < lo else hi if x > hi else x


def interp(x, curve):
    """Piecewise-linear lookup in ((x, y), ...) sorted by x, flat beyond the ends."""
    if x <= curve[0][0]:
        return curve[0][1]
    for k in range(1, len(curve)):
        x1, y1 = curve[k]
        if x <= x1:
            x0, y0 = curve[k - 1]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def _median(vals):
    s = sorted(vals)
    n = len(s)
    if n == 0:
        return 0.0
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# --- ToF ---

def tof_features(distances_mm, statuses, resolution):
    """Features of one VL53L8 frame (see the module comment). Raises ValueError on bad input."""
    res = resolution
    if res != 4 and res != 8:
        raise ValueError("resolution: %r is not 4 or 8" % (res,))
    n = res * res
    if len(distances_mm) != n or len(statuses) != n:
        raise ValueError("tof: expected %d distances and statuses, got %d and %d"
                         % (n, len(distances_mm), len(statuses)))
    zw = TRAY_W_MM / res
    zh = TRAY_H_MM / res
    # one pass for validity, heights and the max, one for occupancy; sums run left to right (not
    # sum(), which compensates on CPython >= 3.12 and would differ from MicroPython in the last bit)
    valid = [False] * n
    h = [0.0] * n
    base = SENSOR_MM - TRAY_MM
    n_valid = 0
    hmax = 0.0
    for i in range(n):
        st = statuses[i]
        if st == 5 or st == 9:  # VALID_STATUS
            valid[i] = True
            n_valid += 1
            v = base - distances_mm[i]
            if v > 0:
                h[i] = v
                if v > hmax:
                    hmax = v
    occ = [False] * n
    hs = []
    total = 0.0
    if hmax > 0:
        lim = OCCUPIED_FRAC * hmax
        for i in range(n):
            v = h[i]
            if v > lim:  # an untrusted zone has height 0, never above lim
                occ[i] = True
                hs.append(v)
                total += v
    n_occ = len(hs)
    f = {"resolution": res, "valid_zones": n_valid, "invalid_zones": n - n_valid, "occupied_zones": n_occ,
         "zone_w_mm": zw, "zone_h_mm": zh}
    if n_occ:
        mean = total / n_occ
        var = 0.0
        for x in hs:
            var += (x - mean) * (x - mean)
        sd = (var / n_occ) ** 0.5
        hmin = min(hs)
    else:
        mean = sd = hmin = 0.0
    volume = total * zw * zh / 1000.0  # mm3 -> cm3
    med = _median(hs)
    f["volume_cm3"] = volume
    f["weight_g"] = volume * DENSITY
    f["height_mean_mm"] = mean
    f["height_max_mm"] = hmax
    f["height_min_mm"] = hmin
    f["height_sd_mm"] = sd
    f["height_median_mm"] = med
    f["uniformity"] = _uniformity(h, occ, res, zw, zh)
    f["defects"] = _defects(h, valid, occ, res, med, DEFECT_MM[res])
    return f


def _uniformity(h, occ, res, zw, zh):
    total = 0.0
    count = 0
    n = res * res
    for i in range(n):
        if not occ[i]:
            continue
        a = h[i]  # heights go through locals: the compiled gateway copy types them as C doubles
        if i % res < res - 1 and occ[i + 1]:
            b = h[i + 1]
            total += abs(a - b) / zw
            count += 1
        if i + res < n and occ[i + res]:
            b = h[i + res]
            total += abs(a - b) / zh
            count += 1
    return 1.0 / (1.0 + total / count) if count else 0.0


_PAIRS = ((0, -1, 0, 1), (-1, 0, 1, 0), (-1, -1, 1, 1), (-1, 1, 1, -1))  # (dr1, dc1, dr2, dc2)
# The foreign-body scan stops at the first neighbour not far enough below; left and right come first
# (then up and down), so a zone on a slope is usually ruled out by its first or second neighbour.
# The order changes nothing else: the result is the max over all of them.
_NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (1, 1), (-1, 1), (1, -1))
_GRID = {}  # type: dict[int, bytes]  # res -> zone table, built once: the grid never changes
_STRIDE = 18  # per zone: neighbour count, 8 slots, pair-end count, 8 slots (j1, k1, j2, k2, ...)


def _grid(res):
    # One bytes object per resolution: ~1 KB of the board's heap at 8x8 (tuples took ~16 KB).
    g = _GRID.get(res)
    if g is None:
        g = _GRID[res] = bytes(_build_grid(res))
    return g


def _build_grid(res):
    g = bytearray(res * res * _STRIDE)
    for i in range(res * res):
        r = i // res
        c = i % res
        at = i * _STRIDE
        for dr, dc in _NEIGHBOURS:
            rr = r + dr
            cc = c + dc
            if 0 <= rr < res and 0 <= cc < res:
                g[at] += 1
                g[at + g[at]] = rr * res + cc
        at += 9
        for dr1, dc1, dr2, dc2 in _PAIRS:
            r1, c1, r2, c2 = r + dr1, c + dc1, r + dr2, c + dc2
            if 0 <= r1 < res and 0 <= c1 < res and 0 <= r2 < res and 0 <= c2 < res:
                g[at + g[at] + 1] = r1 * res + c1
                g[at + g[at] + 2] = r2 * res + c2
                g[at] += 2
    return g


def _defects(h, valid, occ, res, med, threshold):
    out = []
    if med <= 0:
        return out
    scale = 0.5 * med
    below = -threshold
    g = _grid(res)
    for i in range(res * res):
        if not occ[i]:
            continue
        hi = h[i]
        at = i * _STRIDE
        dev = 0.0
        # foreign body: higher than every neighbour by more than the threshold, all of them trusted
        # (an untrusted neighbour may be the higher surface); every zone has 3 or more neighbours.
        # Its first neighbour usually rules it out, so that one is tried before the loop.
        fb = False
        top = -1.0
        v = h[g[at + 1]]
        if hi - v > threshold:  # hi - max(v) > threshold iff it holds for every v
            fb = True
            for t in range(at + 1, at + 1 + g[at]):
                j = g[t]
                v = h[j]
                if not valid[j] or hi - v <= threshold:
                    fb = False
                    break
                if v > top:
                    top = v
        if fb:
            dev = hi - top
        else:
            # deformation: below both ends of an occupied opposite pair. hi - min(a, b) is exactly
            # max(hi - a, hi - b) in floating point, so each end is tested on its own and most
            # pairs stop at the first end.
            at += 9
            for t in range(at + 1, at + 1 + g[at], 2):
                j = g[t]
                v = h[j]
                if hi - v < below:
                    k = g[t + 1]
                    w = h[k]
                    if hi - w < below and occ[j] and occ[k]:
                        d = hi - (v if v < w else w)
                        if d < dev:
                            dev = d
        if dev != 0.0:
            sev = abs(dev) / scale
            out.append({"zone": i, "type": "foreign_body" if dev > 0 else "deformation",
                        "dev_mm": dev, "severity": sev if sev < 1.0 else 1.0})
    return out


def tof_score(f):
    """(score, reject_reasons) from tof_features()."""
    reasons = []
    n = f["valid_zones"] + f["invalid_zones"]
    invalid_frac = f["invalid_zones"] / n
    if invalid_frac > MAX_INVALID_FRAC:
        reasons.append("tof: %d of %d zones invalid" % (f["invalid_zones"], n))
    if f["height_max_mm"] < MIN_PRODUCT_MM or f["occupied_zones"] < 2:
        reasons.append("tof: no product detected")
    geometry = W_SIZE * interp(f["weight_g"], WEIGHT_CURVE) + W_FIRM * interp(f["height_max_mm"], FIRMNESS_CURVE)
    sev = 0.0
    for d in f["defects"]:
        sev += d["severity"]
    score = _clip(geometry * (1.0 - DEFECT_COST * (sev if sev < 1.0 else 1.0)) - invalid_frac)
    if reasons:
        score = 0.0  # no trustworthy measurement: nothing to average with the spectral side
    elif grade_of(r3(score)) == "REJECT":
        reasons.append("tof: score below 0.45")
    return score, reasons


# --- spectral ---

def ratio_score(x, opt_lo, opt_hi, acc_lo, acc_hi):
    """1.0 in the optimal band, 0.7..1.0 in the acceptable band (1.0 at the optimal edge), else 0.3."""
    if x is None or x < acc_lo or x > acc_hi:
        return 0.3
    if opt_lo <= x <= opt_hi:
        return 1.0
    if x < opt_lo:
        return 0.7 + 0.3 * (x - acc_lo) / (opt_lo - acc_lo)
    return 0.7 + 0.3 * (acc_hi - x) / (acc_hi - opt_hi)


def spectral(channels):
    """Spectral ratios, sub-scores, anomalies and score from an AS7341 reading (dict of counts)."""
    for ch in CHANNELS:
        v = channels.get(ch)
        if type(v) is not int and type(v) is not float:
            raise ValueError("channels.%s: expected a number, got %r" % (ch, v))
    anomalies = []
    ratios = {}
    scores = {}
    for name, num, den, olo, ohi, alo, ahi in RATIOS:
        top = 0
        for ch in num:
            top += channels[ch]
        bottom = 0
        for ch in den:
            bottom += channels[ch]
        x = top / bottom if bottom > 0 else None
        ratios[name] = x
        scores[name] = ratio_score(x, olo, ohi, alo, ahi)
        if x is None:
            anomalies.append("ratio %s undefined" % name)
        elif x < alo or x > ahi:
            anomalies.append("ratio %s out of band" % name)
    sat = False
    for ch in CHANNELS:
        v = channels[ch]
        if v >= SATURATED:
            anomalies.append("%s saturated" % ch)
            sat = True
        elif v < DARK:
            anomalies.append("%s dark" % ch)
    if channels.get("saturated") and not sat:
        anomalies.append("saturated")
    fresh = 0.6 * scores["F1/F7"] + 0.4 * scores["(F1+F2)/(F7+F8)"]
    fat = 0.6 * scores["(F7+F8)/F4"] + 0.4 * scores["(F1+F3)/(F5+F6)"]
    color = scores["(F5+F6)/(F1+F2)"]
    oxidation = 1.0 - fat
    penalty = 0.10 * len(anomalies)
    score = 0.35 * fresh + 0.30 * fat + 0.20 * color + 0.15 * (1.0 - oxidation) - (penalty if penalty < 0.5 else 0.5)
    return {"ratios": ratios, "ratio_scores": scores, "freshness": fresh, "fat_quality": fat,
            "oxidation": oxidation, "color_uniformity": color, "anomalies": anomalies,
            "score": _clip(score)}


# --- fusion ---

def analyze(distances_mm, statuses, resolution, channels):
    """Grade one sample: {"score", "grade", "tof", "spectral", "reject_reasons", "alerts"}."""
    tof = tof_features(distances_mm, statuses, resolution)
    t_score, reasons = tof_score(tof)
    tof["score"] = t_score
    tof["grade"] = "REJECT" if reasons else grade_of(r3(t_score))
    spec = spectral(channels)
    spec["grade"] = grade_of(r3(spec["score"]))
    if spec["grade"] == "REJECT":
        reasons.append("spectral: score below 0.45")
    for d in tof["defects"]:
        if d["type"] == "foreign_body" and d["severity"] > FB_REJECT_SEVERITY:
            reasons.append("foreign body in zone %d, severity %.2f" % (d["zone"], d["severity"]))
    score = r3(W_TOF * t_score + W_SPEC * spec["score"])
    grade = "REJECT" if reasons else grade_of(score)
    alerts = alerts_for(score, grade, spec["freshness"], spec["oxidation"], tof["defects"])
    return _round_in_place({"score": score, "grade": grade, "tof": tof, "spectral": spec,
                            "reject_reasons": reasons, "alerts": alerts})


def alerts_for(score, grade, freshness, oxidation, defects):
    """domain.md alerts, plus one for any foreign body (even one too small to force a REJECT)."""
    alerts = []
    if score < 0.40:
        alerts.append("critical:score_low")
    elif score < 0.60:
        alerts.append("warning:score_low")
    if grade == "REJECT":
        alerts.append("critical:reject")
    if oxidation > 0.70:  # note: with domain.md ratio scores oxidation peaks at exactly 0.70
        alerts.append("warning:oxidation_high")
    if freshness < 0.50:
        alerts.append("warning:freshness_low")
    for d in defects:
        if d["type"] == "foreign_body":
            alerts.append("critical:foreign_body")
            break
    return alerts


def _round_in_place(x):
    # Rounds every float of nested dicts and lists where it lies (the result is built fresh by
    # analyze, nothing else holds it): ~40 floats a sample, one call per container, not per value.
    if type(x) is dict:
        for k in x:
            v = x[k]
            t = type(v)
            if t is float:
                x[k] = int(v * 1000 + 0.5) / 1000 if v >= 0 else -r3(-v)  # r3, inlined
            elif t is dict or t is list:
                _round_in_place(v)
    else:
        for k in range(len(x)):
            v = x[k]
            t = type(v)
            if t is float:
                x[k] = int(v * 1000 + 0.5) / 1000 if v >= 0 else -r3(-v)
            elif t is dict or t is list:
                _round_in_place(v)
    return x
