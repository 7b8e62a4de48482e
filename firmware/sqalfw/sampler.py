# One sample cycle: read both sensors, grade provisionally, encode, append to the flash spool.
# The spool comes first: a reading exists once it is on flash, whatever the network does next.
# Sensor failures never stop the device: a failing sensor is marked degraded and re-initialised
# every `sensor_retry_s`; while degraded no sample is produced (the quality model needs both).
# Bringing the sensors up includes the VL53L8's 86 KB firmware upload: the app runs it with
# init_sensors_async(), which gives the event loop a turn after every chunk (the watchdog is fed
# meanwhile); init_sensors() does the same without yielding, for tools and benchmarks.
import time

from sqalfw import VERSION, codec, quality
from sqalfw.drivers import SensorError
from sqalfw.drivers.as7341 import AS7341
from sqalfw.drivers.i2cbus import RetryingI2C
from sqalfw.drivers.vl53l8 import VL53L8

CHANNELS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR")


class Sampler:
    def __init__(self, board, cfg, ident, spool):
        self.board = board
        self.cfg = cfg
        self.ident = ident
        self.spool = spool
        self.bus = None
        self.tof = None
        self.spec = None
        self.degraded = ["tof", "spec"]  # until init succeeds
        self.errors = {}                 # sensor -> last error text (status/logs)
        self.sampled = 0
        self.cycle_errors = 0
        self.last_grade = None
        self._last_init = None
        # reused every cycle: no per-cycle allocation of the sample skeleton
        self._spec = {"gain": 4.0, "atime": 0, "astep": 0, "sat": False}
        self._tof = {"res": cfg.resolution, "dist": None, "st": None}
        self._q = {"score": 0.0, "grade": "C"}
        self._sample = {"v": 1, "device_id": cfg.device_id, "boot": 0, "seq": 0, "ts": 0,
                        "synced": False, "fw": VERSION, "tof": self._tof, "spec": self._spec,
                        "q": self._q}

    def i2c_errors(self):
        return self.bus.errors if self.bus is not None else 0

    def _fail(self, name, err):
        if name not in self.degraded:
            self.degraded.append(name)
        self.errors[name] = str(err)
        self.board.log("sqal: sensor %s degraded: %s" % (name, err))

    def init_sensors(self):
        """Bring up whichever sensor is degraded, without yielding. True when both are up."""
        for _ in self._init_steps():
            pass
        return not self.degraded

    async def init_sensors_async(self, beat=None):
        """init_sensors(), giving the event loop a turn at every step of the bring-up; `beat`
        (no arguments) is called at each step: the caller's proof of progress to the supervisor."""
        import asyncio
        for _ in self._init_steps():
            if beat is not None:
                beat()
            await asyncio.sleep_ms(0)
        return not self.degraded

    def _init_steps(self):
        self._last_init = self.board.ticks_ms()
        cfg = self.cfg
        if self.bus is None:
            try:
                raw = self.board.i2c(cfg.i2c_id, cfg.i2c_sda, cfg.i2c_scl, cfg.i2c_freq)
                self.bus = RetryingI2C(raw)
            except Exception as e:  # no bus at all: both sensors degraded, retried later
                self._fail("tof", "i2c bus: %s" % e)
                self._fail("spec", "i2c bus: %s" % e)
                return
        if "tof" in self.degraded:
            try:
                path = cfg.tof_firmware_path
                if not path.startswith("/"):
                    path = self.board.flash_dir + "/" + path
                t = VL53L8(self.bus, path)
                for _ in t.init_steps():
                    yield
                t.start(cfg.resolution, cfg.tof_frequency_hz)
                self.tof = t
                self.degraded.remove("tof")
                self.errors.pop("tof", None)
            except (SensorError, OSError) as e:
                self.tof = None
                self._fail("tof", e)
            yield
        if "spec" in self.degraded:
            try:
                s = AS7341(self.bus)
                s.init(cfg.as7341_atime, cfg.as7341_astep, cfg.as7341_again)
                self.spec = s
                self.degraded.remove("spec")
                self.errors.pop("spec", None)
            except (SensorError, OSError) as e:
                self.spec = None
                self._fail("spec", e)

    def retry_due(self):
        if not self.degraded:
            return False
        if self._last_init is None:
            return True
        return time.ticks_diff(self.board.ticks_ms(), self._last_init) >= self.cfg.sensor_retry_s * 1000

    async def cycle(self):
        """One sample. Returns the encoded record appended to the spool, or None when degraded."""
        tof, spec = self.tof, self.spec
        if self.degraded or tof is None or spec is None:
            return None
        cue = getattr(self.board, "cycle_start", None)
        if cue is not None:
            cue()  # emulation: the belt brings the next liver; nothing on hardware
        try:
            dist, st = await tof.measure()
        except (SensorError, OSError) as e:
            self.tof = None
            self._fail("tof", e)
            return None
        try:
            ch = await spec.measure()
        except (SensorError, OSError) as e:
            self.spec = None
            self._fail("spec", e)
            return None
        res = self.cfg.resolution
        q = quality.analyze(dist, st, res, ch)
        s = self._sample
        s["boot"] = self.ident.boot
        s["seq"] = self.ident.next_seq()
        s["ts"] = self.board.time_ms()
        s["synced"] = self.board.clock_synced()
        if self.ident.lot_id:
            s["lot_id"] = self.ident.lot_id
        elif "lot_id" in s:
            del s["lot_id"]
        self._tof["res"] = res
        self._tof["dist"] = dist
        self._tof["st"] = st
        sp = self._spec
        for k in CHANNELS:
            sp[k] = ch[k]
        sp["gain"] = ch["gain"]
        sp["atime"] = ch["atime"]
        sp["astep"] = ch["astep"]
        sp["sat"] = bool(ch["saturated"])
        self._q["score"] = q["score"]
        self._q["grade"] = q["grade"]
        self.last_grade = q["grade"]
        rec = codec.encode_sample(s)
        self.spool.append(rec)
        self.sampled += 1
        return rec
