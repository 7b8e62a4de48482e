# Register model of the AS7341 11-channel spectral sensor (ams datasheet v3 register map,
# reduced to what a spectral measurement uses). 8-bit register addresses at 0x39.
#
# The six ADCs see whatever the SMUX routes to them: the SMUX RAM (0x00-0x13, two 4-bit fields
# per byte, value k = ADC k-1, 0 = not connected) is loaded by CFG6 cmd 2 + ENABLE.SMUXEN. Pixel
# -> photodiode map below is the one implied by ams' reference F1-F4/F5-F8 configurations.
import struct

from emulation.peripherals.rng import Rng

ID_VALUE = 0b001001 << 2
CHANNELS = ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR")
# counts at gain 4x and 100 ms integration for the reference liver (domain.md section 3)
REFERENCE = {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150,
             "F8": 750, "NIR": 600, "CLEAR": 6500}
PIXELS = {1: "F3", 2: "F1", 7: "F8", 8: "F6", 10: "F2", 11: "F4", 13: "F5", 14: "F7",
          17: "CLEAR", 19: "F5", 20: "F7", 25: "F2", 26: "F4", 28: "F8", 29: "F6", 31: "F3",
          32: "F1", 35: "CLEAR", 38: "NIR"}
NOISE_SD = 5.0


def _npix():
    n = {}
    for ch in PIXELS.values():
        n[ch] = n.get(ch, 0) + 1
    return n


NPIX = _npix()


def gain_of(code):
    return 0.5 * (1 << code) if code <= 10 else 0.0


class AS7341Model:
    addrsize = 8

    def __init__(self, clock_ms, scene=None, seed=1):
        self.clock_ms = clock_ms
        self.scene = scene
        self._rng = Rng(seed)
        self.regs = bytearray(256)
        self.low_bank = bytearray(0x15)   # 0x60-0x74, reachable only with CFG0.REG_BANK set
        self.regs[0x92] = ID_VALUE
        self.regs[0x81] = 0x00
        self.regs[0xCA] = 0xE7            # ASTEP 999
        self.regs[0xCB] = 0x03
        self.regs[0xAA] = 0x09            # AGAIN 256x at power-up
        self.smux_ram = bytearray(20)
        self.routing = bytearray(20)      # what the ADCs currently see
        self._smux_pending = False
        self._t_start = None
        self._data = None
        self._sat = 0
        self.measurements = 0
        self._route_key = None
        self._route_cache = None

    # ---- derived ---------------------------------------------------------------------------
    def atime(self):
        return self.regs[0x81]

    def astep(self):
        return self.regs[0xCA] | (self.regs[0xCB] << 8)

    def integration_ms(self):
        return (self.atime() + 1) * (self.astep() + 1) * 2.78e-3

    def full_scale(self):
        return min(65535, (self.atime() + 1) * (self.astep() + 1))

    def _avalid(self):
        return self._t_start is not None and \
            self.clock_ms() - self._t_start >= self.integration_ms()

    # ---- bus interface -----------------------------------------------------------------------
    def read(self, reg, n):
        if 0x95 <= reg and reg + n <= 0xA1:
            # the channel data block (the driver reads all 12 bytes at once): one AVALID check
            # and one measurement for the block instead of one per byte; same bytes as _r's
            if not self._avalid():
                return bytearray(n)
            self._measure()
            k = reg - 0x95
            return struct.pack("<6H", *self._data)[k:k + n]  # six little-endian words, as the registers
        out = bytearray(n)
        for i in range(n):
            out[i] = self._r(reg + i)
        return out

    def write(self, reg, data):
        if reg + len(data) <= 0x14:  # SMUX RAM only (20 bytes per pass): one slice copy
            self.smux_ram[reg:reg + len(data)] = data
            return
        for i in range(len(data)):
            self._w(reg + i, data[i])

    def _r(self, r):
        if 0x60 <= r <= 0x74:
            return self.low_bank[r - 0x60] if self.regs[0xA9] & 0x10 else 0
        if r == 0x80:
            v = self.regs[0x80]
            if self._smux_pending:
                self._smux_pending = False      # seen set once, then the SMUX is done
                self.regs[0x80] &= ~0x10 & 0xFF
            return v
        if r == 0xA3:
            s = 0
            if self._avalid():
                self._measure()
                s = 0x40 | self._sat
            return s
        if r == 0x94:
            return (0x80 if self._sat else 0) | (self.regs[0xAA] & 0x0F)
        if 0x95 <= r <= 0xA0:
            if not self._avalid():
                return 0
            self._measure()
            k = (r - 0x95) // 2
            v = self._data[k]
            return v & 0xFF if (r - 0x95) % 2 == 0 else v >> 8
        return self.regs[r]

    def _w(self, r, v):
        if 0x60 <= r <= 0x74:
            if self.regs[0xA9] & 0x10:
                self.low_bank[r - 0x60] = v
            return
        if r < 0x14:
            self.smux_ram[r] = v
            return
        if r == 0x80:
            prev = self.regs[0x80]
            self.regs[0x80] = v
            pon = v & 0x01
            if not pon:
                self._t_start = None
                return
            if v & 0x10 and not prev & 0x10:
                # SMUX command 2 (CFG6 bits 4:3) copies RAM to the switch matrix
                if (self.regs[0xAF] >> 3) & 0x3 == 2 and not v & 0x02:
                    self.routing[:] = self.smux_ram
                self._smux_pending = True
            if v & 0x02 and not prev & 0x02:
                self._t_start = self.clock_ms()  # SP_EN rising: integration starts
                self._data = None
            elif not v & 0x02:
                self._t_start = None
            return
        if r == 0x92:
            return  # ID is read-only
        self.regs[r] = v

    # ---- the measurement -----------------------------------------------------------------------
    def _routes(self):
        # channels routed to each ADC, in pixel order (the order the sums are taken in), cached
        # for the current switch matrix: decoding all 40 pixels x 6 ADCs every pass was hot
        key = bytes(self.routing)
        if self._route_key != key:
            routes = [[] for _ in range(6)]
            for p in range(40):
                b = key[p >> 1]
                k = (b >> 4) if p & 1 else (b & 0x0F)
                if 1 <= k <= 6 and p in PIXELS:
                    routes[k - 1].append(PIXELS[p])
            self._route_key = key
            self._route_cache = routes
        return self._route_cache

    def _measure(self):
        if self._data is not None:
            return
        self.measurements += 1
        factors = self.scene.spectral_factors() if self.scene is not None else None
        scale = gain_of(self.regs[0xAA] & 0x1F) / 4.0 * self.integration_ms() / 100.0
        fs = self.full_scale()
        data = [0] * 6
        sat = 0
        routes = self._routes()
        for adc in range(6):
            sig = 0.0
            for ch in routes[adc]:
                f = factors[ch] if factors is not None else 1.0
                sig += REFERENCE[ch] * f / NPIX[ch]
            if sig == 0.0:
                continue  # nothing routed: a dark ADC
            c = sig * scale + self._rng.gauss(0.0, NOISE_SD)
            if c >= 65535:
                sat |= 0x08          # ASAT_ANALOG: the ADC overflowed
                c = 65535
            if c >= fs:
                sat |= 0x10          # ASAT_DIGITAL: the counter hit (ATIME+1)(ASTEP+1)
                c = fs
            data[adc] = max(0, int(c + 0.5))
        self._data = data
        self._sat = sat
