"""What checking a release's signature costs a board: Ed25519 and ECDSA P-256 verification in
MicroPython on the emulator's ESP32 profile (32-bit, single-precision floats, the board's 110 KB
heap, sqalboot frozen as in the image), with signatures made by the host's `cryptography`
(OpenSSL). Prints the time (min and median of --runs), the heap one verification allocates, and
SHA-256 over a release's 76 KiB. docs/ota.md, "Signature scheme", has the figures and the choice.

    .venv/bin/python bench/ota_verify.py [--runs 9]

The MicroPython side (bench/mp/ota_verify_mp.py) runs unchanged on a board (see its header).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from emulation.esp32.build import ensure_profile

HERE = Path(__file__).resolve().parent


def vectors(runs: int, alloc: bool = False) -> str:
    msg = hashlib.sha256(b"a release manifest").digest()
    ed = Ed25519PrivateKey.generate()
    pk = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ek = ec.generate_private_key(ec.SECP256R1())
    epk = ek.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    r, s = decode_dss_signature(ek.sign(msg, ec.ECDSA(Prehashed(hashes.SHA256()))))
    esig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return (f"RUNS = {runs}\nALLOC = {alloc}\nPK = {pk!r}\nMSG = {msg!r}\nSIG = {ed.sign(msg)!r}\n"
            f"EPK = {epk!r}\nDIG = {msg!r}\nESIG = {esig!r}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--heap", default="110k")
    args = ap.parse_args()
    binary = str(ensure_profile())

    def run(heap: str, alloc: bool) -> list[dict[str, object]] | None:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "ota_vectors.py").write_text(vectors(args.runs, alloc))
            path = f"{tmp}:{HERE / 'mp'}:.frozen"
            proc = subprocess.run([binary, "-X", f"heapsize={heap}", str(HERE / "mp" / "ota_verify_mp.py")],
                                  capture_output=True, text=True, errors="replace", timeout=600, check=False,
                                  env=dict(os.environ, MICROPYPATH=path))
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr)
            return None
        return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]

    timed = run(args.heap, False)  # the board's heap: the collector runs as it would there
    allocated = run("4M", True)    # what one run allocates in all (gc off), on a heap that holds it
    if timed is None or allocated is None:
        return 1
    alloc = {str(r["what"]): r["heap_allocated"] for r in allocated}
    print(f"ESP32 profile ({binary}), -X heapsize={args.heap}, {args.runs} runs each")
    print(f"{'what':<24} {'ok':<5} {'min ms':>8} {'median ms':>10} {'allocated (gc off)':>19} {'free after':>11}")
    for r in timed:
        print(f"{r['what']:<24} {r['ok']!s:<5} {int(r['min_us']) / 1000:>8.1f} {int(r['median_us']) / 1000:>10.1f} "  # type: ignore[call-overload]
              f"{alloc.get(str(r['what']), 0):>19,} {r['free_after']:>11,}")
    return 0 if all(r["ok"] is not False for r in timed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
