# Message contract v1 in code (docs/contract.md): the one schema the board and the gateway share.
# Runs unchanged on MicroPython and CPython: only json, struct and plain Python. Field checks are
# table-driven to keep the bytecode small (it stays resident in the board's ~110 KB heap).
import json
import struct

VERSION = 1
MAX_SAMPLE_BYTES = 1024
MAX_MESSAGE_BYTES = 1024
MAGIC = 0xA5  # first byte of a binary sample; 0xA5 never starts valid UTF-8 text

CHANNELS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR")
GAINS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)  # AGAIN code = index
GRADES = ("A+", "A", "B", "C", "REJECT")
COUNTERS = ("sampled", "sent", "acked", "retransmitted", "reconnects", "i2c_errors", "dropped")
COMMANDS = ("set_interval", "assign_lot", "clear_lot", "status", "reboot", "log_tail", "ota_status", "ota_begin",
            "ota_chunk", "ota_rollback")
KINDS = ("sample", "status", "telemetry", "cmd", "cmd/result")
DEGRADED = ("tof", "spec")

U32 = 4294967295
MAX_TS = 253402300799999  # 9999-12-31T23:59:59.999Z, in ms
MAX_DIST = 4000  # mm; the VL53L8 ranges up to 4 m
MAX_ERROR = 200

_INF = float("inf")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_HEAD = "<BBBBIIQ10HBBH"  # magic, version, flags, res, boot, seq, ts, 10 channels, gain code, atime, astep
_HEAD_LEN = 44

# field kinds for the check tables: (key, kind, lo, hi, flag); flag 0 required, 1 optional, 2 required or null
_I = 0  # int in lo..hi (bool is not an int here)
_N = 1  # finite number in lo..hi, returned as float
_B = 2  # bool
_DEV = 3  # device id
_LOT = 4  # lot id
_TXT = 5  # printable ASCII, no quote or backslash, length lo..hi


class ContractError(ValueError):
    """A payload broke the contract; str(err) == err.reason names the field and the problem."""

    def __init__(self, reason, cmd_id=None):
        super().__init__(reason)
        self.reason = reason
        self.cmd_id = cmd_id  # commands only: the id to echo in the error result, if readable


def _chars_ok(s, extra):
    for c in s:
        if c not in _ALNUM and c not in extra:
            return False
    return True


def valid_device_id(s):
    """^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$ by hand (MicroPython's re is limited)."""
    return type(s) is str and 3 <= len(s) <= 48 and s[0] in _ALNUM and _chars_ok(s, "_-")


def valid_lot_id(s):
    """^LOT_\\d{8}_\\d{4,6}$ by hand."""
    if type(s) is not str or not 17 <= len(s) <= 19 or s[:4] != "LOT_" or s[12] != "_":
        return False
    for i in range(4, len(s)):
        if i != 12 and not "0" <= s[i] <= "9":
            return False
    return True


def _valid_cmd_id(s):
    return type(s) is str and 1 <= len(s) <= 64 and _chars_ok(s, "_-.:")


def _printable(s, lo, hi):
    if type(s) is not str or not lo <= len(s) <= hi:
        return False
    for c in s:
        if not " " <= c <= "~" or c == '"' or c == "\\":
            return False
    return True


_TNAMES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "object"))


def _tname(x):
    if x is None:
        return "null"
    for t, name in _TNAMES:
        if type(x) is t:
            return name
    return type(x).__name__


def _short(x):
    r = repr(x)
    return r if len(r) <= 40 else r[:37] + "..."


def _fmt(x):
    return str(int(x)) if x == int(x) else repr(x)


def _err(path, msg):
    return ContractError(path + ": " + msg)


def _value(x, path, kind, lo, hi):
    """Check one value of the given kind; return it clean or raise ContractError naming `path`."""
    if kind == _I or kind == _N:
        t = type(x)
        if t is not int and (kind == _I or t is not float):
            raise _err(path, "expected %s, got %s" % ("int" if kind == _I else "number", _tname(x)))
        if t is float and (x != x or x == _INF or x == -_INF):
            raise _err(path, "not a finite number")
        if not lo <= x <= hi:  # compared before float(): a huge int would overflow it
            raise _err(path, "%s out of range %s..%s" % (_fmt(x), _fmt(lo), _fmt(hi)))
        return x if kind == _I else float(x)
    if kind == _B:
        if type(x) is not bool:
            raise _err(path, "expected bool, got " + _tname(x))
        return x
    if type(x) is not str:
        raise _err(path, "expected str, got " + _tname(x))
    if kind == _DEV and not valid_device_id(x):
        raise _err(path, "invalid device id (3-48 chars of A-Z a-z 0-9 _ -, first alphanumeric)")
    if kind == _LOT and not valid_lot_id(x):
        raise _err(path, "invalid lot id (expected LOT_YYYYMMDD_NNNN)")
    if kind == _TXT and not _printable(x, lo, hi):
        raise _err(path, "expected %d-%d printable ASCII chars without quote or backslash" % (lo, hi))
    return x


def _fields(obj, table, prefix, out):
    for key, kind, lo, hi, flag in table:
        x = obj.get(key)
        t = type(x)
        # the common well-formed values are taken here without a call; anything else (absent,
        # null, wrong type, out of range, a text field) gets the precise check and its message
        if (t is int and kind == _I and lo <= x <= hi or t is bool and kind == _B
                or t is float and kind == _N and lo <= x <= hi):
            out[key] = x
            continue
        path = prefix + key
        if x is None:
            if flag == 1:
                continue
            if flag == 0 or key not in obj:
                raise _err(path, "missing")
            out[key] = None
            continue
        out[key] = _value(x, path, kind, lo, hi)
    return out


def _obj(x, path):
    if type(x) is not dict:
        raise _err(path, "expected object, got " + _tname(x))
    return x


def _head(obj, what, topic_device_id, with_device=True):
    """Common start of every payload: object, version, device id matching the topic."""
    _obj(obj, what)
    if "v" not in obj:
        raise _err("v", "missing")
    v = obj["v"]
    if type(v) is not int:
        raise _err("v", "expected int, got " + _tname(v))
    if v != VERSION:
        raise _err("v", "unsupported version %d (this gateway speaks %d)" % (v, VERSION))
    out = {}  # type: dict
    out["v"] = VERSION
    if with_device:
        dev = _fields(obj, (("device_id", _DEV, 0, 0, 0),), "", out)["device_id"]
        if topic_device_id is not None and dev != topic_device_id:
            raise _err("device_id", "payload says '%s' but topic says '%s'" % (dev, topic_device_id))
    return out


def _one_of(x, path, allowed, what):
    if type(x) is not str or x not in allowed:
        raise _err(path, "%s is not one of %s" % (_short(x), what))
    return x


# --- sample ---

_FW = ("fw", _TXT, 1, 16, 0)
_SAMPLE = (("boot", _I, 0, U32, 0), ("seq", _I, 0, U32, 0), ("ts", _I, 0, MAX_TS, 0),
           ("synced", _B, 0, 0, 0), ("lot_id", _LOT, 0, 0, 1), _FW)
_SPEC = tuple([(ch, _I, 0, 65535, 0) for ch in CHANNELS]) + (
    ("gain", _N, 0.5, 512, 0), ("atime", _I, 0, 255, 0), ("astep", _I, 0, 65534, 0), ("sat", _B, 0, 0, 0))


def validate_sample(s, topic_device_id=None):
    """Check a sample dict against the contract; return its canonical form (a new dict)."""
    out = _fields(s, _SAMPLE, "", _head(s, "sample", topic_device_id))
    tof = _obj(s.get("tof"), "tof")
    res = _fields(tof, (("res", _I, 4, 8, 0),), "tof.", {})["res"]
    if res != 4 and res != 8:
        raise _err("tof.res", "%d is not 4 or 8" % res)
    n = res * res
    t = {}  # type: dict
    t["res"] = res
    for key, hi in (("dist", MAX_DIST), ("st", 255)):
        path = "tof." + key
        lst = tof.get(key)
        if type(lst) is not list:
            raise _err(path, "missing" if lst is None else "expected list, got " + _tname(lst))
        if len(lst) != n:
            raise _err(path, "expected %d items for res %d, got %d" % (n, res, len(lst)))
        for x in lst:
            if type(x) is not int or x < 0 or x > hi:  # the common case stays a tight loop
                for i in range(n):  # find the first bad item: raises, naming it and the problem
                    _value(lst[i], "%s[%d]" % (path, i), _I, 0, hi)
        t[key] = list(lst)
    out["tof"] = t
    sp = _fields(_obj(s.get("spec"), "spec"), _SPEC, "spec.", {})
    if sp["gain"] not in GAINS:
        raise _err("spec.gain", "%s is not one of 0.5, 1, 2, 4 ... 512" % _fmt(sp["gain"]))
    out["spec"] = sp
    q = s.get("q")
    if q is not None:
        score = _fields(_obj(q, "q"), (("score", _N, 0, 1, 0),), "q.", {})["score"]
        out["q"] = {"score": _r3(score), "grade": _one_of(q.get("grade"), "q.grade", GRADES, "A+, A, B, C, REJECT")}
    return out


def _r3(x):
    # 3 decimals, identical on both interpreters (round() differs in its last bit on MicroPython)
    return int(x * 1000 + 0.5) / 1000


def _ints(lst):
    # validated ints only: json.dumps gives the same digits as str(), 5x faster on MicroPython
    return json.dumps(lst, separators=(",", ":"))[1:-1]


def _bool_str(b):
    return "true" if b else "false"


def encode_sample(sample):
    """Sample dict -> compact JSON bytes, fixed key order. Validates first: never send what the gateway rejects."""
    s = validate_sample(sample)
    sp = s["spec"]
    p = ['{"v":1,"device_id":"', s["device_id"], '","boot":', str(s["boot"]), ',"seq":', str(s["seq"]),
         ',"ts":', str(s["ts"]), ',"synced":', _bool_str(s["synced"])]
    if "lot_id" in s:
        p.append(',"lot_id":"' + s["lot_id"] + '"')
    p.append(',"fw":"' + s["fw"] + '","tof":{"res":' + str(s["tof"]["res"]) + ',"dist":[')
    p.append(_ints(s["tof"]["dist"]))
    p.append('],"st":[')
    p.append(_ints(s["tof"]["st"]))
    p.append(']},"spec":{')
    for ch in CHANNELS:
        p.append('"' + ch + '":' + str(sp[ch]) + ",")
    g = sp["gain"]
    p.append('"gain":' + ("0.5" if g == 0.5 else "%d.0" % g) + ',"atime":' + str(sp["atime"])
             + ',"astep":' + str(sp["astep"]) + ',"sat":' + _bool_str(sp["sat"]) + "}")
    if "q" in s:
        m = int(s["q"]["score"] * 1000 + 0.5)
        p.append(',"q":{"score":%d.%03d,"grade":"%s"}' % (m // 1000, m % 1000, s["q"]["grade"]))
    p.append("}")
    return "".join(p).encode()


def encode_sample_bin(sample):
    """Sample dict -> compact binary bytes (docs/contract.md section 3.2)."""
    s = validate_sample(sample)
    sp = s["spec"]
    res = s["tof"]["res"]
    n = res * res
    q = s.get("q")
    strs = [s["device_id"].encode(), s["fw"].encode()]
    flags = (1 if s["synced"] else 0) | (2 if sp["sat"] else 0) | (8 if q else 0)
    if "lot_id" in s:
        flags |= 4
        strs.append(s["lot_id"].encode())
    size = _HEAD_LEN + 3 * n + (3 if q else 0)
    for b in strs:
        size += 1 + len(b)
    buf = bytearray(size)
    struct.pack_into(_HEAD, buf, 0, MAGIC, VERSION, flags, res, s["boot"], s["seq"], s["ts"],
                     sp["F1"], sp["F2"], sp["F3"], sp["F4"], sp["F5"], sp["F6"], sp["F7"], sp["F8"],
                     sp["CLEAR"], sp["NIR"], GAINS.index(sp["gain"]), sp["atime"], sp["astep"])
    i = _HEAD_LEN
    for b in strs:
        buf[i] = len(b)
        buf[i + 1:i + 1 + len(b)] = b
        i += 1 + len(b)
    if q:
        struct.pack_into("<HB", buf, i, int(q["score"] * 1000 + 0.5), GRADES.index(q["grade"]))
        i += 3
    for d in s["tof"]["dist"]:
        buf[i] = d & 0xFF
        buf[i + 1] = d >> 8
        i += 2
    for st in s["tof"]["st"]:
        buf[i] = st
        i += 1
    return bytes(buf)


def _check_size(data, limit):
    if not isinstance(data, (bytes, bytearray)):
        raise _err("payload", "expected bytes, got " + type(data).__name__)
    if len(data) > limit:
        raise _err("size", "payload is %d bytes, limit is %d" % (len(data), limit))
    if not data:
        raise _err("payload", "empty")


def _load_json(data, limit):
    _check_size(data, limit)
    try:
        text = bytes(data).decode("utf-8")
    except Exception:
        raise _err("json", "payload is not UTF-8 text")
    try:
        obj = json.loads(text)
    except Exception:  # ValueError; RecursionError on CPython for deep nesting
        raise _err("json", "not valid JSON")
    return _obj(obj, "json")


def decode_sample(data, topic_device_id=None):
    """Bytes in either encoding (told apart by the first byte) -> canonical sample dict, or ContractError."""
    _check_size(data, MAX_SAMPLE_BYTES)
    obj = _unpack_bin(data) if data[0] == MAGIC else _load_json(data, MAX_SAMPLE_BYTES)
    return validate_sample(obj, topic_device_id)


def _unpack_bin(data):
    total = len(data)
    if total < _HEAD_LEN:
        raise _err("binary", "truncated header (needs %d bytes, got %d)" % (_HEAD_LEN, total))
    h = struct.unpack_from(_HEAD, data, 0)
    flags = h[2]
    if flags & 0xF0:
        raise _err("binary.flags", "unknown bits 0x%02x" % (flags & 0xF0))
    if h[3] != 4 and h[3] != 8:
        raise _err("tof.res", "%d is not 4 or 8" % h[3])
    if h[17] > 10:
        raise _err("spec.gain", "code %d is not 0..10" % h[17])
    s = {"v": h[1], "boot": h[4], "seq": h[5], "ts": h[6], "synced": bool(flags & 1)}
    sp = {"gain": GAINS[h[17]], "atime": h[18], "astep": h[19], "sat": bool(flags & 2)}
    for k in range(10):
        sp[CHANNELS[k]] = h[7 + k]
    s["spec"] = sp
    i = _HEAD_LEN
    for name in ("device_id", "fw", "lot_id"):
        if name == "lot_id" and not flags & 4:
            break
        ln = data[i] if i < total else 0
        if i >= total or i + 1 + ln > total:
            raise _err("binary", "truncated at " + name)
        try:
            s[name] = bytes(data[i + 1:i + 1 + ln]).decode("utf-8")
        except Exception:
            raise _err(name, "not UTF-8 text")
        i += 1 + ln
    if flags & 8:
        if i + 3 > total:
            raise _err("binary", "truncated at q")
        m, gi = struct.unpack_from("<HB", data, i)
        if gi >= 5:
            raise _err("q.grade", "index %d is not 0..4" % gi)
        s["q"] = {"score": m / 1000, "grade": GRADES[gi]}
        i += 3
    res = h[3]
    n = res * res
    need = i + 3 * n
    if total != need:
        if total < need:
            raise _err("binary", "truncated at tof.dist (needs %d bytes, got %d)" % (need, total))
        raise _err("binary", "%d trailing bytes after tof.st" % (total - need))
    s["tof"] = {"res": res, "dist": [data[i + 2 * k] | data[i + 2 * k + 1] << 8 for k in range(n)],
                "st": list(data[i + 2 * n:need])}
    return s


# --- topics ---

def topic(device_id, kind):
    """Topic of `kind` (sample, status, telemetry, cmd, cmd/result) for a device."""
    _one_of(kind, "topic", KINDS, "sample, status, telemetry, cmd, cmd/result")
    _value(device_id, "topic", _DEV, 0, 0)
    return "sqal/v1/" + device_id + "/" + kind


def parse_topic(t):
    """'sqal/v1/{device_id}/{kind}' -> (device_id, kind); ContractError for anything else."""
    parts = t.split("/", 3) if type(t) is str else ()
    if len(parts) < 4 or parts[0] != "sqal" or parts[1] != "v1":
        raise _err("topic", "%s is not sqal/v1/<device_id>/<kind>" % _short(t))
    _one_of(parts[3], "topic", KINDS, "sample, status, telemetry, cmd, cmd/result")
    return _value(parts[2], "topic", _DEV, 0, 0), parts[3]


# --- status, telemetry ---

def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


_STATUS = (("boot", _I, 0, U32, 0), _FW, ("ts", _I, 0, MAX_TS, 1), ("location", _TXT, 0, 64, 1),
           ("safe_mode", _B, 0, 0, 1), ("conn", _I, 1, U32, 1))


def validate_status(s, topic_device_id=None):
    out = _head(s, "status", topic_device_id)
    out["state"] = _one_of(s.get("state"), "state", ("online", "offline"), "online, offline")
    _fields(s, _STATUS, "", out)
    _degraded(s, out)
    return out


def _degraded(msg, out):
    # Optional list of sensors that failed to initialise; carried by status and telemetry.
    d = msg.get("degraded")
    if d is not None:
        if type(d) is not list:
            raise _err("degraded", "expected list, got " + _tname(d))
        for i in range(len(d)):
            _one_of(d[i], "degraded[%d]" % i, DEGRADED, "tof, spec")
        out["degraded"] = list(d)


def encode_status(status):
    return _dumps(validate_status(status))


def decode_status(data, topic_device_id=None):
    return validate_status(_load_json(data, MAX_MESSAGE_BYTES), topic_device_id)


_TELEMETRY = (("boot", _I, 0, U32, 0), ("ts", _I, 0, MAX_TS, 0), ("synced", _B, 0, 0, 0),
              ("uptime_s", _I, 0, U32, 0), ("mem_free", _I, 0, U32, 0), ("mem_min_free", _I, 0, U32, 0),
              ("spool_depth", _I, 0, U32, 0), _FW, ("rssi", _I, -127, 0, 2), ("lot_id", _LOT, 0, 0, 1),
              ("sample_s", _N, 0.1, 86400, 1), ("safe_mode", _B, 0, 0, 1), ("reset", _TXT, 1, 16, 1))
# telemetry "ota": the update state when there is one (docs/ota.md)
_OTA = (("state", _TXT, 1, 16, 0), ("slot", _TXT, 1, 8, 1), ("version", _TXT, 1, 16, 1),
        ("target", _TXT, 1, 16, 1), ("progress", _I, 0, 100, 1), ("reason", _TXT, 0, 120, 1))
_COUNTERS = tuple([(c, _I, 0, U32, 0) for c in COUNTERS])


def validate_telemetry(t, topic_device_id=None):
    out = _fields(t, _TELEMETRY, "", _head(t, "telemetry", topic_device_id))
    out["counters"] = _fields(_obj(t.get("counters"), "counters"), _COUNTERS, "counters.", {})
    if t.get("ota") is not None:
        out["ota"] = _fields(_obj(t["ota"], "ota"), _OTA, "ota.", {})
    _degraded(t, out)
    return out


def encode_telemetry(telemetry):
    return _dumps(validate_telemetry(telemetry))


def decode_telemetry(data, topic_device_id=None):
    return validate_telemetry(_load_json(data, MAX_MESSAGE_BYTES), topic_device_id)


# --- commands and results ---

_ARGS = {
    "set_interval": (("sample_s", _N, 0.1, 86400, 1), ("telemetry_s", _N, 1, 86400, 1)),
    "assign_lot": (("lot_id", _LOT, 0, 0, 0),),
    "log_tail": (("lines", _I, 1, 50, 1),),
    # updates (docs/ota.md): the manifest's size and Ed25519 signature (hex); a chunk of a file at
    # an offset, base64 (600 bytes of data make 800 chars: the command stays under 1 KiB)
    "ota_begin": (("version", _TXT, 1, 16, 0), ("size", _I, 1, 16384, 0), ("sig", _TXT, 128, 128, 0),
                  ("probation_s", _I, 10, 3600, 1)),
    "ota_chunk": (("path", _TXT, 1, 64, 0), ("off", _I, 0, 262144, 0), ("data", _TXT, 0, 860, 0)),
}
_CMDS = "set_interval, assign_lot, clear_lot, status, reboot, log_tail, ota_status, ota_begin, ota_chunk, ota_rollback"


def validate_command(c):
    """Check a command; on error the ContractError carries .cmd_id when the id was readable."""
    _obj(c, "command")
    cmd_id = c.get("id")
    if not _valid_cmd_id(cmd_id):
        cmd_id = None
    try:
        _head(c, "command", None, False)
        if cmd_id is None:
            _fields(c, (("id", _TXT, 1, 64, 0),), "", {})
            raise _err("id", "expected 1-64 chars of A-Z a-z 0-9 _ - . :")
        name = _one_of(c.get("cmd"), "cmd", COMMANDS, _CMDS)
        args = c.get("args")
        args = {} if args is None else _obj(args, "args")
        table = _ARGS.get(name, ())
        for key in args:
            if key not in [e[0] for e in table]:
                raise _err("args", "unknown key %s for %s" % (_short(key), name))
        clean = _fields(args, table, "args.", {})
        if name == "set_interval" and not clean:
            raise _err("args", "set_interval needs sample_s or telemetry_s")
    except ContractError as e:
        e.cmd_id = cmd_id
        raise
    return {"v": VERSION, "id": cmd_id, "cmd": name, "args": clean}


def encode_command(cmd_id, cmd, args=None):
    return _dumps(validate_command({"v": VERSION, "id": cmd_id, "cmd": cmd, "args": args or {}}))


def decode_command(data):
    return validate_command(_load_json(data, MAX_MESSAGE_BYTES))


def validate_result(r):
    out = _head(r, "result", None, False)
    for key in ("id", "cmd"):
        if key not in r:
            raise _err(key, "missing")
    rid = r["id"]
    if rid is not None and not _valid_cmd_id(rid):
        raise _err("id", "expected null or 1-64 chars of A-Z a-z 0-9 _ - . :")
    out["id"] = rid
    out["cmd"] = None if r["cmd"] is None else _one_of(r["cmd"], "cmd", COMMANDS, _CMDS)
    _fields(r, (("ok", _B, 0, 0, 0),), "", out)
    if out["ok"]:
        out["data"] = _obj(r.get("data") or {}, "data")
    else:
        e = r.get("error")
        if type(e) is not str or not 1 <= len(e) <= MAX_ERROR:
            raise _err("error", "expected a reason of 1-%d chars" % MAX_ERROR)
        out["error"] = e
        # optional: a transient failure (the board short of memory), nothing changed: send again
        _fields(r, (("retry", _B, 0, 0, 1),), "", out)
    return out


def encode_result(cmd_id, cmd, ok, data=None, error=None, retry=False):
    """Result payload; a long error is truncated, a result over the size limit raises ContractError.
    `retry` marks an error as transient: nothing changed, the same command may be sent again."""
    r = {"v": VERSION, "id": cmd_id, "cmd": cmd, "ok": ok}
    if ok:
        r["data"] = data or {}
    else:
        e = error or "failed"
        r["error"] = e if len(e) <= MAX_ERROR else e[:MAX_ERROR - 3] + "..."
        if retry:
            r["retry"] = True
    out = _dumps(validate_result(r))
    if len(out) > MAX_MESSAGE_BYTES:
        raise _err("size", "result is %d bytes, limit is %d" % (len(out), MAX_MESSAGE_BYTES))
    return out


def decode_result(data):
    return validate_result(_load_json(data, MAX_MESSAGE_BYTES))
