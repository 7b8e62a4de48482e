# The product under the sensor (domain.md section 3): a liver on its tray, 100 mm below the
# VL53L8, seen as res x res zones over the 300 x 180 mm tray; and its spectral signature for
# the AS7341. Deterministic for a seed, identical under CPython and MicroPython (own PRNG).
import math
from array import array

from emulation.peripherals import profiles
from emulation.peripherals.rng import Rng

try:  # MicroPython: the frame's point loop as machine code (viper); CPython runs _heights_py
    import sys

    # _scenefast reads array("q") words as two 32-bit halves into 64-bit machine ints: a
    # little-endian 64-bit interpreter only (the ESP32 profile is 32-bit: the plain path)
    if sys.byteorder != "little" or sys.maxsize < (1 << 62):
        raise ImportError
    from emulation.peripherals import _scenefast as _fast
except (ImportError, SyntaxError, NameError, TypeError):  # no native emitter: still correct, slower
    _fast = None  # type: ignore[assignment]

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
        self._prm_p = None  # the liver and resolution self._prm was computed for
        self._prm_res = 0
        self._prm = None
        self._optical = False  # the current liver has an optical defect (set with self._prm)
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
        # The fixed-point surface model (point_q8 is its definition): a zone is the mean of the
        # liver's height over SUB x SUB points, in 1/256 mm, computed with integers only, by
        # exact differences along each line of points, in one call: _scenefast.heights (viper,
        # machine code) on MicroPython, _heights_py elsewhere (same integers). Why: on the unix
        # port every float operation allocates; the float model cost ~160 KB of garbage and
        # 0.5-0.9 ms a frame, most of it per point. Floats remain once per liver (_params).
        geo = _geo(res)
        zs = array("i", bytes(4 * res * res))  # per zone: sum of the heights of its points
        _heights(zs, geo[4], _SQRT, _SIN, _EXP, self._params(res))  # type: ignore[arg-type]  # viper takes arrays as ptr32/ptr16
        if _fast is not None and not self._optical:  # _frame's integers as machine code
            nz = res * res
            dist = array("i", bytes(4 * nz))
            st = bytearray(nz)
            self.rng.s = _fast.ranges(zs, dist, st, nz, self.rng.s)  # type: ignore[arg-type]  # viper pointers
            return list(dist), list(st)
        return self._frame(res, zs, geo[2], geo[3])

    def _frame(self, res, zs, zw, zh):
        # zone sums (1/256 mm, SUB x SUB points each) -> ranges with integer noise, and statuses
        r = self.rng
        nz = res * res
        dist = [0] * nz
        st = [5] * nz
        optical = [d for d in self.product["defects"] if d["kind"] == "optical"]
        bare = BARE_Q
        half = ZONE_Q // 2
        for z in range(nz):
            x = r.u32()
            # ranging noise ~ Normal(0, RANGE_SD): a sum of four uniform bytes (Irwin-Hall, sd
            # 147.8, tails at +-3.45 sd) scaled to 1/256 mm: sd 1.001 mm, integers only
            g = (((x & 255) + ((x >> 8) & 255) + ((x >> 16) & 255) + (x >> 24) - 510) * NOISE_MUL) >> 6
            d = bare - zs[z] + SUB * SUB * g  # in 1/(256 SUB^2) mm
            dist[z] = (d + half) // ZONE_Q if d > 0 else 0
            if optical:
                row, col = z // res, z % res
                xc = -TRAY_W / 2 + col * zw + zw / 2
                yc = -TRAY_H / 2 + row * zh + zh / 2
                for o in optical:
                    if (xc - o["x"]) ** 2 + (yc - o["y"]) ** 2 < o["r"] * o["r"]:
                        st[z] = INVALID[(r.u32() * len(INVALID)) >> 32]
            if st[z] == 5 and r.u32() < STATUS9_U32:
                st[z] = 9  # valid, target seen through a wrap-around check
        return dist, st

    def point_q8(self, res, m, k):
        """Height of the fixed-point liver above the tray at sample point (m, k) of the
        res x res zone grid (column m, line k, SUB x SUB points per zone), in 1/256 mm (0 off the
        liver): the model's plain definition, point by point. q (the ellipse test) and the wave
        phases are closed forms in (m, k) with integer coefficients from _params; sqrt(1 - q) is
        interpolated in _SQRT, sin read from _SIN, exp(-e) from _EXP; the defects follow
        height(). tof_zone computes the same numbers by differences; height() is the continuous
        model this approximates (within ~0.5 mm at the rim, ~0.01 mm on average)."""
        w_ = self._params(res)
        P = [w_[i] for i in range(len(w_))]
        q = P[2] + m * P[3] + m * m * P[4] + k * P[5] + k * k * P[6] + m * k * P[7]
        if q >= Q_ONE:
            return 0
        t = Q_ONE - q
        i = t >> SQ_SHIFT
        h = (P[17] * (_SQRT[i] + (((_SQRT[i + 1] - _SQRT[i]) * (t & SQ_MASK)) >> SQ_SHIFT))) >> 15
        w = -3 * SIN_ZERO
        for j in (8, 11, 14):
            w += _SIN[((P[j] + m * P[j + 1] + k * P[j + 2]) >> PH_SHIFT) & 1023]
        w = (P[18] * w) >> 14
        h += (w * t) >> FADE_SHIFT if t < Q_FADE else w  # the waves fade out at the edge
        x, y = P[19] + m * P[20], P[21] + k * P[22]
        for j in range(24, 24 + 6 * P[23], 6):
            if P[j] == EDGE:  # the tip beyond the cut is missing
                if P[j + 1] * (P[j + 2] + m * P[j + 3] + k * P[j + 4]) > P[j + 5]:
                    h = 0
            elif h > 0:  # a bump or a dent: h x exp(-distance^2 / r^2) out to 2 r
                e = (((x - P[j + 1]) ** 2 + (y - P[j + 2]) ** 2) * P[j + 3]) >> 32
                if e < 1024:
                    h += (P[j + 4] * _EXP[e]) >> 15
        return max(0, h)

    def _params(self, res):
        """The liver at this resolution in fixed point, an array("q") (layout in _heights_py).
        Floats once per liver and resolution; cached."""
        p = self.product
        if self._prm_p is p and self._prm_res == res:
            return self._prm
        trig = self._trig
        if trig is None or trig[0] is not p:
            trig = self._trig = (p, math.cos(p["angle"]), math.sin(p["angle"]))
        ca, sa = trig[1], trig[2]
        a, b = p["a"], p["b"]
        n = res * SUB
        sx, sy = TRAY_W / n, TRAY_H / n
        x0, y0 = -TRAY_W / 2 + sx / 2, -TRAY_H / 2 + sy / 2  # the first point's centre
        dx, dy = x0 - p["cx"], y0 - p["cy"]
        # q = qa dx^2 + qb dx dy + qc dy^2 around the liver's centre; u, v its own axes
        ia, ib = 1.0 / (a * a), 1.0 / (b * b)
        qa = ca * ca * ia + sa * sa * ib
        qb = 2.0 * ca * sa * (ia - ib)
        qc = sa * sa * ia + ca * ca * ib
        u, v = dx * ca + dy * sa, dy * ca - dx * sa
        Q = float(Q_ONE)
        prm = [n, res, _rnd((qa * dx * dx + qb * dx * dy + qc * dy * dy) * Q), _rnd((2.0 * qa * dx + qb * dy) * sx * Q),
               _rnd(qa * sx * sx * Q), _rnd((qb * dx + 2.0 * qc * dy) * sy * Q), _rnd(qc * sy * sy * Q),
               _rnd(qb * sx * sy * Q)]
        for f, e, ph in p["waves"]:
            prm += [_rnd((f * u + e * v + ph) * PH_TURN), _rnd((f * ca - e * sa) * sx * PH_TURN),
                    _rnd((f * sa + e * ca) * sy * PH_TURN)]
        prm += [_rnd(p["c"] * 256.0), _rnd(p["roughness"] / 3.0 * 256.0), _rnd(x0 * 256.0), _rnd(sx * 256.0),
                _rnd(y0 * 256.0), _rnd(sy * 256.0)]
        ds = []
        for d in p["defects"]:
            if d["kind"] == "edge_damage":
                ds += [EDGE, d["side"], _rnd(u * 65536.0), _rnd(ca * sx * 65536.0), _rnd(sa * sy * 65536.0),
                       _rnd(d["cut"] * a * 65536.0)]
            elif d["kind"] != "optical":  # a bump (foreign body) or a dent (deformation)
                ds += [BUMP, _rnd(d["x"] * 256.0), _rnd(d["y"] * 256.0), _rnd(16777216.0 / (d["r"] * d["r"])),
                       _rnd(d["h"] * 256.0), 0]
        prm.append(len(ds) // 6)
        self._prm = array("q", prm + ds)
        self._optical = len(ds) // 6 < len(p["defects"])
        self._prm_p = p
        self._prm_res = res
        return self._prm

    def spectral_factors(self):
        """Per-channel factor on the AS7341 reference counts for the current liver."""
        return self._factors


_GEOMETRY = {}  # type: dict[int, tuple]  # res -> (x of each point column, y of each point line, zone width, zone height, zone index of each point column or line)

# Fixed point of the surface model (Scene.point_q8): heights in 1/256 mm; q (the ellipse test) in
# units of 2^-30; sqrt(t) for t in 0..1 interpolated linearly in a 2049-entry table (Q15); wave
# phases in 2^-26 turns, sin read from a 1024-entry table (Q14, offset by SIN_ZERO: unsigned);
# the waves fade as 4t below t = 1/4; a bump adds h exp(-e) (e = distance^2 / r^2 in 1/256,
# _EXP in Q15) out to e = 4; the edge cut compares u (along the long axis) in 1/65536 mm.
# _scenefast.py repeats these numbers as const()s (viper inlines them).
Q_ONE = 1 << 30
SQ_BITS = 11
SQ_SHIFT = 30 - SQ_BITS
SQ_MASK = (1 << SQ_SHIFT) - 1
FADE_SHIFT = 28
Q_FADE = 1 << FADE_SHIFT
PH_TURN = (1 << 26) / (2.0 * math.pi)  # phase units per radian
PH_SHIFT = 16                          # phase >> PH_SHIFT: index into _SIN (1024 per turn)
SIN_ZERO = 16384
BUMP, EDGE = 1, 2                      # defect kinds in Scene._params
ZONE_Q = 256 * SUB * SUB               # zone sums are in 1/(256 SUB^2) mm of the zone's mean
BARE_Q = int((SENSOR_MM - TRAY_MM) * ZONE_Q)
NOISE_MUL = 111                        # 147.8 (sd of the byte sum) * 111 / 64 = 256.3: 1.001 mm
STATUS9_U32 = int(0.03 * 4294967296.0)


def _rnd(x):
    # round half away from zero, the same int on CPython and MicroPython
    return int(x + 0.5) if x >= 0.0 else -int(0.5 - x)


# Built from generators, not lists: a list of 2049 ints grows to a 32 KiB block on the 64-bit unix
# port (4 KiB in the array), and the device imports this module late, when its heap is fragmented:
# that one block failed a device's sensor start now and then.
_SQRT = array("H", (_rnd(math.sqrt(i / float(1 << SQ_BITS)) * 32768.0) for i in range((1 << SQ_BITS) + 1)))
_SIN = array("H", (SIN_ZERO + _rnd(math.sin(i * 2.0 * math.pi / 1024) * 16384.0) for i in range(1024)))
_EXP = array("H", (_rnd(math.exp(-i / 256.0) * 32768.0) for i in range(1024)))


def _heights_py(zs, zc, sq, sn, ex, prm):
    """Adds the fixed-point height of every sample point to its zone in zs (array("i")), by
    differences along each line (exact: the closed forms of Scene.point_q8). prm (Scene._params):
    0 points per side n, 1 res, 2-7 q = Q00 + m QM + m^2 QMM + k QK + k^2 QKK + m k QMK, 8-16 per
    wave G, GM, GK (phase = G + m GM + k GK), 17 dome height C, 18 wave amplitude KR, 19-22 X0, SX,
    Y0, SY (point coordinates, 1/256 mm), 23 number of defects, then 6 words each: BUMP, X, Y,
    2^24 / r^2, h, 0 or EDGE, side, U0, UM, UK, cut. _scenefast.heights is this in viper."""
    n, res, q00, qm, qmm, qk, qkk, qmk = prm[0], prm[1], prm[2], prm[3], prm[4], prm[5], prm[6], prm[7]
    c8, kr8, x0, sx, y0, sy, nd = prm[17], prm[18], prm[19], prm[20], prm[21], prm[22], prm[23]
    for k in range(n):
        q = q00 + k * qk + k * k * qkk
        dq = qm + k * qmk + qmm
        g1 = prm[8] + k * prm[10]
        g2 = prm[11] + k * prm[13]
        g3 = prm[14] + k * prm[16]
        y = y0 + k * sy
        base = zc[k] * res
        for m in range(n):
            if q < Q_ONE:
                t = Q_ONE - q
                i = t >> SQ_SHIFT
                s0 = sq[i]
                h = (c8 * (s0 + (((sq[i + 1] - s0) * (t & SQ_MASK)) >> SQ_SHIFT))) >> 15
                w = (kr8 * (sn[(g1 >> PH_SHIFT) & 1023] + sn[(g2 >> PH_SHIFT) & 1023]
                            + sn[(g3 >> PH_SHIFT) & 1023] - 3 * SIN_ZERO)) >> 14
                h += (w * t) >> FADE_SHIFT if t < Q_FADE else w
                if nd:
                    x = x0 + m * sx
                    for j in range(24, 24 + 6 * nd, 6):
                        if prm[j] == EDGE:
                            if prm[j + 1] * (prm[j + 2] + m * prm[j + 3] + k * prm[j + 4]) > prm[j + 5]:
                                h = 0
                        elif h > 0:
                            e = (((x - prm[j + 1]) ** 2 + (y - prm[j + 2]) ** 2) * prm[j + 3]) >> 32
                            if e < 1024:
                                h += (prm[j + 4] * ex[e]) >> 15
                if h > 0:
                    zs[base + zc[m]] += h
            q += dq
            dq += 2 * qmm
            g1 += prm[9]
            g2 += prm[12]
            g3 += prm[15]


_heights = _fast.heights if _fast is not None else _heights_py


def _geo(res):
    geo = _GEOMETRY.get(res)
    if geo is None:
        geo = _GEOMETRY[res] = _geometry(res)
    return geo


def _geometry(res):
    # the sample points of the zone grid
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
    return xs, ys, zw, zh, bytearray([m // SUB for m in range(res * SUB)])


def _clip(x):
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x
