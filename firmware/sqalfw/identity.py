# Device identity and the small state that must survive a reset: boot counter, failed-boot counter
# (safe mode), assigned lot id, interval override. One JSON file replaced atomically (write temp +
# rename) so a power cut leaves either the old or the new state, never a torn one.
# Imports only json and os (built into the interpreter): the entry points count a failed boot with
# this module when the rest of the firmware cannot even be imported (boot_failed()).
import json
import os

STATE = "state.json"
# Back-off before the reset that follows a failed boot: 1 s doubling with each failed boot in a row,
# at most a minute. A crash loop then costs little power and log, and safe mode still comes after
# `safe_mode_after` boots.
BOOT_BACKOFF_BASE_S = 1
BOOT_BACKOFF_CAP_S = 60

# state paths whose boot Identity.start() counted in this process: a failure after that point must
# not count the boot twice (one boot per process on a board; see boot_failed)
_counted = {}  # type: dict


def state_path(flash_dir):
    return (flash_dir.rstrip("/") or "") + "/" + STATE


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT cannot rename over an existing file: remove then rename. A cut in between leaves only
        # the .tmp file, which read_state() falls back to.
        os.remove(path)
        os.rename(tmp, path)


def _read_json(path):
    try:
        with open(path) as f:
            d = json.loads(f.read())
        if isinstance(d, dict):
            return d
    except (OSError, ValueError):
        pass
    return None


def _num_or_none(v):
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return v
    return None


class Identity:
    """device_id, boot (persisted, +1 each boot), seq (per boot, from 1), safe-mode bookkeeping."""

    def __init__(self, flash_dir, device_id):
        self.device_id = device_id
        self.path = state_path(flash_dir)
        self.boot = 0
        self.seq = 0
        self.failed_boots = 0   # persisted streak of boots that never became healthy (this one incl.)
        self.safe_mode = False
        self.healthy = False
        self.lot_id = None
        self.interval_s = None  # set_interval overrides (persisted), None = config value
        self.telemetry_s = None
        self.state_error = None

    def _load(self):
        d = _read_json(self.path)
        if d is None:
            d = _read_json(self.path + ".tmp")
            if d is None and _exists(self.path):
                # unreadable state: keep going (never brick), but say so in status
                self.state_error = "state.json unreadable, counters restarted"
        return d or {}

    def _save(self):
        atomic_write(self.path, json.dumps({
            "boot": self.boot, "failed_boots": self.failed_boots,
            "lot_id": self.lot_id, "interval_s": self.interval_s, "telemetry_s": self.telemetry_s}))

    def start(self, safe_mode_after):
        """Count this boot. It is 'failed' until mark_healthy(); after `safe_mode_after` failed boots
        in a row this boot runs in safe mode. Persisted before anything else runs."""
        d = self._load()
        b = d.get("boot", 0)
        self.boot = b + 1 if isinstance(b, int) and b >= 0 else 1
        fb = d.get("failed_boots", 0)
        fb = fb if isinstance(fb, int) and fb >= 0 else 0
        self.safe_mode = fb >= safe_mode_after
        lot = d.get("lot_id")
        self.lot_id = lot if isinstance(lot, str) else None
        self.interval_s = _num_or_none(d.get("interval_s"))
        self.telemetry_s = _num_or_none(d.get("telemetry_s"))
        self.failed_boots = fb + 1  # persisted: this boot counts as failed until proven healthy
        self._save()
        _counted[self.path] = True
        self.seq = 0

    def mark_healthy(self):
        """First successful publish (or long enough up): clear the failed-boot streak once."""
        if self.healthy:
            return False
        self.healthy = True
        self.failed_boots = 0
        self._save()
        return True

    def next_seq(self):
        # contract v1: seq counts from 0 within a boot
        s = self.seq
        self.seq = s + 1
        return s

    def set_lot(self, lot_id):
        old = self.lot_id
        self.lot_id = lot_id
        try:
            self._save()
        except OSError:
            self.lot_id = old
            raise

    def set_intervals(self, sample_s, telemetry_s):
        """Persist first, then take effect: a failed flash write changes nothing (raises OSError)."""
        old = (self.interval_s, self.telemetry_s)
        self.interval_s, self.telemetry_s = sample_s, telemetry_s
        try:
            self._save()
        except OSError:
            self.interval_s, self.telemetry_s = old
            raise


def boot_failed(flash_dir):
    """A boot ended in an exception (an import that ran out of heap, a crash building the App).
    Counts it in the persisted failed-boot streak, unless Identity.start() already counted this
    boot, and returns the streak. The other fields of state.json are kept as they are."""
    path = state_path(flash_dir)
    d = _read_json(path)
    if d is None:
        d = _read_json(path + ".tmp") or {}
    fb = d.get("failed_boots", 0)
    fb = fb if isinstance(fb, int) and fb >= 0 else 0
    if path not in _counted:
        fb += 1
        d["failed_boots"] = fb
        atomic_write(path, json.dumps(d))
        _counted[path] = True
    return fb


def boot_backoff_s(streak):
    """Seconds to wait before resetting after the `streak`-th failed boot in a row."""
    n = streak - 1 if streak > 1 else 0
    if n > 6:
        return BOOT_BACKOFF_CAP_S
    return min(BOOT_BACKOFF_CAP_S, BOOT_BACKOFF_BASE_S << n)
