# ESP32 entry point (MicroPython runs boot.py, then this). The emulator runs the same app through
# emulation/device_main.py with the emulated board instead.
import sys
import time

from sqalfw import app, board

b = board.select()
try:
    rc = app.main(b)
    if rc == app.CONFIG_ERROR:
        # no restart: config.json must be fixed over USB/REPL first (restarting would loop)
        print("sqal: fix config.json, then reset the board")
except Exception as e:
    # An unexpected crash: show it, then reset. The boot counts as failed (identity.py), so a
    # crash that repeats ends in safe mode instead of a tight boot loop.
    sys.print_exception(e)
    time.sleep(10)
    b.reset()
