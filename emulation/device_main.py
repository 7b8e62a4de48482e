# Entry point of an emulated SQAL device: `micropython emulation/device_main.py <flash_dir>`
# (or SQAL_FLASH_DIR in the environment), with MICROPYPATH = firmware:repo root. Builds the
# emulated board and boots the firmware the way firmware/main.py does on an ESP32: the boot is
# guarded, imports included; a failure is printed, counted as a failed boot (safe mode after
# `safe_mode_after` of them), followed by a back-off growing with the streak, then a reset.
# Exit codes: emulation/mpboard/exitcodes.py.
import os
import sys
import time

from emulation.mpboard import exitcodes


def _flash_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    d = os.getenv("SQAL_FLASH_DIR")
    if not d:
        print("usage: device_main.py <flash_dir>  (or set SQAL_FLASH_DIR)")
        sys.exit(exitcodes.CONFIG_ERROR)
    return d


def _board():
    from emulation.mpboard.board import Board
    from emulation.mpboard.flash import FlashCorrupted

    try:
        return Board(_flash_dir())
    except ValueError as e:  # emulation.json: the host's mistake, restarting would not help
        print("sqal: %s" % e)
        sys.exit(exitcodes.CONFIG_ERROR)
    except FlashCorrupted as e:
        # the ESP32 port's inisetup prints and loops instead of formatting over the data
        print("sqal: %s" % e)
        sys.exit(exitcodes.FLASH_CORRUPTED)


def _failed(board, e):
    # as firmware/main.py: print, count (identity.py), back off, reset
    sys.print_exception(e)
    delay = 60
    streak = "?"
    try:
        import gc
        gc.collect()
        from sqalboot import run as ota_run
        ota_run.failed(board.flash_dir, e)
        from sqalfw import identity
        n = identity.boot_failed(board.flash_dir)
        streak = str(n)
        delay = identity.boot_backoff_s(n)
    except Exception as e2:
        print("sqal: the failed boot could not be counted: %r" % (e2,))
    print("sqal: boot failed (%r); failed boots in a row: %s; reset in %d s" % (e, streak, delay))
    time.sleep(delay)
    board.reset()


def run():
    board = _board()
    try:
        board.fault_point("import")  # emulation.json's memory_error_at: a MemoryError here
        # the boot loader (frozen on the ESP32 profile): the application slot, probation, rollback
        from sqalboot import run as ota_run
        rc = ota_run.run(board)
    except KeyboardInterrupt:
        sys.exit(exitcodes.STOPPED)
    except Exception as e:  # SystemExit (the board's reset and stop) passes through
        _failed(board, e)
        return
    sys.exit(rc)


run()
