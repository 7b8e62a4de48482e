# The product under the sensor (domain.md section 3): a liver on its tray, 100 mm below the
# VL53L8, seen as res x res zones over the 300 x 180 mm tray; and its spectral signature for
# the AS7341. Deterministic for a seed, identical under CPython and MicroPython (own PRNG).
import math

from emulation.peripherals import Rng, profiles

SENSOR_MM = 100.0
TRAY_MM = 5.0
TRAY_W = 300.0
TRAY_H = 180.0
SUB = 3            # sub-samples per zone side: a zone reports the mean range over its area
RANGE_SD = 1.0     # per-zone ranging noise, mm
INVALID = (2, 4, 12)  # statuses for a low-reflectance patch (not 5/9: not trustworthy)
ASPECT = 2.0       # long / short semi-axis of the footprint (85 x 42.5 mm for the reference liver)


class Scene:
    def __init__(self, profile="default", seed=1):
        self.profile = profiles.check(profile)
        self.seed = seed
        self.rng = Rng(seed)
        self.product = None
        self._trig = None  # (product, cos(angle), sin(angle)) for height()
        self._span_p = None  # the liver and resolution self._spans were computed for
        self._span_res = 0
        self._spans = None
        self.count = 0
        self.next_product()

    def next_product(self):
        """The belt brings a new liver. Returns its description (profile, qualities, defects)."""
        r = self.rng
        name = profiles.pick(self.profile, r.random())
        mf, mt, mo = profiles.PROFILES[name]
        fresh = _clip(r.gauss(mf, profiles.SD))
        fat = _clip(r.gauss(mt, profiles.SD))
        ox = _clip(r.gauss(mo, profiles.SD))
        # the condition drives size and firmness (profiles.WEIGHT_G / HEIGHT_MM); the footprint
        # follows from the weight and the dome height: V = 2/3 pi a b c, b = a / ASPECT
        cond = profiles.condition(fresh, fat, ox)
        weight = profiles.interp(cond, profiles.WEIGHT_G) * (1.0 + r.gauss(0.0, profiles.WEIGHT_SD))
        c = profiles.interp(cond, profiles.HEIGHT_MM) + r.gauss(0.0, profiles.HEIGHT_SD)
        a = math.sqrt(1.5 * ASPECT * weight / profiles.DENSITY * 1000.0 / (math.pi * c))
        p = {
            "profile": name, "freshness": fresh, "fat": fat, "oxidation": ox, "weight_g": weight,
            "a": a, "b": a / ASPECT, "c": c,
            "angle": math.radians(r.gauss(45.0, 11.0)),  # 45 +/- 22 deg at 2 sd
            "cx": r.uniform(-12.0, 12.0), "cy": r.uniform(-8.0, 8.0),
            "waves": [(r.uniform(0.02, 0.06), r.uniform(0.02, 0.06), r.uniform(0, 6.283))
                      for _ in range(3)],
            "roughness": 1.0 + 4.0 * (1.0 - fat),
            "defects": [],
        }
        rates = profiles.DEFECT_RATES[name]
        for i in range(len(profiles.DEFECTS)):
            u = r.random()
            if u < rates[i]:
                p["defects"].append(self._defect(profiles.DEFECTS[i], p))
        self.product = p
        self._factors = profiles.spectral_factors(fresh, fat, ox)
        for d in p["defects"]:
            if d["kind"] == "optical":  # a dull patch: less light back in every band
                for ch in self._factors:
                    self._factors[ch] *= 0.85
        self.count += 1
        return p

    def _defect(self, kind, p):
        r = self.rng
        # a point inside the liver's footprint (ellipse coordinates, then to tray coordinates)
        t = r.uniform(0.0, 6.283)
        q = r.uniform(0.0, 0.55)
        u, v = q * p["a"] * math.cos(t), q * p["b"] * math.sin(t)
        ca, sa = math.cos(p["angle"]), math.sin(p["angle"])
        x, y = p["cx"] + u * ca - v * sa, p["cy"] + u * sa + v * ca
        if kind == "foreign_body":
            return {"kind": kind, "x": x, "y": y, "h": r.uniform(10.0, 25.0), "r": 14.0}
        if kind == "deformation":
            return {"kind": kind, "x": x, "y": y, "h": -r.uniform(5.0, 15.0), "r": 22.0}
        if kind == "edge_damage":  # the tip beyond this fraction of the long axis is missing
            return {"kind": kind, "cut": r.uniform(0.55, 0.8), "side": 1 if r.random() < 0.5 else -1}
        return {"kind": kind, "x": x, "y": y, "r": r.uniform(25.0, 40.0)}

    def height(self, x, y):
        """Height of the liver surface above the tray top at tray point (x, y), mm (0 = bare tray)."""
        p = self.product
        # cos/sin of the liver's angle once per liver, not per point (tof_zone asks 576 points a
        # frame; this was the emulated device's hottest code). Same values, same results.
        trig = self._trig
        if trig is None or trig[0] is not p:
            trig = self._trig = (p, math.cos(p["angle"]), math.sin(p["angle"]))
        ca, sa = trig[1], trig[2]
        dx, dy = x - p["cx"], y - p["cy"]
        u = dx * ca + dy * sa
        v = -dx * sa + dy * ca
        q = (u / p["a"]) ** 2 + (v / p["b"]) ** 2
        if q >= 1.0:
            return 0.0  # bare tray: defects only cut or add where the liver is (h > 0)
        h = 0.0
        if q < 1.0:
            h = p["c"] * math.sqrt(1.0 - q)
            w = 0.0
            for fx, fy, ph in p["waves"]:
                w += math.sin(fx * u + fy * v + ph)
            h += p["roughness"] * w / 3.0 * min(1.0, 4.0 * (1.0 - q))
        for d in p["defects"]:
            kind = d["kind"]
            if kind == "edge_damage":
                if d["side"] * u > d["cut"] * p["a"]:
                    h = 0.0
            elif kind in ("foreign_body", "deformation") and h > 0.0:
                e = ((x - d["x"]) ** 2 + (y - d["y"]) ** 2) / (d["r"] * d["r"])
                if e < 4.0:
                    h += d["h"] * math.exp(-e)
        return h if h > 0.0 else 0.0

    def tof_zone(self, res):
        """(distances_mm, statuses) for res x res zones, row-major, with ranging noise."""
        # height() averaged over SUB x SUB points per zone, organised for the unix port, where
        # every float operation allocates: the straightforward loop cost ~600 KB of garbage and
        # 3 ms of CPU a frame, most of a fleet device's time. Point coordinates are computed once
        # per resolution; each line of points visits only the stretch that can hit the liver;
        # along a line q (the ellipse test) and the three wave phases are linear or quadratic in
        # x, so they advance by differences instead of being recomputed. Same arithmetic up to
        # rounding (~1e-12 mm), far below the 1 mm steps of the reported ranges: the frames are
        # those of the plain definition, height() at every point (tests/emulation/test_scene.py).
        r = self.rng
        p = self.product
        geo = _GEOMETRY.get(res)
        if geo is None:
            geo = _GEOMETRY[res] = _geometry(res)
        xs, ys, zw, zh = geo
        lines = self._lines(res, ys)
        n = res * SUB
        zs = [0.0] * (res * res)  # per zone: sum of the heights of its points
        c = p["c"]
        kr = p["roughness"] / 3.0
        (f1, e1, p1), (f2, e2, p2), (f3, e3, p3) = p["waves"]
        defects = p["defects"]
        a, b = p["a"], p["b"]
        cx = p["cx"]
        ca, sa = self._trig[1], self._trig[2]
        step = xs[1] - xs[0]
        qa = self._qa
        dd = 2.0 * qa * step * step        # second difference of q along a line
        # phase of wave i = fx u + fy v + ph; along a line it grows by this per point
        k1 = (f1 * ca - e1 * sa) * step
        k2 = (f2 * ca - e2 * sa) * step
        k3 = (f3 * ca - e3 * sa) * step
        sqrt, sin = math.sqrt, math.sin
        for k in range(n):
            span = lines[k]
            if span is None:
                continue
            first, end, dy, qb = span
            y = ys[k]
            base = (k // SUB) * res
            dx = xs[first] - cx
            u = dx * ca + dy * sa
            v = dy * ca - dx * sa
            q = (u / a) ** 2 + (v / b) ** 2
            dq = (qa * (2.0 * dx + step) + qb) * step  # q(dx + step) - q(dx)
            g1 = f1 * u + e1 * v + p1
            g2 = f2 * u + e2 * v + p2
            g3 = f3 * u + e3 * v + p3
            for m in range(first, end):
                if q < 1.0:
                    t = 1.0 - q
                    h = c * sqrt(t)
                    w = kr * (sin(g1) + sin(g2) + sin(g3))
                    h += w * (4.0 * t) if t < 0.25 else w  # the waves fade out at the edge
                    if defects:
                        x = xs[m]
                        h = _defects(h, defects, x, y, (x - cx) * ca + dy * sa, a)
                    if h > 0.0:
                        zs[base + m // SUB] += h
                q += dq
                dq += dd
                g1 += k1
                g2 += k2
                g3 += k3
        dist = [0] * (res * res)
        st = [5] * (res * res)
        optical = [d for d in defects if d["kind"] == "optical"]
        bare = SENSOR_MM - TRAY_MM
        for z in range(res * res):
            s = zs[z]
            g = r.gauss(0.0, RANGE_SD)
            d = (bare - s / (SUB * SUB) if s else bare) + g  # most zones are bare tray
            dist[z] = int(d + 0.5) if d > 0 else 0
            if optical:
                row, col = z // res, z % res
                y0 = -TRAY_H / 2 + row * zh
                x0 = -TRAY_W / 2 + col * zw
                xc, yc = x0 + zw / 2, y0 + zh / 2
                for o in optical:
                    if (xc - o["x"]) ** 2 + (yc - o["y"]) ** 2 < o["r"] * o["r"]:
                        st[z] = INVALID[int(r.random() * len(INVALID))]
            if st[z] == 5 and r.random() < 0.03:
                st[z] = 9  # valid, target seen through a wrap-around check
        return dist, st

    def _lines(self, res, ys):
        """Per line of sample points (fixed y): (first, end, y - cy, B) with first..end-1 the
        indices of the points that may lie on the liver, or None; B is the linear coefficient of
        q along the line (q = A dx^2 + B dx + C). Cached per liver and resolution."""
        p = self.product
        trig = self._trig
        if trig is None or trig[0] is not p:
            trig = self._trig = (p, math.cos(p["angle"]), math.sin(p["angle"]))
        if self._span_p is p and self._span_res == res:
            return self._spans
        ca, sa = trig[1], trig[2]
        a, b, cx, cy = p["a"], p["b"], p["cx"], p["cy"]
        # solved for q < SPAN_Q (> 1: a margin far above float rounding), widened by a point each
        # side; inside the span the exact test decides
        ia, ib = 1.0 / (a * a), 1.0 / (b * b)
        qa = ca * ca * ia + sa * sa * ib
        qb = 2.0 * ca * sa * (ia - ib)
        qc = sa * sa * ia + ca * ca * ib
        step = TRAY_W / (res * SUB)
        n = res * SUB
        spans = []
        for k in range(n):
            dy = ys[k] - cy
            disc = (qb * dy) ** 2 - 4.0 * qa * (qc * dy * dy - SPAN_Q)
            if disc < 0.0:
                spans.append(None)
                continue
            root = math.sqrt(disc)
            lo = cx + (-qb * dy - root) / (2.0 * qa)
            hi = cx + (-qb * dy + root) / (2.0 * qa)
            first = max(0, int((lo + TRAY_W / 2) / step) - 1)
            end = min(n, int((hi + TRAY_W / 2) / step) + 2)
            spans.append((first, end, dy, qb * dy) if first < end else None)
        self._qa = qa
        self._span_p = p
        self._span_res = res
        self._spans = spans
        return spans

    def spectral_factors(self):
        """Per-channel factor on the AS7341 reference counts for the current liver."""
        return self._factors


SPAN_Q = 1.05  # see Scene._lines
_GEOMETRY = {}  # type: dict[int, tuple]  # res -> (x of each point column, y of each point line, zone width, zone height)


def _geometry(res):
    # the sample points of the zone grid, by the expressions tof_zone always used
    zw, zh = TRAY_W / res, TRAY_H / res
    xs = []
    for col in range(res):
        x0 = -TRAY_W / 2 + col * zw
        for j in range(SUB):
            xs.append(x0 + (j + 0.5) * zw / SUB)
    ys = []
    for row in range(res):
        y0 = -TRAY_H / 2 + row * zh
        for i in range(SUB):
            ys.append(y0 + (i + 0.5) * zh / SUB)
    return xs, ys, zw, zh


def _defects(h, defects, x, y, u, a):
    # the defect part of height() for a point on the liver
    for d in defects:
        kind = d["kind"]
        if kind == "edge_damage":
            if d["side"] * u > d["cut"] * a:
                h = 0.0
        elif kind in ("foreign_body", "deformation") and h > 0.0:
            e = ((x - d["x"]) ** 2 + (y - d["y"]) ** 2) / (d["r"] * d["r"])
            if e < 4.0:
                h += d["h"] * math.exp(-e)
    return h


def _clip(x):
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
