"""Intake slots: taken in bulk by the MQTT thread, given back by the event loop, blocking when none."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.ingest.slots import Slots


def test_take_gives_what_is_free_and_release_gives_back() -> None:
    s = Slots(5)
    assert s.take(3, timeout=0) == 3 and s.free == 2
    assert s.take(10, timeout=0) == 2 and s.free == 0  # as many as are free, not all or nothing
    assert s.take(1, timeout=0.05) == 0  # none free: waits, then says so
    s.release(4)
    assert s.free == 4 and s.take(0, timeout=0) == 0
    with pytest.raises(ValueError, match="released 2 slots with only 1 taken"):
        s.release(2)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        Slots(0)


def test_a_blocked_taker_wakes_on_release() -> None:
    s = Slots(2)
    assert s.take(2, timeout=0) == 2
    got: list[int] = []
    t = threading.Thread(target=lambda: got.append(s.take(5, timeout=10)))
    t.start()
    time.sleep(0.2)
    assert got == [] and t.is_alive()  # blocked: nothing free
    s.release(1)
    t.join(5)
    assert got == [1] and s.free == 0
