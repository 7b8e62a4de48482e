# The boot of the application, for the entry points (firmware/main.py on an ESP32,
# emulation/device_main.py on an emulated board): pick the slot, import the application from it,
# run it; on a probation boot, roll back when the health check is not passed in time.
#
# Which code lives where:
# - frozen in the image, never updated over the air: this package (boot loader, installer, the
#   signature check), the board layer the entry point builds before the slot is chosen
#   (sqalfw.board_esp32 with sqalfw.board and sqalfw.link on a board; the emulated board), and the
#   factory application (the sqalfw package as the image was built);
# - in a flash slot (ota/a or ota/b): a whole sqalfw package as .mpy files, the application that
#   runs when that slot is active. Its interface to this package: sqalfw.app.boot(board) returns
#   an object with run() (a coroutine) and _reset(); CONFIG_ERROR; and it calls slots.mark() and
#   slots.confirm() for the health check.
# MicroPython resolves a package in one directory of sys.path (a package's submodules come from its
# own __path__, never from another entry), so the slot's directory is put first on sys.path and
# the image's sqalfw modules already imported (the board layer's) are dropped from sys.modules:
# every `import sqalfw...` from then on comes from the slot, whole.
import sys

from sqalboot import slots

CONFIG_ERROR = 78  # sqalfw.app.CONFIG_ERROR: config.json is invalid (the board waits at the REPL)


def _use_slot(d):
    sys.path.insert(0, d)
    for name in list(sys.modules):
        if name == "sqalfw" or name.startswith("sqalfw."):
            del sys.modules[name]


def start(board):
    """Select the slot (rolling back a failed probation first) and import its application."""
    board.log = slots.logger(board)  # the log's last lines on flash, for the log_tail command
    d = slots.select(board, board.log)
    if d is not None:
        _use_slot(d)
    b = slots.BOOT
    board.log("sqal: boot: slot %s%s, reset cause %s%s" % (
        b["slot"], " (%s)" % b["version"] if b["version"] else "", b["cause"],
        ", on probation" if b["probation"] else ""))
    from sqalfw import app
    return app


def run(board):
    """Boot and run the application. Returns its exit code (emulation)."""
    appmod = start(board)
    a = appmod.boot(board)
    if a is None:
        return appmod.CONFIG_ERROR
    import asyncio
    asyncio.run(_run(board, a))
    return 0


async def _run(board, a):
    if not slots.BOOT["probation"]:
        await a.run()
        return
    import asyncio
    w = asyncio.create_task(_watch(board, a))
    try:
        await a.run()
    finally:
        w.cancel()


async def _watch(board, a):
    """The probation's deadline, kept by the boot loader (not by the application on trial): the
    health check not passed within probation_s rolls back and resets. A hang of the event loop is
    the watchdog's (the next boot then finds the probation unfinished and rolls back)."""
    try:
        await _deadline(board, a)
    except Exception:
        # this task must not die quietly while the application on trial keeps feeding the
        # watchdog: reset now; the next boot finds the probation unfinished and rolls back
        board.reset()


async def _deadline(board, a):
    import asyncio
    import gc
    import time
    fd = board.flash_dir
    limit_s = slots.load(fd)["probation_s"]
    while slots.BOOT["probation"]:
        if time.ticks_diff(board.ticks_ms(), slots.BOOT["started_ms"]) > limit_s * 1000:
            gc.collect()  # a release on trial may have filled the heap
            reason = "health check not passed within %d s (missing: %s)" % (limit_s, ", ".join(slots.missing()))
            board.log("sqal: ota: %s: rolling back" % reason)
            slots.rollback(fd, slots.load(fd), reason)
            slots.set_intent(fd, "rollback")
            reset = getattr(a, "_reset", None)
            if reset is not None:
                reset()  # closes the spool first: nothing acknowledged is sent again
            board.reset()
        await asyncio.sleep_ms(500)


def failed(flash_dir, e):
    """The entry points' failure path: a probation boot keeps the exception for its rollback
    reason, and the next boot is reported as caused by an exception."""
    try:
        slots.note_failure(flash_dir, repr(e))
    except Exception:
        pass
    slots.set_intent(flash_dir, "exception")
