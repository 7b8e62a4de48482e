# Runs first on every ESP32 boot. Kept minimal on purpose: anything that can fail here would stop
# main.py from starting, and only main.py has the safe-mode and watchdog logic.
import gc

try:
    import esp
    esp.osdebug(None)  # keep the ROM/IDF debug chatter off the REPL UART
except ImportError:
    pass
gc.collect()
