# Host -> emulated device control channel: a small JSON file in the flash dir that the host replaces
# atomically (write temp + rename) and the device polls. Chosen over a socket or signals because it
# needs no port allocation, survives device restarts, and the unix port has no signal module.
#   {"net": "up"|"down", "clock_skew_s": float, "i2c_hang": bool, "i2c_error_rate": 0..1,
#    "stop": true}
import json

FILENAME = "control.json"


def read(path):
    try:
        with open(path) as f:
            d = json.loads(f.read())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}  # absent or being replaced: keep the current state
