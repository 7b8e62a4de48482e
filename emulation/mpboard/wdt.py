# Emulated hardware watchdog. It must fire even when the event loop itself is stuck (a blocking
# I2C call, a busy loop), so it runs in its own thread, like the ESP32's hardware timer. On expiry it
# records why and kills the process with SIGUSR1; the host launcher restarts it with the flash kept.
import _thread
import os
import time

from emulation.mpboard import exitcodes


class Watchdog:
    def __init__(self, timeout_ms, reason_path):
        if timeout_ms < 1:
            raise ValueError("watchdog timeout must be >= 1 ms")
        self.timeout_ms = int(timeout_ms)
        self._reason_path = reason_path
        self._last = time.ticks_ms()
        _thread.start_new_thread(self._run, ())

    def feed(self):
        self._last = time.ticks_ms()

    def _run(self):
        # Sleep until the earliest moment the dog could expire, then look again. time.sleep()
        # with a float blocks in one select(); the unix port's time.sleep_ms() polls every 0.5 ms,
        # which cost ~40 ms of CPU per second per emulated device (measured; fleets of hundreds).
        while True:
            left = self.timeout_ms - time.ticks_diff(time.ticks_ms(), self._last)
            if left < 0:
                self._fire()
            time.sleep((left if left > 20 else 20) / 1000)

    def _fire(self):
        try:
            with open(self._reason_path, "w") as f:
                f.write("watchdog")
        except OSError:
            pass
        print("WATCHDOG: not fed for %d ms, resetting" % self.timeout_ms)
        # $PPID of the shell that system() starts is this process
        os.system("kill -%d $PPID" % exitcodes.WATCHDOG_SIGNAL)
        while True:
            time.sleep(1)
