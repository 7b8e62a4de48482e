# Board layer on a real ESP32 (MicroPython >= 1.22). See sqalfw/board.py for the interface.
import asyncio
import gc
import time

import machine
import network

from sqalfw.board import MemTracker

# Seconds between 1970-01-01 and the board's epoch (2000-01-01 on ports before 1.22's EPOCH change).
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0


class _Wlan:
    def __init__(self):
        self._w = network.WLAN(network.STA_IF)
        self._w.active(True)

    def isconnected(self):
        return self._w.isconnected()

    def connect(self, ssid, password):
        if not self._w.isconnected():
            try:
                self._w.connect(ssid, password)
            except OSError:
                pass  # "Wifi Internal State Error" while a previous connect is pending: retry later

    def rssi(self):
        try:
            return int(self._w.status("rssi"))
        except Exception:
            return 0


class Board:
    name = "esp32"

    def __init__(self):
        self.flash_dir = ""
        self.wlan = _Wlan()
        self._synced = False
        self._mem = MemTracker(gc.mem_free)
        self.open_connection = asyncio.open_connection

    def i2c(self, bus_id=0, sda=None, scl=None, freq=400000):
        if sda is None or scl is None:
            return machine.I2C(bus_id, freq=freq)
        return machine.I2C(bus_id, sda=machine.Pin(sda), scl=machine.Pin(scl), freq=freq)

    def ticks_ms(self):
        return time.ticks_ms()

    def time_ms(self):
        # integers only: ESP32 floats are single precision (epoch seconds would step by 128 s)
        return time.time_ns() // 1000000 + _EPOCH_OFFSET * 1000

    def time_s(self):
        return time.time() + _EPOCH_OFFSET

    def ntp_sync(self, host="pool.ntp.org"):
        try:
            import ntptime
            ntptime.host = host
            ntptime.settime()
            self._synced = True
        except Exception:
            return False
        return True

    def clock_synced(self):
        return self._synced

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=int(timeout_ms))

    def reset(self):
        machine.reset()

    def collect(self):
        gc.collect()  # once per sampling cycle (app.py): keeps fragmentation and the low-water mark honest

    def mem_free(self):
        return self._mem.sample()

    def mem_min_free(self):
        self._mem.sample()
        return self._mem.min_free

    def background(self):
        return []
