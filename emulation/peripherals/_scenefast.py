# MicroPython only: scene._heights_py (the point loop of Scene.tof_zone) and the integer part of
# Scene._frame compiled by the viper emitter, so that they run as machine code on machine ints
# (no objects, no allocation); the device cache builds it with mpy-cross -march=host
# (emulation/device.py). The same integer arithmetic line for line; tests/emulation/test_scene.py
# checks on MicroPython that both give the same frames. The constants must equal scene.py's
# (viper inlines const()s).
# ruff: noqa: F821  (ptr8 / ptr16 / ptr32 are viper's built-in types)
# mypy: ignore-errors
import micropython
from micropython import const

_Q_BITS = const(30)             # scene.Q_ONE = 1 << 30 (built at run time: mpy-cross's small
                                # ints are 31-bit, a larger const() would be an object)
_SQ_SHIFT = const(19)           # scene.SQ_SHIFT
_SQ_MASK = const(524287)        # scene.SQ_MASK
_Q_FADE = const(268435456)      # scene.Q_FADE = 1 << 28
_FADE_SHIFT = const(28)
_PH_SHIFT = const(16)
_SIN3 = const(49152)            # 3 x scene.SIN_ZERO
_EDGE = const(2)                # scene.EDGE


@micropython.viper
def heights(zs: ptr32, zc: ptr8, sq: ptr16, sn: ptr16, ex: ptr16, prm: ptr32):
    # prm is an array("q"): word j is read as two 32-bit halves (little-endian, as on x86-64 and
    # arm64, the hosts the unix port runs fleets on)
    n = int(prm[0])
    res = int(prm[2])
    q00 = int(prm[4]) | (int(prm[5]) << 32)
    qm = int(prm[6]) | (int(prm[7]) << 32)
    qmm = int(prm[8]) | (int(prm[9]) << 32)
    qk = int(prm[10]) | (int(prm[11]) << 32)
    qkk = int(prm[12]) | (int(prm[13]) << 32)
    qmk = int(prm[14]) | (int(prm[15]) << 32)
    g10 = int(prm[16]) | (int(prm[17]) << 32)
    g1m = int(prm[18]) | (int(prm[19]) << 32)
    g1k = int(prm[20]) | (int(prm[21]) << 32)
    g20 = int(prm[22]) | (int(prm[23]) << 32)
    g2m = int(prm[24]) | (int(prm[25]) << 32)
    g2k = int(prm[26]) | (int(prm[27]) << 32)
    g30 = int(prm[28]) | (int(prm[29]) << 32)
    g3m = int(prm[30]) | (int(prm[31]) << 32)
    g3k = int(prm[32]) | (int(prm[33]) << 32)
    c8 = int(prm[34]) | (int(prm[35]) << 32)
    kr8 = int(prm[36]) | (int(prm[37]) << 32)
    x0 = int(prm[38]) | (int(prm[39]) << 32)
    sx = int(prm[40]) | (int(prm[41]) << 32)
    y0 = int(prm[42]) | (int(prm[43]) << 32)
    sy = int(prm[44]) | (int(prm[45]) << 32)
    nd = int(prm[46])
    dd = 2 * qmm
    one = 1
    one = one << _Q_BITS  # not folded into a constant (see _Q_BITS)
    k = 0
    while k < n:
        q = q00 + k * qk + k * k * qkk
        dq = qm + k * qmk + qmm
        g1 = g10 + k * g1k
        g2 = g20 + k * g2k
        g3 = g30 + k * g3k
        y = y0 + k * sy
        base = int(zc[k]) * res
        m = 0
        while m < n:
            if q < one:
                t = one - q
                i = t >> _SQ_SHIFT
                s0 = int(sq[i])
                h = (c8 * (s0 + (((int(sq[i + 1]) - s0) * (t & _SQ_MASK)) >> _SQ_SHIFT))) >> 15
                w = (kr8 * (int(sn[(g1 >> _PH_SHIFT) & 1023]) + int(sn[(g2 >> _PH_SHIFT) & 1023])
                            + int(sn[(g3 >> _PH_SHIFT) & 1023]) - _SIN3)) >> 14
                if t < _Q_FADE:
                    h += (w * t) >> _FADE_SHIFT
                else:
                    h += w
                if nd:
                    x = x0 + m * sx
                    j = 48  # word 24, in 32-bit halves
                    while j < 48 + 12 * nd:
                        kind = int(prm[j])
                        a1 = int(prm[j + 2]) | (int(prm[j + 3]) << 32)
                        a2 = int(prm[j + 4]) | (int(prm[j + 5]) << 32)
                        a3 = int(prm[j + 6]) | (int(prm[j + 7]) << 32)
                        a4 = int(prm[j + 8]) | (int(prm[j + 9]) << 32)
                        a5 = int(prm[j + 10]) | (int(prm[j + 11]) << 32)
                        if kind == _EDGE:
                            if a1 * (a2 + m * a3 + k * a4) > a5:
                                h = 0
                        elif h > 0:
                            ddx = x - a1
                            ddy = y - a2
                            e = ((ddx * ddx + ddy * ddy) * a3) >> 32
                            if e < 1024:
                                h += (a4 * int(ex[e])) >> 15
                        j += 12
                if h > 0:
                    z = base + int(zc[m])
                    zs[z] = int(zs[z]) + h
            q += dq
            dq += dd
            g1 += g1m
            g2 += g2m
            g3 += g3m
            m += 1
        k += 1


_BARE_Q = const(218880)         # scene.BARE_Q = 95 mm x ZONE_Q
_ZONE_Q = const(2304)           # scene.ZONE_Q = 256 x SUB^2
_NOISE_MUL = const(111)         # scene.NOISE_MUL
_STATUS9 = const(128849018)     # scene.STATUS9_U32


@micropython.viper
def ranges(zs: ptr32, dist: ptr32, st: ptr8, nz: int, s: int) -> int:
    # scene.Scene._frame for a liver without an optical defect: per zone one xorshift32 draw
    # (Rng.u32) for the ranging noise and one for status 9. Returns the generator's new state.
    m32 = 1
    m32 = (m32 << 32) - 1  # 0xFFFFFFFF, not folded into a constant (see _Q_BITS)
    z = 0
    while z < nz:
        s ^= (s << 13) & m32
        s ^= s >> 17
        s ^= (s << 5) & m32
        g = (((s & 255) + ((s >> 8) & 255) + ((s >> 16) & 255) + (s >> 24) - 510) * _NOISE_MUL) >> 6
        d = _BARE_Q - int(zs[z]) + 9 * g
        if d > 0:
            dist[z] = (d + 1152) // _ZONE_Q
        else:
            dist[z] = 0
        s ^= (s << 13) & m32
        s ^= s >> 17
        s ^= (s << 5) & m32
        if s < _STATUS9:
            st[z] = 9
        else:
            st[z] = 5
        z += 1
    return s
