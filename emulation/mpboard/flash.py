# The emulated board's SPI NOR flash: a block device over a host file, mounted as littlefs2 the way
# the ESP32 port mounts its "vfs" partition (ports/esp32/modules/_boot.py, inisetup.py): the
# default VfsLfs2 parameters on 4 KiB erase blocks, formatted on first use.
#
# What a board's flash does that a host directory does not, and this does:
#   - it has a size: the partition (ESP32_GENERIC, 4 MB chip: 2 MiB) fills up (OSError ENOSPC);
#   - it wears: every byte programmed and every block erased is counted (the flash-wear bench);
#   - a power cut tears a write: programs and erases go to the file one 256-byte page at a time,
#     so a process killed in the middle leaves part of a block old and part new, as a chip does.
# An erased byte reads 0xFF; a new image file is all 0xFF (erased flash).
import os

import vfs

BLOCK_SIZE = 4096
PAGE = 256  # SPI NOR program page: the unit a power cut can leave half-written


class FileFlash:
    """esp32.Partition-like block device (extended interface: offsets, ioctl erase)."""

    def __init__(self, path, size, block_size=BLOCK_SIZE, readonly=False):
        if size % block_size or size < 8 * block_size:
            raise ValueError("flash size must be a multiple of %d and at least 8 blocks" % block_size)
        self.block_size = block_size
        self.block_count = size // block_size
        self.programmed = 0  # bytes written to flash (program operations)
        self.erased = 0      # erase-block operations
        self._erased_page = b"\xff" * PAGE
        if not readonly:
            _extend(path, size)
        self._f = open(path, "rb" if readonly else "r+b")

    def readblocks(self, block, buf, offset=0):
        self._f.seek(block * self.block_size + offset)
        n = self._f.readinto(buf)
        if n != len(buf):
            raise OSError(5)  # EIO: the image is shorter than the partition

    def writeblocks(self, block, buf, offset=None):
        if offset is None:  # simple interface: whole blocks, erased first
            for i in range(len(buf) // self.block_size):
                self._erase(block + i)
            offset = 0
        self._program(block * self.block_size + offset, buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.block_count
        if op == 5:  # block size
            return self.block_size
        if op == 6:  # erase one block
            self._erase(arg)
            return 0
        return 0  # init, deinit, sync (writes are unbuffered; the host's page cache outlives a kill)

    def close(self):
        self._f.close()

    def _program(self, pos, buf):
        mv = memoryview(buf)
        f = self._f
        f.seek(pos)
        # one page per write(2) (MicroPython's posix files are unbuffered): a kill lands between
        # pages, never inside one
        for i in range(0, len(mv), PAGE):
            f.write(mv[i:i + PAGE])
        self.programmed += len(mv)

    def _erase(self, block):
        f = self._f
        f.seek(block * self.block_size)
        for _ in range(self.block_size // PAGE):
            f.write(self._erased_page)
        self.erased += 1


def _extend(path, size):
    # a missing or short image grows with erased (0xFF) bytes; an existing one keeps its content
    try:
        have = os.stat(path)[6]
    except OSError:
        have = 0
    if have >= size:
        return
    with open(path, "ab") as f:
        page = b"\xff" * 4096
        left = size - have
        while left:
            n = left if left < len(page) else len(page)
            f.write(page[:n])
            left -= n


class FlashCorrupted(OSError):
    pass


def mount(image_path, size, mount_point="/flash"):
    """Mount the image as littlefs2 at mount_point. As the ESP32 port's inisetup: a blank image
    (first block all 0xFF) is formatted; one that holds something but does not mount is corrupted,
    and nothing is formatted over it (FlashCorrupted). Returns the block device (wear counters)."""
    bdev = FileFlash(image_path, size)
    try:
        # the stubs want a subclass of AbstractBlockDev, which MicroPython does not have: littlefs
        # takes any object with readblocks/writeblocks/ioctl
        fs = vfs.VfsLfs2(bdev)  # type: ignore[abstract, arg-type]
    except OSError:
        first = bytearray(bdev.block_size)
        bdev.readblocks(0, first)
        if first != b"\xff" * len(first):
            raise FlashCorrupted("flash: the filesystem is corrupted (not blank, does not mount)")
        print("flash: blank, formatting %d KiB as littlefs2" % (size // 1024))
        vfs.VfsLfs2.mkfs(bdev)  # type: ignore[arg-type]
        fs = vfs.VfsLfs2(bdev)  # type: ignore[abstract, arg-type]
    vfs.mount(fs, mount_point)
    return bdev
