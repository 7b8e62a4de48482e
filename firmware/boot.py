# Runs first on every ESP32 boot. Kept minimal on purpose: anything that can fail here would stop
# main.py from starting, and only main.py has the guarded boot (failed-boot count, back-off, reset,
# safe mode). Nothing is allocated here that main.py's boot would then lack.
import gc

try:
    import esp
    esp.osdebug(None)  # keep the ROM/IDF debug chatter off the REPL UART
except ImportError:
    pass
gc.collect()
