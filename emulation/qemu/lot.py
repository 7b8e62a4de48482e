# One lot through the firmware's sampling path, on whatever MicroPython runs it: frozen into the
# bare-metal image (MicroPython's qemu port: emulation/qemu/build.py) and, as the reference, on the
# unix port from the source tree. The host compares what the two print (emulation/qemu/compare.py).
#
#   scene (a lot of `profile` livers, `seed`) -> VL53L8 and AS7341 register models on the I2C bus
#   model -> the firmware's drivers (sqalfw.drivers) -> sqalfw.sampler: quality, codec, spool on
#   littlefs2 over a RAM block device -> each record read back from the spool and printed
#
# Nothing here is the firmware: this is the board around it (sqalfw/board.py's interface, the
# part the Sampler uses) and a clock. The firmware modules run unchanged.
#
# Time is virtual, the same on both targets: it passes only when the firmware waits (time.sleep_ms
# in the drivers, asyncio.sleep_ms in their measure()), and the sensor models read it too. On real
# time the number of ToF frames the model builds in a cycle (each draws ranging noise from the
# scene's generator) depends on how fast the target runs, and the two targets would drift apart;
# on virtual time the bus sees the same transactions at the same instants on both, the run waits
# for nothing (an AS7341 integration or a ToF frame costs no real time) and `ts` is reproducible.
# The firmware's waits still decide when a frame or an integration is ready, as on a board.
#
# The flash is littlefs2 (as the ESP32 port's "vfs" partition, 4 KiB blocks) on a block device in
# RAM: on the bare-metal target a region outside the MicroPython heap (as a board's flash is; the
# host gives its address), elsewhere a bytearray.
#
# Output, one line each: "HEAP <stage> free=<bytes> alloc=<bytes>", "REC <payload>" per sample
# (the contract's JSON, as the spool gives it back), "LOT <key>=<value> ...", "DONE".
import asyncio
import gc
import json
import sys

import vfs  # type: ignore[import-not-found]
from sqalfw import config, identity
from sqalfw.drivers import as7341 as as7341_driver
from sqalfw.drivers import i2cbus
from sqalfw.drivers import vl53l8 as vl53l8_driver
from sqalfw.spool import Spool

from emulation import peripherals
from emulation.peripherals import fwblob
from emulation.peripherals.scene import Scene

BLOCK_SIZE = 4096
FLASH = "/flash"
EPOCH_MS = 1767225600000  # the board clock at virtual time 0: 2026-01-01T00:00:00Z (set: synced)
BACKLOG = 8  # records left waiting in the spool before the oldest is read back: a peek from flash
DEVICE_ID = "QEMU_LOT_01"
LOT_ID = "LOT_20260101_0001"
SAMPLE_BYTES = 1100  # the spool's byte budget per sample, as sqalfw.app.SAMPLE_BYTES


class VirtualTime:
    """The `time` the drivers see and the models' clock: integer milliseconds from 0 that advance
    only by the waits asked for. Never wraps within a lot (ticks_diff is a plain difference)."""

    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> int:  # the models' clock_ms
        return self.ms

    def ticks_ms(self) -> int:
        return self.ms

    def ticks_diff(self, a: int, b: int) -> int:
        return a - b

    def ticks_add(self, a: int, b: int) -> int:
        return a + b

    def sleep_ms(self, ms: int) -> None:
        if ms > 0:
            self.ms += ms

    def sleep_us(self, us: int) -> None:
        self.sleep_ms((us + 999) // 1000)

    def sleep(self, s: float) -> None:
        self.sleep_ms(int(s * 1000))


# the firmware modules that wait or read the time on the sampling path: each holds `time` as a
# module global, which start() swaps (a module without one, e.g. one that imported ticks_ms by name,
# would not be on virtual time: start() refuses to run rather than mix the two clocks)
TIMED_MODULES = (vl53l8_driver, as7341_driver, i2cbus)


class VirtualClock:
    """Puts the drivers (their `time`) and asyncio.sleep_ms on a VirtualTime, and takes them off.
    asyncio's own loop keeps real time: an awaited sleep_ms advances the virtual clock by its
    argument, then yields to the loop for no real time."""

    def __init__(self, vt: VirtualTime) -> None:
        self.vt = vt
        self._saved: list = []
        self._sleep_ms = asyncio.sleep_ms  # type: ignore[attr-defined]

    def _async_sleep_ms(self, ms: int):  # type: ignore[no-untyped-def]
        self.vt.sleep_ms(ms)
        return self._sleep_ms(0)

    def start(self) -> None:
        for mod in TIMED_MODULES:
            t = getattr(mod, "time", None)
            if t is None or not hasattr(t, "ticks_ms"):
                raise RuntimeError(f"{mod.__name__} has no module global `time` to put on virtual time")
            self._saved.append((mod, t))
            mod.time = self.vt  # type: ignore[attr-defined]
        asyncio.sleep_ms = self._async_sleep_ms  # type: ignore[attr-defined,assignment]

    def stop(self) -> None:
        for mod, t in self._saved:
            mod.time = t  # type: ignore[attr-defined]
        self._saved = []
        asyncio.sleep_ms = self._sleep_ms  # type: ignore[attr-defined,assignment]


class RamFlash:
    """Block device (extended interface, as esp32.Partition) over RAM: `mem` is a bytearray, or
    on the bare-metal target uctypes.bytearray_at() over a region outside the heap. Counts the
    bytes programmed and the blocks erased."""

    def __init__(self, mem: bytearray, block_size: int = BLOCK_SIZE) -> None:
        self.mem = memoryview(mem)
        self.block_size = block_size
        self.block_count = len(mem) // block_size
        self.programmed = 0
        self.erased = 0

    def readblocks(self, block: int, buf: bytearray, offset: int = 0) -> None:
        a = block * self.block_size + offset
        buf[:] = self.mem[a:a + len(buf)]

    def writeblocks(self, block: int, buf: bytearray, offset: "int | None" = None) -> None:
        if offset is None:  # simple interface: whole blocks, erased first
            for i in range(len(buf) // self.block_size):
                self._erase(block + i)
            offset = 0
        a = block * self.block_size + offset
        self.mem[a:a + len(buf)] = buf
        self.programmed += len(buf)

    def ioctl(self, op: int, arg: int) -> int:
        if op == 4:  # block count
            return self.block_count
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase one block
            self._erase(arg)
        return 0

    def _erase(self, block: int) -> None:
        a = block * self.block_size
        m = self.mem
        for i in range(a, a + self.block_size, 256):
            m[i:i + 256] = ERASED_PAGE
        self.erased += 1


ERASED_PAGE = b"\xff" * 256


def ram(addr: int, size: int) -> bytearray:
    """`size` bytes of RAM at `addr`, outside the MicroPython heap (bare-metal target only)."""
    import uctypes  # type: ignore[import-not-found]
    return uctypes.bytearray_at(addr, size)  # type: ignore[no-any-return]


def mount_flash(mem: bytearray) -> RamFlash:
    """Format `mem` as littlefs2 (the ESP32 port's parameters) and mount it at /flash."""
    bdev = RamFlash(mem)
    for b in range(bdev.block_count):  # erased flash, whatever the RAM held
        bdev._erase(b)
    bdev.erased = 0
    vfs.VfsLfs2.mkfs(bdev)
    vfs.mount(vfs.VfsLfs2(bdev), FLASH)
    return bdev


class LotBoard:
    """The board seam (sqalfw/board.py) as far as the Sampler uses it: the I2C bus with the two
    sensor models over the scene, the clocks, the log, the flash directory."""

    name = "lot"

    def __init__(self, vt: VirtualTime, scene: Scene, seed: int) -> None:
        self.vt = vt
        self.scene = scene
        self.flash_dir = FLASH
        self.bus = peripherals.build(vt, scene=scene, seed=seed)

    def i2c(self, bus_id: int = 0, sda: "int | None" = None, scl: "int | None" = None,
            freq: int = 400000) -> object:
        return self.bus

    def cycle_start(self) -> None:
        self.scene.next_product()  # the belt brings the next liver

    def ticks_ms(self) -> int:
        return self.vt.ms

    def time_ms(self) -> int:
        return EPOCH_MS + self.vt.ms

    def clock_synced(self) -> bool:
        return True

    def log(self, line: str) -> None:
        print(line)


def heap(stage: str) -> int:
    gc.collect()
    free = gc.mem_free()  # type: ignore[attr-defined]
    print(f"HEAP {stage} free={free} alloc={gc.mem_alloc()}")  # type: ignore[attr-defined]
    return free  # type: ignore[no-any-return]


def _emit(spool: Spool) -> None:
    key, rec = spool.peek()
    print("REC " + rec.decode())
    spool.pop(key)


async def _cycles(sampler, spool: Spool, n: int) -> int:  # type: ignore[no-untyped-def]
    low = -1
    for _ in range(n):
        rec = await sampler.cycle()
        if rec is None:
            raise RuntimeError(f"lot: sensors degraded mid-lot: {sampler.errors!r}")
        while len(spool) > BACKLOG:
            _emit(spool)
        gc.collect()  # the board's collect() after each cycle, as the app does
        free = gc.mem_free()  # type: ignore[attr-defined]
        if low < 0 or free < low:
            low = free
    while len(spool):
        _emit(spool)
    return low


def run(profile: str, seed: int, n: int, resolution: int = 8, tof_hz: int = 10,
        mem: "bytearray | None" = None, flash_size: int = 512 * 1024) -> None:
    """The lot: `n` samples of a `profile` lot (scene seed `seed`) at `resolution`, printed as
    they come back from the spool. `mem`: the flash's RAM (default: a bytearray of flash_size)."""
    from sqalfw.sampler import Sampler

    heap("import")
    bdev = mount_flash(mem if mem is not None else bytearray(flash_size))
    fwblob.write_blob(FLASH + "/vl53l8cx_fw.bin")
    with open(FLASH + "/config.json", "w") as f:
        f.write(json.dumps({"device_id": DEVICE_ID, "broker_url": "mqtt://127.0.0.1:1883",
                            "resolution": resolution, "tof_frequency_hz": tof_hz}))
    cfg = config.load(FLASH)
    ident = identity.Identity(FLASH, cfg.device_id)
    ident.start(cfg.safe_mode_after)
    ident.set_lot(LOT_ID)
    spool = Spool(FLASH + "/spool", capacity=cfg.spool_capacity * SAMPLE_BYTES, max_records=cfg.spool_capacity)
    vt = VirtualTime()
    board = LotBoard(vt, Scene(profile=profile, seed=seed), seed)
    sampler = Sampler(board, cfg, ident, spool)
    clock = VirtualClock(vt)
    clock.start()
    try:
        if not sampler.init_sensors():
            raise RuntimeError(f"lot: sensors did not come up: {sampler.errors!r}")
        heap("ready")
        low = asyncio.run(_cycles(sampler, spool, n))
    finally:
        clock.stop()
    spool.close()
    print(f"HEAP min_after_cycle free={low}")
    heap("end")
    print(f"LOT profile={profile} seed={seed} samples={sampler.sampled} virtual_ms={vt.ms} "
          f"flash_programmed={bdev.programmed} flash_erased={bdev.erased} platform={sys.platform}")
    print("DONE")
