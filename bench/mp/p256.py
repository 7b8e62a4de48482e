# ECDSA P-256 signature verification (FIPS 186-4) in plain MicroPython, kept beside Ed25519 to
# measure both on the ESP32 profile (bench/ota_verify.py, docs/ota.md "Signature scheme"). The
# release format uses Ed25519 (firmware/sqalboot/ed25519.py); this module is not on the board.
# Signature: r || s, 32 bytes each, big-endian; public key: 04 || X || Y (65 bytes, uncompressed).
P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
GX = 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296
GY = 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5


def _double(pt):
    x, y, z = pt
    if y == 0 or z == 0:
        return (0, 1, 0)
    delta = z * z % P
    gamma = y * y % P
    beta = x * gamma % P
    alpha = 3 * (x - delta) * (x + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y + z) * (y + z) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return (x3, y3, z3)


def _add(p1, p2):
    x1, y1, z1 = p1
    x2, y2, z2 = p2
    if z1 == 0:
        return p2
    if z2 == 0:
        return p1
    z1z1 = z1 * z1 % P
    z2z2 = z2 * z2 % P
    u1 = x1 * z2z2 % P
    u2 = x2 * z1z1 % P
    s1 = y1 * z2 * z2z2 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - u1) % P
    r = (s2 - s1) % P
    if h == 0:
        return _double(p1) if r == 0 else (0, 1, 0)
    hh = h * h % P
    hhh = h * hh % P
    v = u1 * hh % P
    x3 = (r * r - hhh - 2 * v) % P
    y3 = (r * (v - x3) - s1 * hhh) % P
    return (x3, y3, h * z1 * z2 % P)


def verify(public_key, digest, signature):
    """True when signature (r || s) is public_key's ECDSA P-256 signature of the SHA-256 digest."""
    if len(signature) != 64 or len(public_key) != 65 or public_key[0] != 4:
        return False
    qx = int.from_bytes(public_key[1:33], "big")
    qy = int.from_bytes(public_key[33:], "big")
    if qx >= P or qy >= P or (qy * qy - qx * qx * qx + 3 * qx - B) % P:
        return False  # not a point of the curve
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    e = int.from_bytes(digest, "big") % N
    w = pow(s, N - 2, N)
    u1, u2 = e * w % N, r * w % N
    g, q = (GX, GY, 1), (qx, qy, 1)
    both = _add(g, q)
    acc = (0, 1, 0)
    for i in range(256 - 1, -1, -1):
        acc = _double(acc)
        b1, b2 = (u1 >> i) & 1, (u2 >> i) & 1
        if b1 and b2:
            acc = _add(acc, both)
        elif b1:
            acc = _add(acc, g)
        elif b2:
            acc = _add(acc, q)
    x, _, z = acc
    if z == 0:
        return False
    zi = pow(z, P - 2, P)
    return (x * zi * zi % P) % N == r
