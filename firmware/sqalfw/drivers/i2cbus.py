# Bounded retries around a machine.I2C-like bus. I2C glitches (EMI on the line, a sensor busy
# with its own MCU) are transient: retry a few times, count every failed attempt, and give up
# with the original OSError so the driver can report the sensor as degraded.
import time


def _pause():
    # a short pause lets a clock-stretching or rebooting slave recover; never long
    try:
        time.sleep_ms(1)
    except AttributeError:  # CPython (host-side tools): no sleep_ms
        time.sleep(0.001)


class RetryingI2C:
    def __init__(self, i2c, retries=3):
        if retries < 0:
            raise ValueError("retries must be >= 0, got %r" % (retries,))
        self.i2c = i2c
        self.retries = retries
        self.errors = 0    # failed attempts (each OSError)
        self.failures = 0  # operations that gave up after the last retry

    def _call(self, op, *args, **kw):
        # the one retry loop every bus method goes through
        attempt = 0
        while True:
            try:
                return op(*args, **kw)
            except OSError:
                self.errors += 1
                if attempt >= self.retries:
                    self.failures += 1
                    raise
                attempt += 1
                _pause()

    def scan(self):
        return self._call(self.i2c.scan)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        return self._call(self.i2c.readfrom_mem, addr, memaddr, nbytes, addrsize=addrsize)

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        return self._call(self.i2c.readfrom_mem_into, addr, memaddr, buf, addrsize=addrsize)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        return self._call(self.i2c.writeto_mem, addr, memaddr, buf, addrsize=addrsize)

    def readfrom(self, addr, nbytes, stop=True):
        return self._call(self.i2c.readfrom, addr, nbytes, stop)

    def readfrom_into(self, addr, buf, stop=True):
        return self._call(self.i2c.readfrom_into, addr, buf, stop)

    def writeto(self, addr, buf, stop=True):
        return self._call(self.i2c.writeto, addr, buf, stop)
