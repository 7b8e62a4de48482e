"""Host-side reads of an emulated board's littlefs2 flash image (the ESP32 profile).

The image is read by the profile's own interpreter, with the littlefs it was written by, mounted
read-only: the host never writes it (files go onto the flash through the board's provisioning at
power-up), so reading beside a running device is safe. A read that races a device's write can see
a metadata block mid-update; littlefs then falls back to the pair's other copy, and a read that
still fails is retried.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

_MOUNT = """
import sys, vfs
from emulation.mpboard.flash import FileFlash
bdev = FileFlash({image!r}, {size}, readonly=True)
vfs.mount(vfs.VfsLfs2(bdev), "/flash", readonly=True)
"""
_READ = _MOUNT + """
try:
    f = open("/flash/" + {path!r}, "rb")
except OSError:
    print("ABSENT")
    sys.exit(0)
import binascii
print("DATA " + binascii.hexlify(f.read()).decode())
"""
_LIST = _MOUNT + """
import json, os
try:
    names = os.ilistdir("/flash/" + {path!r})
except OSError:
    print("ABSENT")
    sys.exit(0)
print("DATA " + json.dumps(dict((e[0], e[3] if e[1] == 0x8000 else -1) for e in names)))
"""


def _run(binary: str, code: str) -> str | None:
    last = ""
    for attempt in range(5):
        proc = subprocess.run([binary, "-X", "heapsize=4M", "-c", code], capture_output=True, text=True,
                              timeout=60, check=False, env={"MICROPYPATH": ".frozen"})
        out = proc.stdout.strip()
        if proc.returncode == 0 and out == "ABSENT":
            return None
        if proc.returncode == 0 and out.startswith("DATA "):
            return out[5:]
        last = proc.stdout + proc.stderr
        time.sleep(0.05 * (attempt + 1))  # a device was writing the block just read: read again
    raise OSError(f"reading the flash image failed: {last.strip()[-500:]}")


def read_file(binary: str, image: Path, size: int, path: str) -> bytes | None:
    if not image.exists():
        return None
    out = _run(binary, _READ.format(image=str(image), size=size, path=path.lstrip("/")))
    return None if out is None else bytes.fromhex(out)


def list_dir(binary: str, image: Path, size: int, path: str = "") -> dict[str, int] | None:
    if not image.exists():
        return None
    out = _run(binary, _LIST.format(image=str(image), size=size, path=path.strip("/")))
    return None if out is None else dict(json.loads(out))
