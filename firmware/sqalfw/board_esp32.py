# Board layer on a real ESP32 (MicroPython >= 1.22). See sqalfw/board.py for the interface.
import asyncio
import gc
import socket
import time

import machine
import network

from sqalfw.board import MemTracker, clock_is_set
from sqalfw.link import Resolver

# Seconds between 1970-01-01 and the board's epoch (2000-01-01 on ports before 1.22's EPOCH change).
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
NTP_TIMEOUT_S = 1  # ntptime waits this long for an answer, blocking the event loop


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
        # the WiFi interface comes up first, before the firmware's large allocations: WiFi and TLS
        # need internal RAM that the MicroPython heap, growing on demand, would otherwise take
        self.wlan = _Wlan()
        self._mem = MemTracker(gc.mem_free)
        self.open_connection = asyncio.open_connection
        self.getaddrinfo = socket.getaddrinfo
        self.resolver = Resolver(socket.getaddrinfo, self.log)

    def log(self, line):
        print(line)

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

    def ntp_sync(self, host):
        # ntptime looks its host up with a blocking getaddrinfo: give it the cached address instead
        try:
            addr = self.resolver.resolve(host, 123)
        except OSError:
            return False
        try:
            import ntptime
            ntptime.host = addr
            ntptime.timeout = NTP_TIMEOUT_S
            ntptime.settime()
        except Exception:
            self.resolver.failed(host)  # a pool name resolves to another server next time
            return False
        return True

    def clock_synced(self):
        # the RTC keeps its time through soft and watchdog resets, so a clock set before one of them
        # still counts; after a power loss it reads 2000-01-01 plus the uptime again
        return clock_is_set(self.time_s())

    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=int(timeout_ms))

    def reset_cause(self):
        """Why this boot happened: "power-on" (power-on or brownout), "watchdog" (the hardware
        watchdog, a task or interrupt watchdog) or "soft" (machine.reset(), a panic, the reset
        pin); the firmware records its own reasons for the resets it makes (sqalboot.slots)."""
        c = machine.reset_cause()
        if c == machine.PWRON_RESET:
            return "power-on"
        if c == machine.WDT_RESET:
            return "watchdog"
        return "soft"

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
