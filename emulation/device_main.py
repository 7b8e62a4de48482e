# Entry point of an emulated SQAL device: `micropython emulation/device_main.py <flash_dir>`
# (or SQAL_FLASH_DIR in the environment), with MICROPYPATH = firmware:repo root. Builds the
# emulated board and runs the firmware application unchanged. Exit codes: emulation/mpboard/exitcodes.py.
import os
import sys

from emulation.mpboard import exitcodes


def _flash_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    d = os.getenv("SQAL_FLASH_DIR")
    if not d:
        print("usage: device_main.py <flash_dir>  (or set SQAL_FLASH_DIR)")
        sys.exit(exitcodes.CONFIG_ERROR)
    return d


def run():
    from sqalfw import app

    from emulation.mpboard.board import Board

    from emulation.mpboard.flash import FlashCorrupted

    try:
        board = Board(_flash_dir())
    except ValueError as e:
        print("sqal: %s" % e)
        sys.exit(exitcodes.CONFIG_ERROR)
    except FlashCorrupted as e:
        # the ESP32 port's inisetup prints and loops instead of formatting over the data
        print("sqal: %s" % e)
        sys.exit(exitcodes.FLASH_CORRUPTED)
    try:
        rc = app.main(board)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.exit(exitcodes.STOPPED)
    except BaseException as e:
        sys.print_exception(e)
        print("sqal: crashed, resetting")
        board.reset()
    sys.exit(rc)


run()
