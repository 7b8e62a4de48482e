# The models' and the scene's random numbers (MicroPython-compatible).
import math

_TWO_PI = 2.0 * math.pi  # computed once: every float operation allocates on the unix port


class Rng:
    """xorshift32: the same stream under CPython and MicroPython for a seed (their `random`
    modules differ), cheap, and allocation-free apart from the returned float."""

    def __init__(self, seed=1):
        s = (int(seed) * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF
        self.s = s or 0x2545F491
        self._spare = None

    def u32(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def random(self):
        return self.u32() / 4294967296.0

    def uniform(self, a, b):
        return a + (b - a) * self.random()

    def gauss(self, mu=0.0, sd=1.0):
        # Box-Muller; keep the second value for the next call
        if self._spare is not None:
            z = self._spare
            self._spare = None
            return mu + sd * z
        u1 = self.random() or 1e-12
        th = _TWO_PI * self.random()
        r = math.sqrt(-2.0 * math.log(u1))
        self._spare = r * math.sin(th)
        return mu + sd * r * math.cos(th)
