# The cost of a release signature check on a MicroPython interpreter: Ed25519 (what releases use,
# firmware/sqalboot/ed25519.py, frozen in the image) and ECDSA P-256 (bench/mp/p256.py, for the
# comparison), plus SHA-256 over a release's files. Runs on the emulator's ESP32 profile
# (bench/ota_verify.py writes the vectors and runs it) and, unchanged, on a board:
#     mpremote cp bench/mp/p256.py :p256.py + cp ota_vectors.py :ota_vectors.py + run bench/mp/ota_verify_mp.py
# Prints one JSON line per figure: microseconds (min and median of the runs), the heap free after
# it, and with ALLOC = True in the vectors the heap one run allocates (garbage included).
import gc
import hashlib
import json
import time

import ota_vectors as V  # type: ignore[import-not-found]  # written by bench/ota_verify.py: PK, MSG, SIG, EPK, DIG, ESIG

RUNS = getattr(V, "RUNS", 5)


def measure(name, fn, args):
    ts = []
    ok = None
    for _ in range(RUNS):
        gc.collect()
        t = time.ticks_us()
        ok = fn(*args)
        ts.append(time.ticks_diff(time.ticks_us(), t))
    allocated = None
    if getattr(V, "ALLOC", False):
        # everything one verification allocates, garbage included (gc off while it runs): more
        # than a 110 KB heap holds at once, so measured on a larger heap (bench/ota_verify.py)
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        fn(*args)
        allocated = gc.mem_alloc() - before
        gc.enable()
        gc.collect()
    ts.sort()
    print(json.dumps({"what": name, "ok": ok if ok is True or ok is False else None, "min_us": ts[0], "median_us": ts[len(ts) // 2],
                      "heap_allocated": allocated, "free_after": gc.mem_free()}))


from sqalboot import ed25519

measure("ed25519_verify", ed25519.verify, (V.PK, V.MSG, V.SIG))
measure("ed25519_sha512_block", ed25519._sha512, (V.PK + V.PK + V.MSG,))
try:
    import p256
except ImportError:
    p256 = None
if p256 is not None:
    measure("p256_verify", p256.verify, (V.EPK, V.DIG, V.ESIG))
data = bytes(range(256)) * 4


def sha256_release(n):
    h = hashlib.sha256()
    for _ in range(n // len(data)):
        h.update(data)
    return h.digest()


measure("sha256_76KiB", sha256_release, (76 * 1024,))
