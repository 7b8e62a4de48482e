# The emulated I2C bus of the SQAL board: the VL53L8 and AS7341 register models over the product
# scene, with the fault knobs of emulation.json (error rate, absent sensors, stuck data-ready).
import time

from emulation import peripherals

ADDRS = {"tof": 0x29, "spec": 0x39}


class ScaledClock:
    """Milliseconds for the sensor models, optionally running faster than real time (benchmarks:
    10,000 cycles must not wait for 10,000 real frames). Monotonic; plain ints."""

    def __init__(self, scale):
        self.scale = scale
        self._last = time.ticks_ms()
        self._v = 0

    def __call__(self):
        now = time.ticks_ms()
        self._v += time.ticks_diff(now, self._last) * self.scale
        self._last = now
        return self._v


class Sensors:
    def __init__(self, settings, log=print):
        for name in settings["absent"]:
            if name not in ADDRS:
                raise ValueError("emulation.json: absent must list \"tof\" and/or \"spec\", got %r" % name)
        self.scene = None
        try:
            from emulation.peripherals.scene import Scene
            self.scene = Scene(profile=settings["profile"], seed=settings["seed"])
        except ImportError:
            log("emulation: no scene model, sensors see an empty tray")
        scale = settings["sensor_time_scale"]
        clock = time.ticks_ms if scale == 1 else ScaledClock(scale)
        self.bus = peripherals.build(clock, scene=self.scene, seed=settings["seed"],
                                     error_rate=settings["i2c_error_rate"],
                                     absent=[ADDRS[n] for n in settings["absent"]])
        if settings["stuck_data_ready"]:
            self.bus.devices[0x29].stuck_data_ready = True

    def next_product(self):
        if self.scene is not None:
            self.scene.next_product()


def build(settings, board):
    return Sensors(settings, board.log)


class HangableI2C:
    """Pass-through to the bus, except that the host can make it hang (SDA held low): the call
    never returns, the event loop stops, and only the watchdog brings the board back."""

    def __init__(self, bus, board):
        self._bus = bus
        self._board = board

    def _gate(self):
        if self._board.i2c_hang:
            self._board.log("emulation: I2C bus hung")
            while True:
                time.sleep(0.1)  # not sleep_ms: on the unix port that polls every 0.5 ms

    def scan(self):
        self._gate()
        return self._bus.scan()

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        self._gate()
        return self._bus.readfrom_mem(addr, memaddr, nbytes, addrsize=addrsize)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._gate()
        return self._bus.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._gate()
        return self._bus.writeto_mem(addr, memaddr, buf, addrsize=addrsize)

    def writeto(self, addr, buf, stop=True):
        self._gate()
        return self._bus.writeto(addr, buf, stop)

    def readfrom(self, addr, nbytes, stop=True):
        self._gate()
        return self._bus.readfrom(addr, nbytes, stop)

    def readfrom_into(self, addr, buf, stop=True):
        self._gate()
        return self._bus.readfrom_into(addr, buf, stop)
