"""Intake slots: how many MQTT messages may be received and not yet committed.

The MQTT network thread takes slots before it hands messages to the event loop and blocks when
there are none (the socket is then not read: TCP and the broker hold the rest); the event loop gives
them back after COMMIT. Taken and given back in bulk -- a chunk of readings, a batch -- with one lock
round each: a `threading.Semaphore` costs a Condition round per message, which was about 5 % of the
gateway process's time in a drain (py-spy, docs/ingest.md "Round 4").
"""

from __future__ import annotations

import threading


class Slots:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._free = capacity
        self._cond = threading.Condition(threading.Lock())

    @property
    def free(self) -> int:
        return self._free

    def take(self, want: int, timeout: float) -> int:
        """Up to `want` slots, as many as are free (at least one), waiting at most `timeout` seconds
        for one to be free. Returns how many were taken: 0 when none came in time."""
        if want < 1:
            return 0
        with self._cond:
            if self._free == 0 and not self._cond.wait_for(lambda: self._free > 0, timeout):
                return 0
            k = min(want, self._free)
            self._free -= k
            return k

    def release(self, n: int) -> None:
        with self._cond:
            if self._free + n > self.capacity:
                raise ValueError(f"released {n} slots with only {self.capacity - self._free} taken")
            self._free += n
            self._cond.notify_all()
