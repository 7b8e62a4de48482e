# config.json on flash: load, validate, defaults.
# Validation happens once at boot; every error names the field, the rule and the value found, so an
# operator reading the serial console (or the emulator log) knows what to fix without the source.
import json

from sqalfw.urls import hide_password, parse_broker_urls

FILENAME = "config.json"


class ConfigError(Exception):
    pass


# NTP servers tried in order until one answers: three zones of the pool, so one dead server (or
# one that DNS cannot resolve) does not leave the clock unset
NTP_HOSTS = ("0.pool.ntp.org", "1.pool.ntp.org", "2.pool.ntp.org")
# The smallest watchdog: it must outlast the longest call that blocks the event loop, an uncached
# DNS lookup when the DNS servers do not answer (14 s on the ESP32, docs/firmware.md "Blocking calls
# and the watchdog"), plus the supervisor's feeding period (1 s) and room for the work around it.
WATCHDOG_MIN_S = 20
# (field, kind, default, a, b)  kind: str | int | num | bool | choice | id | url | hosts
#   str: a = max length; int/num: a..b inclusive range; choice: a = tuple of allowed values;
#   hosts: a list of 1..a host names of 1..b characters each.
# default None with kind "id"/"url" means required.
FIELDS: tuple = (
    ("device_id", "id", None, 0, 0),
    ("location", "str", "", 64, 0),
    ("wifi_ssid", "str", "", 32, 0),
    ("wifi_password", "str", "", 64, 0),
    ("broker_url", "url", None, 0, 0),
    ("transport", "choice", "mqtt", ("mqtt", "websocket"), 0),
    ("ws_url", "str", "", 200, 0),
    ("keepalive_s", "int", 30, 2, 600),
    ("reconnect_base_s", "num", 1, 0.05, 60),
    ("reconnect_cap_s", "num", 60, 0.1, 3600),
    ("sample_interval_s", "num", 30, 0.1, 86400),
    ("telemetry_interval_s", "num", 60, 1, 86400),
    ("resolution", "choice", 8, (4, 8), 0),
    ("tof_frequency_hz", "int", 10, 1, 60),
    ("tof_firmware_path", "str", "vl53l8cx_fw.bin", 128, 0),
    ("as7341_atime", "int", 29, 0, 255),
    ("as7341_astep", "int", 599, 0, 65534),
    ("as7341_again", "int", 3, 0, 10),
    ("i2c_id", "int", 0, 0, 1),
    ("i2c_sda", "int", 21, 0, 48),
    ("i2c_scl", "int", 22, 0, 48),
    ("i2c_freq", "int", 400000, 10000, 1000000),
    ("ntp_hosts", "hosts", NTP_HOSTS, 4, 64),
    ("max_offline_s", "num", 900, 0, 604800),
    ("spool_capacity", "int", 1000, 10, 1000000),
    ("safe_mode_after", "int", 5, 1, 100),
    ("healthy_after_s", "num", 300, 1, 86400),
    ("watchdog_s", "num", 30, WATCHDOG_MIN_S, 3600),
    ("sensor_retry_s", "num", 60, 1, 3600),
    ("tls_insecure", "bool", False, 0, 0),
)
# Accepted for the config files written before ntp_hosts: "ntp_host": "h" means "ntp_hosts": ["h"].
LEGACY_NTP_HOST = "ntp_host"


def _bad(field, rule, value):
    return ConfigError("config.json: %s must be %s, got %s" % (field, rule, _show(value)))


def _show(value):
    try:
        text = json.dumps(value)
    except Exception:
        text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return text


def _is_num(v):
    # bool is an int subclass in CPython: true/false are not numbers in a config file.
    return (isinstance(v, int) or isinstance(v, float)) and not isinstance(v, bool) and v == v \
        and v not in (float("inf"), float("-inf"))


def _host_list(v, most, longest):
    if not isinstance(v, list) or not 1 <= len(v) <= most:
        return False
    for h in v:
        if not isinstance(h, str) or not 1 <= len(h) <= longest:
            return False
        for c in h:
            if c <= " " or c == "\x7f":
                return False
    return True


def valid_device_id(s):
    # ^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$ checked by hand: MicroPython's re has no {m,n} on all ports.
    if not isinstance(s, str) or not 3 <= len(s) <= 48:
        return False
    for i, c in enumerate(s):
        if "0" <= c <= "9" or "a" <= c <= "z" or "A" <= c <= "Z":
            continue
        if i > 0 and c in "_-":
            continue
        return False
    return True


class Config:
    """Validated settings as attributes; `brokers` is the parsed broker_url (a list), `broker` the
    first of them."""

    def __init__(self, values):
        for k in values:
            setattr(self, k, values[k])
        url = values["broker_url"]
        self.brokers = parse_broker_urls(url) if url is not None else []
        self.broker = self.brokers[0] if self.brokers else None

    def get(self, name):
        return getattr(self, name)

    def __getattr__(self, name):
        # reached only for a name that is not a setting: every field is set in __init__ (this also
        # tells static checkers that a Config's attributes are the settings, set at run time)
        raise AttributeError("config has no setting %r" % (name,))


def validate(raw):
    """dict (parsed config.json) -> Config; ConfigError names the first bad field."""
    if not isinstance(raw, dict):
        raise ConfigError("config.json: top level must be an object, got " + _show(raw))
    known = {}
    for f in FIELDS:
        known[f[0]] = f
    if LEGACY_NTP_HOST in raw:
        if "ntp_hosts" in raw:
            raise ConfigError("config.json: ntp_host and ntp_hosts are both given: keep ntp_hosts only "
                              "(ntp_host is the older one-server form)")
        h = raw[LEGACY_NTP_HOST]
        raw = dict(raw)
        del raw[LEGACY_NTP_HOST]
        if not isinstance(h, str) or not h:
            raise _bad(LEGACY_NTP_HOST, "a host name (better: ntp_hosts, a list of host names)", h)
        raw["ntp_hosts"] = [h]
    for k in raw:
        if k not in known:
            raise ConfigError("config.json: unknown field %s (typo? known fields are in docs/firmware.md)"
                              % _show(k))
    out: dict = {}
    for name, kind, default, a, b in FIELDS:
        if name not in raw:
            if name == "broker_url" and raw.get("transport") == "websocket":
                out[name] = None  # a WebSocket device needs no broker
                continue
            if default is None:
                raise ConfigError("config.json: %s is required" % name)
            out[name] = list(default) if isinstance(default, tuple) else default
            continue
        v = raw[name]
        if kind == "str":
            if not isinstance(v, str) or len(v) > a:
                raise _bad(name, "a string of at most %d characters" % a, v)
        elif kind == "int":
            if not _is_num(v) or int(v) != v or not a <= v <= b:
                raise _bad(name, "an integer between %d and %d" % (a, b), v)
            v = int(v)
        elif kind == "num":
            if not _is_num(v) or not a <= v <= b:
                raise _bad(name, "a number between %s and %s" % (a, b), v)
        elif kind == "bool":
            if not isinstance(v, bool):
                raise _bad(name, "true or false", v)
        elif kind == "hosts":
            if not _host_list(v, a, b):
                raise _bad(name, "a list of 1 to %d host names (1-%d characters each, no spaces)" % (a, b), v)
            v = list(v)
        elif kind == "choice":
            if isinstance(v, bool) or v not in a:
                raise _bad(name, "one of " + ", ".join([json.dumps(x) for x in a]), v)
        elif kind == "id":
            if not valid_device_id(v):
                raise _bad(name, "3-48 characters [A-Za-z0-9_-] starting with a letter or digit", v)
        elif kind == "url":
            try:
                parse_broker_urls(v)
            except ValueError as e:
                shown = [hide_password(u) for u in v] if isinstance(v, list) else hide_password(v)
                raise _bad(name, "mqtt://[user:pass@]host[:port] or mqtts://..., or a list of them (%s)" % e, shown)
        out[name] = v
    if out["reconnect_cap_s"] < out["reconnect_base_s"]:
        raise _bad("reconnect_cap_s", "at least reconnect_base_s (%s)" % out["reconnect_base_s"],
                   out["reconnect_cap_s"])
    if out["transport"] == "websocket" and not (out["ws_url"].startswith("ws://")
                                               or out["ws_url"].startswith("wss://")):
        raise _bad("ws_url", "a ws:// or wss:// URL when transport is \"websocket\"", out["ws_url"])
    if out["transport"] == "websocket":
        from sqalfw.urls import parse_ws_url
        try:
            parse_ws_url(out["ws_url"])
        except ValueError as e:
            raise _bad("ws_url", "ws://[user:pass@]host[:port][/path] or wss://... (%s)" % e,
                       hide_password(out["ws_url"]))
    return Config(out)


def load(flash_dir):
    """Read and validate <flash_dir>/config.json."""
    path = join(flash_dir, FILENAME)
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("config.json: not found at " + path)
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ConfigError("config.json: not valid JSON (%s)" % e)
    return validate(raw)


def join(d, name):
    if not d or d == "/":
        return "/" + name
    if d.endswith("/"):
        return d + name
    return d + "/" + name


def redacted(cfg):
    """Settings safe to report (status command): no passwords."""
    out = {}
    for f in FIELDS:
        name = f[0]
        if name in ("wifi_password",):
            continue
        v = getattr(cfg, name)
        if name == "broker_url" and cfg.brokers:
            v = [("mqtts://" if b["tls"] else "mqtt://") + b["host"] + ":" + str(b["port"]) for b in cfg.brokers]
            v = v[0] if len(v) == 1 else v
        elif name == "ws_url":
            v = hide_password(v)
        out[name] = v
    return out
