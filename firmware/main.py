# ESP32 entry point (MicroPython runs boot.py, then this). The emulator runs the same boot through
# emulation/device_main.py with the emulated board instead.
#
# The whole boot is guarded, imports included: an exception that escaped this file (a MemoryError
# importing the firmware, a crash building the app) would leave the board at the REPL with no
# watchdog running and nothing to reset it. On a failure: print it, count the boot as failed
# (identity.py's streak, so that a failure that repeats ends in safe mode), wait a back-off that
# grows with the streak, reset. Up front only sys and time are imported (built into the
# interpreter); what the failure path needs (gc, identity, machine) is imported when it runs.
import sys
import time

FLASH_DIR = ""  # the flash root, where state.json lives (sqalfw.board_esp32.Board.flash_dir)
BACKOFF_CAP_S = 60  # when the failure cannot even be counted (identity.BOOT_BACKOFF_CAP_S)


def _board():
    """The board for the platform we run on: the ESP32's, or on the unix port the emulated one
    (emulation/ on MICROPYPATH; the emulator's own entry is emulation/device_main.py)."""
    if sys.platform == "esp32":
        from sqalfw import board_esp32
        return board_esp32.Board()
    from emulation.mpboard.board import Board
    return Board(".")


def _run():
    # frozen modules before the flash root: a stray file on flash cannot shadow the boot loader or
    # the board layer (MicroPython's esp32 default puts "" first); an application slot is put ahead
    # of both by the boot loader (sqalboot/run.py)
    if ".frozen" in sys.path:
        sys.path.remove(".frozen")
        sys.path.insert(0, ".frozen")
    b = _board()  # brings the WiFi interface up first (docs/firmware.md, "Boot order")
    try:
        from sqalboot import run  # frozen: picks the application slot, probation, rollback (docs/ota.md)
    except ImportError:  # a board deployed before the boot loader existed: the application as it is
        from sqalfw import app
        if app.main(b) == app.CONFIG_ERROR:
            print("sqal: fix config.json, then reset the board")
        return
    if run.run(b) == run.CONFIG_ERROR:
        # no restart: config.json must be fixed over USB/REPL first (restarting would loop)
        print("sqal: fix config.json, then reset the board")


def _failed(e):
    try:
        sys.print_exception(e)  # type: ignore[attr-defined]  # MicroPython's sys
    except Exception:
        pass
    delay = BACKOFF_CAP_S
    streak = "?"
    try:
        import gc
        gc.collect()  # what the failed import allocated is garbage now
        try:
            from sqalboot import run
            run.failed(FLASH_DIR, e)  # a probation boot rolls back at the next boot, and says why
        except ImportError:
            pass
        from sqalfw import identity
        n = identity.boot_failed(FLASH_DIR)
        streak = str(n)
        delay = identity.boot_backoff_s(n)
    except Exception as e2:
        print("sqal: the failed boot could not be counted: %r" % (e2,))
    print("sqal: boot failed (%r); failed boots in a row: %s; reset in %d s" % (e, streak, delay))
    time.sleep(delay)
    import machine
    machine.reset()


try:
    _run()
except Exception as e:  # KeyboardInterrupt (Ctrl-C on the USB console) still reaches the REPL
    _failed(e)
