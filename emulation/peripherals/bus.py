# An I2C bus with the machine.I2C methods the drivers use, dispatching to register models by
# 7-bit address. Errors look like the MicroPython port's: OSError(ENODEV) when nobody ACKs the
# address, OSError(EIO) for a transaction that fails on the wire.
#
# A model implements: `addrsize` (8 or 16), `read(reg, n) -> bytes`, `write(reg, data)`.
# A failed transaction never reaches the model (the slave NACKed), so a retry is clean.
from emulation.peripherals.rng import Rng

ENODEV = 19
EIO = 5


class EmulatedI2C:
    def __init__(self, seed=1, error_rate=0.0, absent=()):
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be within 0..1, got %r" % (error_rate,))
        self.devices = {}
        self.error_rate = error_rate
        self.absent = set(absent)
        self._rng = Rng(seed)
        self._ptr = {}          # register pointer per address, for writeto()/readfrom()
        self.transactions = 0
        self.injected = 0       # OSErrors raised by the error_rate knob

    def attach(self, addr, model):
        self.devices[addr] = model

    def _dev(self, addr):
        self.transactions += 1
        dev = self.devices.get(addr)
        if dev is None or addr in self.absent:
            raise OSError(ENODEV)
        if self.error_rate and self._rng.random() < self.error_rate:
            self.injected += 1
            raise OSError(EIO)
        return dev

    @staticmethod
    def _check_size(dev, addrsize):
        if addrsize != dev.addrsize:
            # a real part would see the address bytes as data: make the mismatch loud
            raise OSError(EIO)

    def scan(self):
        return sorted(a for a in self.devices if a not in self.absent)

    # (the size check is inlined: ~20 transactions a sample per device, each a call less)
    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        dev = self._dev(addr)
        if addrsize != dev.addrsize:
            self._check_size(dev, addrsize)
        return bytes(dev.read(memaddr, nbytes))

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        dev = self._dev(addr)
        if addrsize != dev.addrsize:
            self._check_size(dev, addrsize)
        buf[:] = dev.read(memaddr, len(buf))  # one copy, not a loop over bytes (frames are 320 B)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        dev = self._dev(addr)
        if addrsize != dev.addrsize:
            self._check_size(dev, addrsize)
        # the caller's buffer, not a copy: a bus sends the bytes from it, and the models take what
        # they keep before returning (a 4 KiB copy per upload chunk cost the emulated board's heap
        # what a board never pays, and failed sensor start-up after a reboot on a fragmented heap)
        dev.write(memaddr, buf)

    def writeto(self, addr, buf, stop=True):
        # the first addrsize/8 bytes set the register pointer, the rest is written from there
        dev = self._dev(addr)
        n = dev.addrsize // 8
        buf = bytes(buf)
        if len(buf) < n:
            return len(buf)
        reg = buf[0] if n == 1 else (buf[0] << 8) | buf[1]
        self._ptr[addr] = reg
        if len(buf) > n:
            dev.write(reg, buf[n:])
        return len(buf)

    def readfrom(self, addr, nbytes, stop=True):
        dev = self._dev(addr)
        return bytes(dev.read(self._ptr.get(addr, 0), nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        buf[:] = self.readfrom(addr, len(buf), stop)
