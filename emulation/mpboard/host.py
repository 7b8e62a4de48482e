# Several emulated SQAL boards in one MicroPython process (a "host"): opt-in for large fleets
# (`sqal fleet --per-process K`). Why: per device, a process pays its own garbage collections (each
# marking the ~185 KB code heap that a real board keeps in flash), its own event-loop wake-ups and
# its own watchdog thread; K devices in one process pay these once.
#
# Each device keeps its own board (HostBoard: flash dir, config, WLAN link, clock skew, NTP state,
# I2C bus with its own sensor models and scene), its own firmware App (sqalfw.app, unchanged) and
# MQTT connection, and its own watchdog and reset: a reset, a watchdog expiry, a power cycle or a
# crash of one device's App tears down only that device's tasks and sockets and boots its firmware
# again with its flash kept; the others keep running.
#
# Each board carries its own network and log through the board seam (board.open_connection,
# board.resolver, board.log: its link, its DNS cache, its device.log), so nothing of the firmware's
# is patched for that. What the seam cannot carry is task ownership: a reset, a power cycle or a
# watchdog expiry must cancel every task the device's firmware started, including the ones its
# transports start per connection (reader, keepalive), and MicroPython's asyncio has no task groups
# or context to find them by. So asyncio.create_task is wrapped: a task created from a device's task
# belongs to that device (its root task runs the App). Lines that do not go through the board
# (asyncio's own report of an unretrieved task exception) end up in the host's log.
#
# What is lost against one process per device (docs/emulation.md): one heap for K devices (no
# per-device MemoryError at the ESP32's 110 KB, mem_free reports the host's heap), a hung I2C bus
# or a busy loop in one device stalls its host-mates until that device's watchdog fires, and a crash
# of the process itself (or a loop stuck past every watchdog) restarts all K devices.
import _thread
import asyncio
import gc
import os
import sys
import time

from emulation.mpboard import exitcodes
from emulation.mpboard.board import POLL_MS, Board
from emulation.mpboard.sensors import HangableI2C

RESTART_PAUSE_MS = 200  # between a device's reset and its next boot (the process launcher's pause)
GRACE_MS = 2000         # a dog this far past its timeout: the event loop itself is stuck
REAPER_MAX_MS = 1000    # the loop-side watchdog looks at least this often (a new dog may be due sooner)

_real_create_task = asyncio.create_task
_owner = {}  # type: dict[int, object]  # id(task) -> Device, for every live task a device created (and its root)


def _current_device():
    try:
        t = asyncio.current_task()
    except RuntimeError:  # outside the event loop
        return None
    return _owner.get(id(t))


def _create_task(coro):
    t = _real_create_task(coro)
    d = _current_device()
    if d is not None:
        d.adopt(t)
    return t


def _write(path, text):
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        pass


class _Dog:
    """One device's watchdog: fed by its App, watched by the host (loop side and thread)."""

    def __init__(self, timeout_ms):
        if timeout_ms < 1:
            raise ValueError("watchdog timeout must be >= 1 ms")
        self.timeout_ms = int(timeout_ms)
        self.last = time.ticks_ms()

    def feed(self):
        self.last = time.ticks_ms()

    def overdue(self, now, grace=0):
        return time.ticks_diff(now, self.last) > self.timeout_ms + grace


class HostI2C(HangableI2C):
    """The emulated bus with the hung-bus fault: a hung call blocks the whole host (as a real hung
    bus blocks the chip) until this device's watchdog would have fired, then resets that device only."""

    def _gate(self):
        b = self._board
        if not b.i2c_hang:
            return
        b.log("emulation: I2C bus hung")
        dev = b.dev
        t0 = time.ticks_ms()
        while True:
            dog = dev.dog
            if dog is not None and dog.overdue(time.ticks_ms()):
                # the host-mates were frozen by this stall, not hung themselves: their dogs (and
                # the host's last-resort thread) do not count the time it took
                dev.host.shift_dogs(dev, time.ticks_diff(time.ticks_ms(), t0))
                dev.watchdog_fired()
                raise asyncio.CancelledError  # unwinds the stuck task; the device boots again
            time.sleep(0.05)


class HostBoard(Board):
    """The emulated board of one device in a host: as Board, except reset, watchdog, collect and
    the log, which act on this device only (its network is its own Link already)."""

    def __init__(self, flash_dir, dev):
        self.dev = dev
        self._running = False  # control.json's first read (in Board.__init__) is the boot state
        Board.__init__(self, flash_dir)
        self._running = True

    def log(self, line):
        _log_to(self.dev, line)

    def i2c(self, bus_id=0, sda=None, scl=None, freq=400000):
        if self._i2c is None:
            from emulation.mpboard import sensors
            self.sensors = sensors.build(self.settings, self)
            self._i2c = HostI2C(self.sensors.bus, self)
        return self._i2c

    def watchdog(self, timeout_ms):
        dog = _Dog(timeout_ms)
        self.dev.dog = dog
        return dog

    def reset(self):
        _write(self.host_dir + "/reset_reason", "reset")
        self.log("RESET")
        self.dev.restart("reset")
        # does not return: the calling task unwinds like a cancelled one (the firmware re-raises
        # CancelledError everywhere), the device's other tasks are cancelled by restart()
        raise asyncio.CancelledError

    def collect(self):
        self.dev.host.collect()

    def background(self):
        return []  # the host polls every device's control.json from one task (Host._control)

    def _apply(self, d):
        Board._apply(self, d)
        p = d.get("power")
        if p is not None and p != self.dev.power_seen:
            self.dev.power_seen = p
            if self._running:  # the host's power switch (Fleet.reboot): no clean shutdown
                self.power_lost()  # the RTC loses its time with the power
                self.dev.restart("power")
                raise asyncio.CancelledError


class Device:
    """One emulated board's life in the host: boots its firmware again after each reset."""

    def __init__(self, host, flash_dir):
        self.host = host
        self.flash_dir = flash_dir.rstrip("/") or "."
        self.log_path = self.flash_dir + "/device.log"
        self.tasks = []
        self.root = None
        self.board = None
        self.app = None
        self.dog = None
        self.resetting = None
        self.power_seen = None
        self.boots = 0  # boots of this device on this flash, across restarts of the host process
        try:
            with open(self.flash_dir + "/host_boots") as f:
                self.boots = int(f.read())
        except (OSError, ValueError):
            pass
        self.done = False

    def adopt(self, task):
        # forget finished tasks (the MQTT client makes a reader and a keepalive task per connection)
        keep = []
        for t in self.tasks:
            if t.done():
                _owner.pop(id(t), None)
            else:
                keep.append(t)
        keep.append(task)
        self.tasks = keep
        _owner[id(task)] = self

    def restart(self, reason):
        """Reset this device from any of its tasks or from the host: cancel every task it runs;
        its root then tears down and boots again. The caller's own task must unwind itself."""
        if self.resetting is not None or self.root is None or self.done:
            return
        self.resetting = reason
        try:
            cur = asyncio.current_task()
        except RuntimeError:
            cur = None
        if cur is not self.root:
            self.root.cancel()
        self._cancel_tasks(cur)

    def watchdog_fired(self):
        dog = self.dog
        _write(self.flash_dir + "/reset_reason", "watchdog")
        _log_to(self, "WATCHDOG: not fed for %d ms, resetting" % (dog.timeout_ms if dog else 0))
        self.restart("watchdog")

    def _cancel_tasks(self, cur):
        for t in self.tasks:
            if t is not cur and not t.done():
                t.cancel()

    def _teardown(self):
        self._cancel_tasks(None)
        b = self.board
        if b is not None:
            b.link.close_all()  # sockets die as with a power loss: the broker sees the will
        a = self.app
        if a is not None:
            a.spool.close()
        self.dog = None
        self.board = None
        self.app = None

    def _record(self, reason):
        try:
            with open(self.flash_dir + "/host_exits", "a") as f:
                f.write(reason + "\n")
        except OSError:
            pass

    async def life(self, delay_ms):
        if delay_ms:
            await asyncio.sleep_ms(delay_ms)
        from sqalfw import app as fw
        while True:
            self.resetting = None
            end = None
            try:
                end = await self._boot(fw)
            except asyncio.CancelledError:
                if self.resetting is None:  # the host is shutting down
                    self._teardown()
                    raise
            except Exception as e:
                _exception_to(self, e)
                _log_to(self, "sqal: crashed, resetting")
                _write(self.flash_dir + "/reset_reason", "reset")
                self.resetting = "crash"
            self._teardown()
            if end is not None:
                self._record(end)
                self.done = True
                return
            self._record(self.resetting)
            await asyncio.sleep_ms(RESTART_PAUSE_MS)

    async def _boot(self, fw):
        self.boots += 1
        _write(self.flash_dir + "/host_boots", str(self.boots))
        try:
            board = HostBoard(self.flash_dir, self)
        except ValueError as e:
            _log_to(self, "sqal: %s" % e)
            return "config_error"
        self.board = board
        a = fw.boot(board)
        if a is None:
            return "config_error"
        self.app = a
        await a.run()
        return "stopped"


def _log_to(dev, text):
    try:
        with open(dev.log_path, "a") as f:
            f.write(text + "\n")
    except OSError:
        print(text)


def _exception_to(dev, e):
    try:
        with open(dev.log_path, "a") as f:
            sys.print_exception(e, f)
    except OSError:
        sys.print_exception(e)


class Host:
    def __init__(self, flash_dirs, stagger_ms=40, gc_ms=1000):
        self.devices = [Device(self, d) for d in flash_dirs]
        self.stagger_ms = stagger_ms
        self.gc_ms = gc_ms
        self._last_gc = time.ticks_ms()

    def collect(self):
        # the firmware collects after each cycle; K devices share one heap, so one collection per
        # gc_ms serves them all (a full heap still collects by itself)
        now = time.ticks_ms()
        if time.ticks_diff(now, self._last_gc) >= self.gc_ms:
            gc.collect()
            self._last_gc = time.ticks_ms()

    def shift_dogs(self, but, ms):
        for d in self.devices:
            if d is not but and d.dog is not None:
                d.dog.last = time.ticks_add(d.dog.last, ms)

    async def _control(self):
        # one task polls the control.json of all K devices every POLL_MS: one wake-up a second
        # for the host instead of one per device
        while True:
            for d in self.devices:
                b = d.board
                if b is not None and d.resetting is None:
                    try:
                        b.poll_control()
                    except asyncio.CancelledError:
                        pass  # a power cycle: restart() is taking that device down, not this task
            await asyncio.sleep_ms(POLL_MS)

    async def _reaper(self):
        # the loop-side watchdog: resets an unfed device alone
        while True:
            now = time.ticks_ms()
            nxt = REAPER_MAX_MS
            for d in self.devices:
                dog = d.dog
                if dog is None or d.resetting is not None:
                    continue
                left = dog.timeout_ms - time.ticks_diff(now, dog.last)
                if left < 0:
                    d.watchdog_fired()
                elif left < nxt:
                    nxt = left
            await asyncio.sleep_ms(nxt + 1)

    def _thread(self):
        # the last resort, in its own thread like the ESP32's hardware timer: when the event loop is
        # stuck (nothing can reset one device), the whole process is killed and all K boot again
        while True:
            now = time.ticks_ms()
            nxt = 5000
            for d in self.devices:
                dog = d.dog
                if dog is None:
                    continue
                left = dog.timeout_ms + GRACE_MS - time.ticks_diff(now, dog.last)
                if left < 0:
                    self._fire()
                nxt = min(nxt, left)
            time.sleep(max(20, nxt) / 1000)

    def _fire(self):
        now = time.ticks_ms()
        for d in self.devices:
            if d.dog is not None and d.dog.overdue(now):
                _write(d.flash_dir + "/reset_reason", "watchdog")
        print("WATCHDOG: event loop stuck, resetting the host (all its devices)")
        os.system("kill -%d $PPID" % exitcodes.WATCHDOG_SIGNAL)
        while True:
            time.sleep(1)

    async def main(self):
        tasks = []
        for i, d in enumerate(self.devices):
            root = _real_create_task(d.life(i * self.stagger_ms))
            d.root = root
            _owner[id(root)] = d
            tasks.append(root)
        reaper = _real_create_task(self._reaper())
        ctl = _real_create_task(self._control())
        _thread.start_new_thread(self._thread, ())
        for t in tasks:
            await t
        reaper.cancel()
        ctl.cancel()


def install():
    """Make every task a device's firmware creates that device's (see the header: ownership)."""
    asyncio.create_task = _create_task  # type: ignore[assignment]  # the seam: every task is a device's


def run(argv):
    stagger_ms, gc_ms, dirs = 40, 1000, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--stagger-ms":
            stagger_ms = int(argv[i + 1])
            i += 2
        elif a == "--gc-ms":
            gc_ms = int(argv[i + 1])
            i += 2
        else:
            dirs.append(a)
            i += 1
    if not dirs:
        print("usage: host_main.py [--stagger-ms N] [--gc-ms N] <flash_dir> ...")
        sys.exit(exitcodes.CONFIG_ERROR)
    install()
    host = Host(dirs, stagger_ms, gc_ms)
    try:
        asyncio.run(host.main())
    except KeyboardInterrupt:
        sys.exit(exitcodes.STOPPED)
    return 0
