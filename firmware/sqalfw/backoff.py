# Reconnect delays: exponential backoff with "full jitter" (delay drawn uniformly in
# [0, min(cap, base * 2**attempt)]). Full jitter is what spreads a fleet that lost its broker at
# the same instant: every device draws its own delay, so reconnects arrive spread over the whole
# window instead of in synchronized waves.
#
# The random source is a private xorshift32 so that a seed gives the same delays on CPython and
# MicroPython (MicroPython's `random` is one global generator with no Random class).

import os


class Backoff:
    def __init__(self, base=1.0, cap=60.0, seed=None):
        if not base > 0 or not cap >= base:
            raise ValueError("backoff: need 0 < base <= cap (base=%r cap=%r)" % (base, cap))
        self.base = float(base)
        self.cap = float(cap)
        self.attempt = 0
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        # xorshift32 must never hold 0
        self._state = (int(seed) & 0xFFFFFFFF) or 0x9E3779B9

    def _rand(self):
        # uniform float in [0, 1)
        x = self._state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self._state = x
        return x / 4294967296.0

    def window(self):
        # upper bound of the next delay; 2**attempt is capped before it can grow huge
        n = self.attempt if self.attempt < 30 else 30
        w = self.base * (1 << n)
        return w if w < self.cap else self.cap

    def next(self):
        # the delay to sleep before the next attempt (seconds, float); widens the window
        d = self._rand() * self.window()
        self.attempt += 1
        return d

    def reset(self):
        self.attempt = 0
