# Emulated SQAL board for the MicroPython unix port: the same interface as sqalfw.board_esp32
# (documented in firmware/sqalfw/board.py), backed by:
#   I2C       emulation.peripherals models (VL53L8 + AS7341) over a scene (emulation/mpboard/sensors.py)
#   network   host sockets through a Link the host can cut, and its DNS, which can be made to block
#             and fail as lwIP's does (emulation/mpboard/net.py); the firmware reaches both through
#             this board (open_connection, getaddrinfo, resolver): nothing global is patched
#   clock     an RTC: until NTP sets it, it reads 2000-01-01 plus the time since power-up (not the
#             host's time); once set, the host clock + optional skew. It is kept in <dir>/rtc, so
#             a reset (the process restarts) keeps it and a power cut (the host removes the file at
#             power-up, emulation/device.py) loses it. NTP can fail for every server or some.
#   log       the serial console: print()
#   flash     a per-device directory (64-bit wheel), or with emulation.json's flash_size a littlefs2
#             image of that size mounted at /flash (the ESP32 profile: emulation/mpboard/flash.py);
#             files the host puts in <dir>/provision/ are moved onto it at power-up (as a deploy)
#   watchdog  a thread that kills the process (SIGUSR1) when not fed (emulation/mpboard/wdt.py)
#   reset     process exit with exitcodes.RESET; the host launcher restarts it, flash kept
# Emulation settings come from <dir>/emulation.json (fixed for the process) and <dir>/control.json
# (changed by the host while running, see control.py); <dir> is the device's host directory, which
# is also its flash when there is no image.
import asyncio
import gc
import json
import os
import sys
import time

from sqalfw.board import MemTracker, clock_is_set
from sqalfw.link import Resolver

from emulation.mpboard import control, exitcodes, net

POLL_MS = 1000  # control.json poll: a stat() each time, a read only when it changed

DEFAULTS = {
    "profile": "default",   # scene quality profile (emulation.peripherals.profiles)
    "seed": 1,              # scene seed: same seed, same livers
    "i2c_error_rate": 0.0,  # probability of an OSError per I2C transaction
    "absent": [],           # sensors missing from the bus: "tof", "spec"
    "stuck_data_ready": False,
    "ntp": "ok",            # "ok" or "never" (clock never set); control.json can change it
    "ntp_fail": [],         # NTP servers (names as in config.json's ntp_hosts) that never answer
    "clock_skew_s": 0.0,    # added to the board clock, set or not (a clock fault NTP does not mend)
    "dns_fail_s": 0,        # >0: a DNS lookup of a name blocks this long, then fails (lwIP when its
                            # DNS servers do not answer); control.json can change it
    "memory_error_at": "",  # "import": the entry point's import of the firmware raises MemoryError
    "memory_error_boots": 0,  # with memory_error_at: only the first n boots fail (0: every boot)
    "rssi": -61,
    "sensor_time_scale": 1,  # >1: the sensor models' clock runs faster (benchmarks only)
    "flash_size": 0,        # bytes of littlefs2 flash image (<dir>/flash.img); 0 = the directory itself
}
FLASH_MOUNT = "/flash"
IMAGE = "flash.img"
PROVISION = "provision"
RTC = "rtc"  # host side: the emulated RTC (survives a reset, removed at a power-up)
MEMORY_ERRORS = "memory_errors"  # host side: MemoryErrors raised so far (memory_error_boots)
EPOCH_2000_MS = 946684800000  # the RTC's reading at power-up: 2000-01-01T00:00:00Z
NTP_TIMEOUT_S = 1  # a server that does not answer blocks ntptime this long (board_esp32.NTP_TIMEOUT_S)
FAULT_POINTS = ("", "import")


def _load_settings(flash_dir):
    s = dict(DEFAULTS)
    try:
        with open(flash_dir + "/emulation.json") as f:
            d = json.loads(f.read())
    except OSError:
        return s
    if not isinstance(d, dict):
        raise ValueError("emulation.json: top level must be an object")
    for k in d:
        if k not in DEFAULTS:
            raise ValueError("emulation.json: unknown field %r" % k)
        s[k] = d[k]
    if s["memory_error_at"] not in FAULT_POINTS:
        raise ValueError("emulation.json: memory_error_at must be one of %r, got %r"
                         % (FAULT_POINTS, s["memory_error_at"]))
    if not isinstance(s["ntp_fail"], list):
        raise ValueError("emulation.json: ntp_fail must be a list of NTP server names, got %r" % (s["ntp_fail"],))
    return s


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _reset_reason(host_dir):
    # written by the emulated watchdog ("watchdog") and by reset() ("reset")
    try:
        with open(host_dir + "/reset_reason") as f:
            return "watchdog" if f.read().strip() == "watchdog" else "soft"
    except OSError:
        return "soft"


def _host_ms():
    return time.time_ns() // 1000000


def _mount_image(host_dir, size):
    from emulation.mpboard import flash
    bdev = flash.mount(host_dir + "/" + IMAGE, size, FLASH_MOUNT)
    _provision(host_dir + "/" + PROVISION, FLASH_MOUNT)
    return bdev


def _provision(src_dir, dst_dir):
    # each file is written beside its target, renamed over it, then removed from the host side:
    # a power cut at any point leaves the old or the new file, and the copy is done again at the
    # next power-up if the host's file is still there
    try:
        names = os.listdir(src_dir)
    except OSError:
        return
    buf = bytearray(1024)
    for name in names:
        src = src_dir + "/" + name
        dst = dst_dir + "/" + name
        with open(src, "rb") as fi, open(dst + ".tmp", "wb") as fo:
            while True:
                n = fi.readinto(buf)
                if not n:
                    break
                fo.write(buf[:n] if n < len(buf) else buf)
        os.rename(dst + ".tmp", dst)
        os.remove(src)


class Board:
    name = "emulated"

    def __init__(self, flash_dir):
        self.host_dir = flash_dir.rstrip("/") or "."
        self.settings = _load_settings(self.host_dir)
        self.flash = None  # the block device when the flash is an image (wear counters)
        if self.settings["flash_size"]:
            self.flash_dir = FLASH_MOUNT
            self.flash = _mount_image(self.host_dir, self.settings["flash_size"])
        else:
            self.flash_dir = self.host_dir
        self.link = net.Link()
        self.link.dns_fail_s = self.settings["dns_fail_s"]
        self.wlan = net.Wlan(self.link, self.settings["rssi"])
        self.open_connection = self.link.open_connection
        self.getaddrinfo = self.link.getaddrinfo
        self.resolver = Resolver(self.link.getaddrinfo, self.log)
        self.skew_ms = int(self.settings["clock_skew_s"] * 1000)
        self.ntp_mode = self.settings["ntp"]
        self._rtc_path = self.host_dir + "/" + RTC
        # a power-up clears the RTC (the host removes its file): that is what tells a power-on
        # reset from the others here, as the ESP32's reset cause register does
        self._cause = "power-on" if not _exists(self._rtc_path) else _reset_reason(self.host_dir)
        self._rtc_offset_ms = self._read_rtc()
        self._mem = MemTracker(gc.mem_free)
        self._i2c = None
        self.sensors = None
        self.stop_requested = False
        self.i2c_hang = False
        self._control_path = self.host_dir + "/" + control.FILENAME
        self._control_sig = control.signature(self._control_path)  # before the read: no change missed
        self._polls = 0
        self._apply(control.read(self._control_path))

    # ---- the RTC ----

    def _read_rtc(self):
        # the RTC's offset from the host clock: kept in a host-side file through resets; none at a
        # power-up, when the RTC starts again from 2000-01-01
        try:
            with open(self._rtc_path) as f:
                return int(json.loads(f.read())["offset_ms"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        off = EPOCH_2000_MS - _host_ms()
        self._write_rtc(off)
        return off

    def _write_rtc(self, offset_ms):
        try:
            with open(self._rtc_path + ".tmp", "w") as f:
                f.write(json.dumps({"offset_ms": offset_ms}))
            os.rename(self._rtc_path + ".tmp", self._rtc_path)
        except OSError:
            pass

    def power_lost(self):
        """The RTC loses its time (a power cut): the next boot's clock starts at 2000-01-01 again."""
        try:
            os.remove(self._rtc_path)
        except OSError:
            pass

    # ---- board interface ----

    def i2c(self, bus_id=0, sda=None, scl=None, freq=400000):
        if self._i2c is None:
            from emulation.mpboard import sensors
            self.sensors = sensors.build(self.settings, self)
            self._i2c = sensors.HangableI2C(self.sensors.bus, self)
        return self._i2c

    def cycle_start(self):
        # the belt brings the next liver under the sensors (called by the sampler per cycle)
        if self.sensors is not None:
            self.sensors.next_product()

    def ticks_ms(self):
        return time.ticks_ms()

    def time_ms(self):
        return _host_ms() + self._rtc_offset_ms + self.skew_ms

    def time_s(self):
        return self.time_ms() / 1000

    def ntp_sync(self, host):
        # the emulated NTP answers with the host's time; no DNS lookup is made for it (the host
        # machine may have no DNS for pool names), so dns_fail_s does not touch it
        if not self.link.is_up():
            return False
        if self.ntp_mode == "never" or host in self.settings["ntp_fail"]:
            time.sleep(NTP_TIMEOUT_S)  # ntptime waits for its timeout, blocking the loop
            return False
        self._rtc_offset_ms = 0  # the clock reads the host's time (plus the skew fault, if any)
        self._write_rtc(0)
        return True

    def clock_synced(self):
        return clock_is_set(self.time_ms() // 1000)

    def log(self, line):
        print(line)

    def fault_point(self, name):
        """Emulation: raise MemoryError when the boot reaches `name` and emulation.json's
        memory_error_at names it (for the first memory_error_boots boots, or every boot)."""
        if not name or self.settings["memory_error_at"] != name:
            return
        path = self.host_dir + "/" + MEMORY_ERRORS
        try:
            with open(path) as f:
                n = int(f.read())
        except (OSError, ValueError):
            n = 0
        limit = self.settings["memory_error_boots"]
        if limit and n >= limit:
            return
        with open(path, "w") as f:
            f.write(str(n + 1))
        raise MemoryError("memory allocation failed (emulated at %s, emulation.json)" % name)

    def reset_cause(self):
        """Why this boot happened, as machine.reset_cause() says it on a board: "power-on",
        "watchdog" or "soft" (a reset the firmware made)."""
        return self._cause

    def watchdog(self, timeout_ms):
        from emulation.mpboard.wdt import Watchdog
        return Watchdog(timeout_ms, self.host_dir + "/reset_reason")

    def reset(self):
        try:
            with open(self.host_dir + "/reset_reason", "w") as f:
                f.write("reset")
        except OSError:
            pass
        self.log("RESET")
        sys.exit(exitcodes.RESET)

    def mem_free(self):
        return self._mem.sample()

    def collect(self):
        gc.collect()

    def mem_min_free(self):
        self._mem.sample()
        return self._mem.min_free

    def background(self):
        return [self._control_loop()]

    # ---- host control ----

    def _apply(self, d):
        if "net" in d:
            self.link.set_host_up(d["net"] != "down")
        if "clock_skew_s" in d:
            self.skew_ms = int(d["clock_skew_s"] * 1000)
        if d.get("ntp") in ("ok", "never"):
            self.ntp_mode = d["ntp"]
        if "dns_fail_s" in d:
            v = d["dns_fail_s"]
            if isinstance(v, (int, float)) and v >= 0:
                self.link.dns_fail_s = v
        if "i2c_error_rate" in d:
            r = d["i2c_error_rate"]
            if isinstance(r, (int, float)) and 0 <= r <= 1 and r != self.settings["i2c_error_rate"]:
                self.settings["i2c_error_rate"] = r  # also for a bus built later
                if self.sensors is not None:
                    self.sensors.bus.error_rate = r
        if "i2c_hang" in d:
            self.i2c_hang = bool(d["i2c_hang"])
        if d.get("stop"):
            self.stop_requested = True

    def poll_control(self):
        """One look at control.json: a stat(), a read when it changed (and every 10th look)."""
        sig = control.signature(self._control_path)
        self._polls += 1
        # every 10th poll reads anyway: a file system that reuses a freed inode at once could
        # make two quick replacements of the same size within a second look unchanged
        if sig is not None and (sig != self._control_sig or self._polls % 10 == 0):
            d = control.read(self._control_path)
            if d:  # unreadable (being replaced): look again at the next poll
                self._control_sig = sig
                self._apply(d)

    async def _control_loop(self):
        while True:
            self.poll_control()
            await asyncio.sleep_ms(POLL_MS)
