# The board layer seam: the only way the firmware reaches hardware. Two implementations:
#   sqalfw.board_esp32.Board   machine.I2C, network.WLAN, ntptime, machine.WDT, flash at "/"
#   emulation.mpboard.Board    I2C peripheral models + scene, host sockets, flash directory
# Drivers and the app never know which one they got, and the firmware touches no global the
# emulation would have to patch: connections, DNS and the serial log all come through here.
#
# A board object offers:
#   i2c(bus_id=0, sda=None, scl=None, freq=400000) -> machine.I2C-like object
#   wlan                     isconnected() -> bool, connect(ssid, password) (starts the connect and
#                            returns), rssi() -> int (dBm)
#   ticks_ms() -> int        monotonic milliseconds (use time.ticks_diff on it)
#   time_s() -> float        epoch seconds (UTC) by the board clock, set or not (coarse: the ESP32
#                            has single-precision floats, so never use it for timestamps)
#   time_ms() -> int         epoch milliseconds (UTC), integer arithmetic only: sample timestamps
#   clock_synced() -> bool   the clock has been set (clock_is_set(time_s())): by NTP since power-up,
#                            a soft or watchdog reset included (the RTC keeps counting through them)
#   ntp_sync(host) -> bool   one NTP query to one server (name or address): True when it set the
#                            clock. Blocks at most the NTP timeout (1 s), plus an uncached DNS lookup
#   log(line)                one line of the serial log (the firmware's lines start with "sqal: ")
#   getaddrinfo(host, port)  the board's own DNS lookup (blocking; lwIP on the ESP32)
#   resolver                 sqalfw.link.Resolver over getaddrinfo: the DNS cache shared by the
#                            transports and NTP (IP addresses never looked up, last good address kept)
#   open_connection(host, port, ssl=None, server_hostname=None)
#                            asyncio.open_connection-compatible (the emulation can cut the link)
#   flash_dir                directory of config.json, state.json and the spool (str, no trailing /)
#   watchdog(timeout_ms)     starts the watchdog -> object with feed(); cannot be stopped
#   reset()                  hard reset (does not return); flash is kept
#   mem_free() / mem_min_free()  heap bytes free now / lowest seen (sampled by the app)
#   collect()                garbage collection after each sampling cycle: gc.collect() on a board;
#                            an emulation host running several boards in one heap coalesces them
#   background()             coroutines the board needs running (emulation control); [] on ESP32
#   name                     "esp32" or "emulated"
# A clock that reads earlier than this has never been set: at power-up the RTC starts from its
# epoch (2000-01-01 on the ESP32 port, plus the uptime) and only NTP moves it to the present. This
# firmware was built after 2025-01-01, so any date before it is the unset clock. The RTC keeps its
# time through soft, watchdog and panic resets (not through a power loss), and so does this test:
# it reads the clock itself, which is also what mbedTLS checks certificate dates against.
CLOCK_SET_AFTER_S = 1735689600  # 2025-01-01T00:00:00Z


def clock_is_set(epoch_s):
    return epoch_s >= CLOCK_SET_AFTER_S


class MemTracker:
    """Shared helper: keep the lowest free-heap figure seen (gc has no low-water mark)."""

    def __init__(self, mem_free):
        self._mem_free = mem_free
        self.min_free = mem_free()

    def sample(self):
        f = self._mem_free()
        if f < self.min_free:
            self.min_free = f
        return f
