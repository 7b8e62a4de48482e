# Host -> emulated device control channel: a small JSON file in the flash dir that the host replaces
# atomically (write temp + rename) and the device polls. Chosen over a socket or signals because it
# needs no port allocation, survives device restarts, and the unix port has no signal module.
#   {"net": "up"|"down", "clock_skew_s": float, "i2c_hang": bool, "i2c_error_rate": 0..1,
#    "ntp": "ok"|"never", "dns_fail_s": s, "stop": true, "power": n}
#   ntp: whether the emulated NTP servers answer; dns_fail_s: >0, every DNS lookup of a name blocks
#   that long and fails (0: DNS works); power: a new value power-cycles a device in a host (host.py)
import json
import os

FILENAME = "control.json"


def read(path):
    try:
        with open(path) as f:
            d = json.loads(f.read())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or being replaced: keep the current state


def signature(path):
    """What changes whenever the host replaces the file: (inode, size, mtime), or None when absent.

    An atomic replace always brings a new inode (the temp file exists while the old one is still
    in place), so polling this is as good as re-reading the file, for one stat() instead of an
    open, a read and a JSON parse (hundreds of emulated devices poll it several times a second)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st[1], st[6], st[8])
