# Which application slot boots, and the rules that bring a board back to a working one.
#
# ota.json (flash root), replaced atomically (write ota.json.tmp, rename over it: littlefs makes
# the rename atomic, so a power cut leaves the old or the new file, never a torn one):
#   active       slot to boot: "factory" (frozen in the image), "a" or "b" (ota/a, ota/b on flash)
#   confirmed    the active slot passed its health check (always true for "factory")
#   previous     the slot to go back to (a rollback, the rollback command)
#   tries        probation boots started in the active slot while unconfirmed
#   version, previous_version   what the slots hold (the manifest's version; "" for factory)
#   probation_s  the health check's deadline for the pending slot
#   floor        the lowest version this board accepts (raised by a confirmed manifest's min_version)
#   last         the last outcome: {"event": "confirmed" | "rolled_back" | "failed", "version", "reason"}
#
# Rules:
# - A switch (install.py) writes active = the new slot, confirmed = false, tries = 0 in one rename.
# - A boot of an unconfirmed slot is a probation boot: tries is set to 1 and persisted before the
#   application is even imported. A boot that finds tries >= 1 means the previous probation boot
#   ended without confirming (a crash, the watchdog, a power cut, a reset): it rolls back at once,
#   in the same boot, to `previous`, and says why. One try: an update is attempted again by the
#   gateway (retry of the failed devices), not by the board in a loop.
# - Every boot of a flash slot checks the slot's files against its manifest (sizes and SHA-256);
#   a slot that fails is never run: the board boots `previous` (or factory) and records why.
# - Confirming needs the application's health check (WiFi, broker, one reading of each sensor, one
#   acknowledged sample) within probation_s; run.py rolls back when the deadline passes.
import json
import os

STATE = "ota.json"
INTENT = "reset_intent"  # the reason of a reset the firmware makes itself, read at the next boot
SLOT_DIR = "ota"
SLOTS = ("a", "b")
FACTORY = "factory"
PROBATION_S = 120  # default health-check deadline when the update does not say
# what a reset is reported as (telemetry "reset"): planned ones by the firmware's own intent, the
# others by the chip's reset cause
CAUSES = ("power-on", "watchdog", "exception", "update", "rollback", "command", "offline", "reset")

_DEFAULT = {"active": FACTORY, "confirmed": True, "previous": FACTORY, "tries": 0, "version": "",
            "previous_version": "", "probation_s": PROBATION_S, "floor": "0", "last": None}

# this boot's facts, for the application to report (telemetry, status, ota_status)
BOOT = {"slot": FACTORY, "cause": "reset", "probation": False, "version": "", "confirmed": True,
        "started_ms": 0}  # type: dict
MARKS = {}  # type: dict  # the health-check items the probation boot has passed (mark())


def join(flash_dir, name):
    return (flash_dir.rstrip("/") or "") + "/" + name


def slot_dir(flash_dir, slot):
    return join(flash_dir, SLOT_DIR + "/" + slot)


def atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT cannot rename over an existing file; littlefs (the board's flash) can
        try:
            os.remove(path)
        except OSError:
            pass
        os.rename(tmp, path)


def read_json(path):
    try:
        with open(path) as f:
            d = json.loads(f.read())
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def load(flash_dir):
    """ota.json with every field present; defaults (factory, confirmed) when absent or unreadable."""
    d = read_json(join(flash_dir, STATE))
    if d is None:
        d = read_json(join(flash_dir, STATE) + ".tmp")  # a cut between remove and rename (FAT)
    st = dict(_DEFAULT)
    if d:
        for k in _DEFAULT:
            if k in d:
                st[k] = d[k]
    if st["active"] != FACTORY and st["active"] not in SLOTS:
        st["active"] = FACTORY
        st["confirmed"] = True
    if st["previous"] != FACTORY and st["previous"] not in SLOTS:
        st["previous"] = FACTORY
    return st


def save(flash_dir, st):
    atomic_write(join(flash_dir, STATE), json.dumps(st))


def version_tuple(v):
    """'1.2.10' -> (1, 2, 10); a part that is not a number counts as 0 (it is compared, not parsed)."""
    out = []
    for part in str(v).split("."):
        n = 0
        for c in part:
            if not "0" <= c <= "9":
                break
            n = n * 10 + ord(c) - 48
        out.append(n)
    while len(out) < 3:
        out.append(0)
    return tuple(out)


def set_intent(flash_dir, cause):
    """Record why the firmware is about to reset the board (read once at the next boot)."""
    try:
        with open(join(flash_dir, INTENT), "w") as f:
            f.write(cause)
    except OSError:
        pass


def take_cause(board):
    """Why this boot happened: the firmware's own recorded intent if it reset the board itself,
    else the chip's cause (power-on, watchdog), else "reset". The intent is consumed."""
    path = join(board.flash_dir, INTENT)
    cause = None
    try:
        with open(path) as f:
            cause = f.read().strip()
        os.remove(path)
    except OSError:
        pass
    hw = None
    rc = getattr(board, "reset_cause", None)
    if rc is not None:
        try:
            hw = rc()
        except Exception:
            hw = None
    if hw in ("power-on", "watchdog"):
        # a power cut or the watchdog came after whatever the firmware meant to do
        return hw
    if cause in CAUSES:
        return cause
    return "reset"


def _verify_slot(flash_dir, slot):
    """None when the slot's files match its manifest (sizes, SHA-256), else the reason."""
    import binascii
    import hashlib
    d = slot_dir(flash_dir, slot)
    m = read_json(d + "/manifest.json")
    if m is None or not isinstance(m.get("files"), list):
        return "slot %s: no readable manifest" % slot
    buf = bytearray(1024)
    for e in m["files"]:
        try:
            path, size, digest = e["path"], e["size"], e["sha256"]
        except (KeyError, TypeError):
            return "slot %s: malformed manifest" % slot
        h = hashlib.sha256()
        n = 0
        try:
            with open(d + "/" + path, "rb") as f:
                while True:
                    k = f.readinto(buf)
                    if not k:
                        break
                    h.update(buf if k == len(buf) else buf[:k])
                    n += k
        except OSError:
            return "slot %s: %s missing" % (slot, path)
        if n != size or binascii.hexlify(h.digest()).decode() != digest:
            return "slot %s: %s does not match its manifest" % (slot, path)
    return None


def rollback(flash_dir, st, reason):
    """Make `previous` (or factory) the active, confirmed slot and record why. Returns st."""
    failed = st["version"]
    back = st["previous"]
    if back != FACTORY and _verify_slot(flash_dir, back) is not None:
        back = FACTORY
    st["active"] = back
    st["version"] = st["previous_version"] if back != FACTORY else ""
    st["confirmed"] = True
    st["tries"] = 0
    st["previous"] = FACTORY
    st["previous_version"] = ""
    st["last"] = {"event": "rolled_back", "version": failed, "reason": reason[:120]}
    save(flash_dir, st)
    return st


def select(board, log):
    """At boot, before the application is imported: decide the slot and return its directory
    (None: the frozen application). Rolls back a probation that ended badly and a slot whose files
    do not match its manifest. Fills BOOT."""
    fd = board.flash_dir
    cause = take_cause(board)
    BOOT["cause"] = cause
    BOOT["started_ms"] = board.ticks_ms()
    st = load(fd)
    if st["active"] != FACTORY:
        bad = None
        if not st["confirmed"] and st["tries"] >= 1:
            why = (st.get("last") or {}).get("error") if isinstance(st.get("last"), dict) else None
            bad = "probation boot of %s ended by %s%s" % (st["version"], cause, ": " + why if why else "")
        else:
            bad = _verify_slot(fd, st["active"])
        if bad is not None:
            log("sqal: ota: rolling back from %s (slot %s): %s" % (st["version"], st["active"], bad))
            rollback(fd, st, bad)
            BOOT["cause"] = "rollback"
        elif not st["confirmed"]:
            st["tries"] = st["tries"] + 1  # persisted before the application can fail
            save(fd, st)
            BOOT["probation"] = True
    BOOT["slot"] = st["active"]
    BOOT["version"] = st["version"]
    BOOT["confirmed"] = st["confirmed"]
    if st["active"] == FACTORY:
        return None
    return slot_dir(fd, st["active"])


def note_failure(flash_dir, error):
    """A probation boot failed with an exception: keep its text for the rollback's reason."""
    st = load(flash_dir)
    if st["active"] != FACTORY and not st["confirmed"]:
        st["last"] = {"event": "failed", "version": st["version"], "error": error[:80]}
        save(flash_dir, st)


def updated(flash_dir):
    """This board has update state on flash (it was updated, or a download is in progress)."""
    for name in (STATE, "ota_dl.json"):
        try:
            os.stat(join(flash_dir, name))
            return True
        except OSError:
            pass
    return False


# The serial log's last lines, kept on flash for the log_tail command (and so across a reset, a
# watchdog or a rollback: the lines of the boot that failed can be fetched after it). On flash, not
# in RAM: a buffer held for this in a 110 KB heap cost the sensors' bring-up its 4 KiB in one piece
# (measured on the ESP32 profile). Lines are rare (connections, faults, updates), each an append;
# log.txt is renamed to log.1 past LOG_MAX bytes, so 2-4 KiB of log are kept.
LOG = "log.txt"
LOG_OLD = "log.1"
LOG_MAX = 2048
LOG_LINE = 120


def logger(board):
    """board.log, with every line also appended to log.txt on flash."""
    out = board.log
    path = join(board.flash_dir, LOG)
    old = join(board.flash_dir, LOG_OLD)

    def log(line):
        out(line)
        try:
            with open(path, "a") as f:
                f.write(line[:LOG_LINE] + "\n")
            if os.stat(path)[6] > LOG_MAX:
                try:
                    os.remove(old)
                except OSError:
                    pass
                os.rename(path, old)
        except Exception:  # the log must never fail its caller (a full flash, a FAT rename)
            pass

    return log


def log_tail(flash_dir, n, budget=800):
    """The last n lines of the log on flash, as many as fit in `budget` chars (a result <= 1 KiB)."""
    lines = []
    for name in (LOG_OLD, LOG):
        try:
            with open(join(flash_dir, name)) as f:
                lines.extend(f.read().split("\n"))
        except (OSError, ValueError):
            pass
    out = []
    used = 0
    for line in reversed(lines):
        if not line:
            continue
        used += len(line) + 8  # JSON quoting and escapes, roughly
        if used > budget or len(out) >= n:
            break
        out.append(line)
    out.reverse()
    return out


def mark(name, ok=True):
    """The application reports a health-check item (wifi, broker, tof, spec, acked)."""
    MARKS[name] = ok


def confirm(flash_dir):
    """The probation boot passed its health check: the slot becomes the confirmed one. True when
    this call confirmed it (False when there was nothing to confirm)."""
    if not BOOT["probation"]:
        return False
    st = load(flash_dir)
    if st["confirmed"]:
        BOOT["probation"] = False
        return False
    st["confirmed"] = True
    st["tries"] = 0
    m = read_json(slot_dir(flash_dir, st["active"]) + "/manifest.json") or {}
    floor = m.get("min_version")
    if isinstance(floor, str) and version_tuple(floor) > version_tuple(st["floor"]):
        st["floor"] = floor
    st["last"] = {"event": "confirmed", "version": st["version"], "reason": ""}
    save(flash_dir, st)
    BOOT["probation"] = False
    BOOT["confirmed"] = True
    return True


def missing():
    """The health-check items not passed yet (for a timed-out probation's reason)."""
    out = []
    for k in ("wifi", "broker", "tof", "spec", "acked"):
        if not MARKS.get(k):
            out.append(k)
    return out
