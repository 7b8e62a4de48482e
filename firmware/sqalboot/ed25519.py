# Ed25519 signature verification (RFC 8032, section 5.1.7) in plain MicroPython: big ints and the
# built-in three-argument pow, nothing else. Verification only: the board never signs. Checked
# against the host's `cryptography` (OpenSSL) signatures in tests/firmware/test_ota_crypto.py,
# valid and altered ones, on the 64-bit wheel and on the ESP32 profile.
#
# The message a release signs is the SHA-256 digest of its manifest (32 bytes): the board has a
# native SHA-256 (hashlib) but no SHA-512, and Ed25519 hashes R || A || M with SHA-512, here in
# Python (_sha512), so M is kept to one 32-byte digest: R || A || M is 96 bytes, one SHA-512 block.
# Rules the verifier enforces (the "strict" checks): S < L (no malleable second signature), A and
# R canonical encodings (y < p); the equation is the cofactorless [S]B - [k]A == R, compared on R's
# encoding, as libsodium and OpenSSL do.
P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
D2 = (2 * D) % P
SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_M64 = 0xFFFFFFFFFFFFFFFF


def _k():
    # SHA-512 round constants, as 32-bit halves: one literal table instead of 80 big literals
    h = ("428a2f98d728ae22 7137449123ef65cd b5c0fbcfec4d3b2f e9b5dba58189dbbc 3956c25bf348b538 "
         "59f111f1b605d019 923f82a4af194f9b ab1c5ed5da6d8118 d807aa98a3030242 12835b0145706fbe "
         "243185be4ee4b28c 550c7dc3d5ffb4e2 72be5d74f27b896f 80deb1fe3b1696b1 9bdc06a725c71235 "
         "c19bf174cf692694 e49b69c19ef14ad2 efbe4786384f25e3 0fc19dc68b8cd5b5 240ca1cc77ac9c65 "
         "2de92c6f592b0275 4a7484aa6ea6e483 5cb0a9dcbd41fbd4 76f988da831153b5 983e5152ee66dfab "
         "a831c66d2db43210 b00327c898fb213f bf597fc7beef0ee4 c6e00bf33da88fc2 d5a79147930aa725 "
         "06ca6351e003826f 142929670a0e6e70 27b70a8546d22ffc 2e1b21385c26c926 4d2c6dfc5ac42aed "
         "53380d139d95b3df 650a73548baf63de 766a0abb3c77b2a8 81c2c92e47edaee6 92722c851482353b "
         "a2bfe8a14cf10364 a81a664bbc423001 c24b8b70d0f89791 c76c51a30654be30 d192e819d6ef5218 "
         "d69906245565a910 f40e35855771202a 106aa07032bbd1b8 19a4c116b8d2d0c8 1e376c085141ab53 "
         "2748774cdf8eeb99 34b0bcb5e19b48a8 391c0cb3c5c95a63 4ed8aa4ae3418acb 5b9cca4f7763e373 "
         "682e6ff3d6b2b8a3 748f82ee5defb2fc 78a5636f43172f60 84c87814a1f0ab72 8cc702081a6439ec "
         "90befffa23631e28 a4506cebde82bde9 bef9a3f7b2c67915 c67178f2e372532b ca273eceea26619c "
         "d186b8c721c0c207 eada7dd6cde0eb1e f57d4f7fee6ed178 06f067aa72176fba 0a637dc5a2c898a6 "
         "113f9804bef90dae 1b710b35131c471b 28db77f523047d84 32caab7b40c72493 3c9ebe0a15c9bebc "
         "431d67c49c100d4c 4cc5d4becb3e42b6 597f299cfc657e2a 5fcb6fab3ad6faec 6c44198c4a475817")
    return [int(x, 16) for x in h.split()]


def _sha512(msg):
    """SHA-512 of msg (bytes). Python 64-bit words: slow on a board, so it hashes 96 bytes only."""
    k = _k()
    h = [0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
         0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179]
    n = len(msg)
    msg = bytes(msg) + b"\x80" + bytes((112 - (n + 1) % 128) % 128) + (n * 8).to_bytes(16, "big")
    m = _M64
    for off in range(0, len(msg), 128):
        w = [int.from_bytes(msg[off + 8 * i:off + 8 * i + 8], "big") for i in range(16)]
        for i in range(16, 80):
            a, b = w[i - 15], w[i - 2]
            s0 = ((a >> 1) | (a << 63)) ^ ((a >> 8) | (a << 56)) ^ (a >> 7)
            s1 = ((b >> 19) | (b << 45)) ^ ((b >> 61) | (b << 3)) ^ (b >> 6)
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & m)
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            s1 = ((e >> 14) | (e << 50)) ^ ((e >> 18) | (e << 46)) ^ ((e >> 41) | (e << 23))
            ch = (e & f) ^ (~e & g)
            t1 = (hh + (s1 & m) + ch + k[i] + w[i]) & m
            s0 = ((a >> 28) | (a << 36)) ^ ((a >> 34) | (a << 30)) ^ ((a >> 39) | (a << 25))
            t2 = ((s0 & m) + ((a & b) ^ (a & c) ^ (b & c))) & m
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & m, c, b, a, (t1 + t2) & m
        h = [(x + y) & m for x, y in zip(h, (a, b, c, d, e, f, g, hh))]
    return b"".join(x.to_bytes(8, "big") for x in h)


def _add(p1, p2):
    # extended coordinates (X, Y, Z, T), RFC 8032 5.1.4
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1):
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _decode(s):
    """A point from its 32-byte encoding, or None when it is not one (RFC 8032 5.1.3)."""
    if len(s) != 32:
        return None
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    v3 = v * v * v % P
    x = u * v3 * pow(u * v3 * v3 * v % P, (P - 5) // 8, P) % P
    vx2 = v * x * x % P
    if vx2 != u:
        if vx2 != P - u:
            return None
        x = x * SQRT_M1 % P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def _encode(pt):
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def verify(public_key, message, signature):
    """True when `signature` (64 bytes) is `public_key`'s (32 bytes) Ed25519 signature of message."""
    if len(signature) != 64 or len(public_key) != 32:
        return False
    a = _decode(public_key)
    if a is None:
        return False
    r = signature[:32]
    if int.from_bytes(r, "little") & ((1 << 255) - 1) >= P:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        return False
    k = int.from_bytes(_sha512(bytes(r) + bytes(public_key) + bytes(message)), "little") % L
    # [S]B + [k](-A), both scalars (< L < 2^253) at once (Shamir's trick): 253 doublings, <= 253
    # additions (MicroPython ints have no bit_length)
    neg_a = ((P - a[0]) % P, a[1], a[2], (P - a[3]) % P)
    b = (_BX, _BY, 1, _BX * _BY % P)
    both = _add(b, neg_a)
    q = (0, 1, 1, 0)
    for i in range(253 - 1, -1, -1):
        q = _double(q)
        bs, bk = (s >> i) & 1, (k >> i) & 1
        if bs and bk:
            q = _add(q, both)
        elif bs:
            q = _add(q, b)
        elif bk:
            q = _add(q, neg_a)
    return _encode(q) == bytes(r)
