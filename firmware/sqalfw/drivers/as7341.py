# AS7341 11-channel spectral sensor driver: identity, power-on, ATIME/ASTEP/AGAIN, the two SMUX
# passes that read F1-F8 (+ Clear and NIR twice), AVALID polling with a timeout, saturation.
import time

from sqalfw.drivers import SensorError
from sqalfw.drivers.i2cbus import RetryingI2C

ENABLE = 0x80
ATIME = 0x81
ASTATUS = 0x94
CH0_DATA_L = 0x95
STATUS2 = 0xA3
CFG0 = 0xA9
CFG1 = 0xAA
CFG6 = 0xAF
ASTEP_L = 0xCA
ID = 0x92
PON = 0x01
SP_EN = 0x02
SMUXEN = 0x10
AVALID = 0x40
ASAT = 0x18  # STATUS2: ASAT_DIGITAL (bit4) | ASAT_ANALOG (bit3)

# ams reference SMUX configurations (20 RAM bytes at 0x00-0x13)
SMUX_F1_F4 = b"\x30\x01\x00\x00\x00\x42\x00\x00\x50\x00\x00\x00\x20\x04\x00\x30\x01\x50\x00\x06"
SMUX_F5_F8 = b"\x00\x00\x00\x40\x02\x00\x10\x03\x50\x10\x03\x00\x00\x00\x24\x00\x00\x50\x00\x06"
PASS_NAMES = (("F1", "F2", "F3", "F4"), ("F5", "F6", "F7", "F8"))


class AS7341:
    def __init__(self, i2c, addr=0x39, smux_timeout_ms=100):
        self.i2c = i2c if isinstance(i2c, RetryingI2C) else RetryingI2C(i2c)
        self.addr = addr
        self.smux_timeout_ms = smux_timeout_ms
        self.atime = 29
        self.astep = 599
        self.again = 3
        self.saturated = False
        self._b1 = bytearray(1)
        self._data = bytearray(12)
        self._t_pass = time.ticks_ms()

    def _err(self, step, e):
        return SensorError("as7341 at 0x%02x: I2C error during %s: %r" % (self.addr, step, e))

    def _wr(self, reg, val):
        self._b1[0] = val
        self.i2c.writeto_mem(self.addr, reg, self._b1)

    def _rd(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._b1)
        return self._b1[0]

    @property
    def gain(self):
        return 0.5 * (1 << self.again)

    def integration_ms(self):
        return (self.atime + 1) * (self.astep + 1) * 2.78e-3

    def full_scale(self):
        return min(65535, (self.atime + 1) * (self.astep + 1))

    def init(self, atime=29, astep=599, again=3):
        if not 0 <= atime <= 255 or not 0 <= astep <= 65534 or not 0 <= again <= 10:
            raise SensorError("as7341: bad config atime=%r astep=%r again=%r (0..255, 0..65534, 0..10)"
                              % (atime, astep, again))
        try:
            ident = self._rd(ID)
        except OSError as e:
            raise SensorError("as7341: no answer at I2C address 0x%02x (%r)" % (self.addr, e))
        if ident >> 2 != 0b001001:
            raise SensorError("as7341: unexpected ID register 0x%02x (want 0b001001xx)" % ident)
        step = "power on"
        try:
            self._wr(CFG0, 0x00)         # high register bank (0x80 and up)
            self._wr(ENABLE, PON)
            step = "configuration"
            self._wr(ATIME, atime)
            self._b1[0] = astep & 0xFF
            self.i2c.writeto_mem(self.addr, ASTEP_L, bytes((astep & 0xFF, astep >> 8)))
            self._wr(CFG1, again)
        except OSError as e:
            raise self._err(step, e)
        self.atime = atime
        self.astep = astep
        self.again = again

    def start_pass(self, n):
        """Route F1-F4 (n=0) or F5-F8 (n=1) plus Clear and NIR to the ADCs and start integrating."""
        if n not in (0, 1):
            raise SensorError("as7341: pass must be 0 or 1, got %r" % (n,))
        step = "SMUX pass %d" % n
        try:
            self._wr(ENABLE, PON)                      # stop measuring before touching the SMUX
            self._wr(CFG6, 0x10)                       # SMUX command 2: write config from RAM
            self.i2c.writeto_mem(self.addr, 0x00, SMUX_F1_F4 if n == 0 else SMUX_F5_F8)
            self._wr(ENABLE, PON | SMUXEN)
            start = time.ticks_ms()
            polls = 0
            late_looks = 0
            while True:
                # Take the deadline before the read, and fail only on the second look past it: a
                # host that paused us past the deadline (an emulated fleet on a saturated machine
                # did, and lost the sensor for sensor_retry_s) still gets looks of its own.
                late = time.ticks_diff(time.ticks_ms(), start) > self.smux_timeout_ms
                if not self._rd(ENABLE) & SMUXEN:
                    break
                if late:
                    late_looks += 1
                    if late_looks >= 2:
                        raise SensorError("as7341: SMUX did not finish within %d ms" % self.smux_timeout_ms)
                polls += 1
                if polls > 2:  # the first re-reads back to back (an I2C read takes ~0.1 ms): a
                    time.sleep_ms(1)  # quick SMUX costs no sleep, i.e. no wake-up of the CPU
            self._wr(ENABLE, PON | SP_EN)
        except OSError as e:
            raise self._err(step, e)
        self._t_pass = time.ticks_ms()

    def pass_ready(self):
        try:
            s = self._rd(STATUS2)
        except OSError as e:
            raise self._err("AVALID poll", e)
        if s & AVALID:
            if s & ASAT:
                self.saturated = True
            return True
        return False

    def read_pass(self):
        """Six counts of the pass just completed: 4 filters, Clear, NIR."""
        try:
            self.i2c.readfrom_mem_into(self.addr, CH0_DATA_L, self._data)
            self._wr(ENABLE, PON)
        except OSError as e:
            raise self._err("read data", e)
        d = self._data
        out = [d[2 * i] | (d[2 * i + 1] << 8) for i in range(6)]
        fs = self.full_scale()
        for v in out:
            if v >= fs:
                self.saturated = True
        return out

    async def measure(self, timeout_ms=None):
        """Both passes: {"F1".."F8", "CLEAR", "NIR", "gain", "atime", "astep", "saturated"}."""
        import asyncio
        if timeout_ms is None:
            timeout_ms = int(2 * self.integration_ms()) + 200
        self.saturated = False
        res = {}
        clear = 0
        nir = 0
        # AVALID cannot rise before the integration time: sleep through it (rounded up, plus a
        # millisecond, so that the first look usually finds it), then poll every 2 ms. (Polling
        # from the start cost ~25 I2C reads and event-loop wake-ups per pass.)
        wait = int(self.integration_ms()) + 2
        for n in (0, 1):
            self.start_pass(n)
            start = time.ticks_ms()
            if wait > 2:
                await asyncio.sleep_ms(wait)
            while not self.pass_ready():
                if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                    raise SensorError("as7341: AVALID not set within %d ms (pass %d)" % (timeout_ms, n))
                await asyncio.sleep_ms(2)
            v = self.read_pass()
            names = PASS_NAMES[n]
            for i in range(4):
                res[names[i]] = v[i]
            clear += v[4]
            nir += v[5]
        res["CLEAR"] = (clear + 1) // 2   # both passes see Clear and NIR: average them
        res["NIR"] = (nir + 1) // 2
        res["gain"] = self.gain
        res["atime"] = self.atime
        res["astep"] = self.astep
        res["saturated"] = self.saturated
        return res
