# The board layer seam: the only way the firmware reaches hardware. Two implementations:
#   sqalfw.board_esp32.Board   machine.I2C, network.WLAN, ntptime, machine.WDT, flash at "/"
#   emulation.mpboard.Board    I2C peripheral models + scene, host sockets, flash directory
# Drivers and the app never know which one they got.
#
# A board object offers:
#   i2c(bus_id=0, sda=None, scl=None, freq=400000) -> machine.I2C-like object
#   wlan                     isconnected() -> bool, connect(ssid, password), rssi() -> int (dBm)
#   ticks_ms() -> int        monotonic milliseconds (use time.ticks_diff on it)
#   time_s() -> float        epoch seconds (UTC) by the board clock, synced or not (coarse: the ESP32
#                            has single-precision floats, so never use it for timestamps)
#   time_ms() -> int         epoch milliseconds (UTC), integer arithmetic only: sample timestamps
#   ntp_sync(host) -> bool   try to set the clock from NTP, True on success
#   clock_synced() -> bool   has the clock been set since power-up
#   flash_dir                directory of config.json, state.json and the spool (str, no trailing /)
#   watchdog(timeout_ms)     starts the watchdog -> object with feed(); cannot be stopped
#   reset()                  hard reset (does not return); flash is kept
#   mem_free() / mem_min_free()  heap bytes free now / lowest seen (sampled by the app)
#   collect()                garbage collection after each sampling cycle: gc.collect() on a board;
#                            an emulation host running several boards in one heap coalesces them
#   background()             coroutines the board needs running (emulation control); [] on ESP32
#   open_connection          asyncio.open_connection-compatible (emulation can cut the link)
#   name                     "esp32" or "emulated"
import sys


def select(flash_dir=None):
    """The board for the platform we run on."""
    if sys.platform == "esp32":
        from sqalfw import board_esp32
        return board_esp32.Board()
    # unix port: the emulated board (emulation/ must be on MICROPYPATH)
    from emulation.mpboard.board import Board
    return Board(flash_dir or ".")


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
