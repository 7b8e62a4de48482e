"""VL53L8Model protocol checks (CPython; the driver-level tests run it under MicroPython)."""

import struct

from emulation.peripherals import fwblob
from emulation.peripherals.vl53l8 import VL53L8Model


class Raw:
    """Talks to the model the way the ULD does, step by step, so tests can break the order."""

    def __init__(self) -> None:
        self.m = VL53L8Model(lambda: 0.0)

    def wr(self, reg: int, val: int) -> None:
        self.m.write(reg, bytes([val]))

    def page(self, p: int) -> None:
        self.wr(0x7FFF, p)

    def rom_and_access(self) -> None:
        self.page(0)
        self.wr(0x0A, 0x03)
        self.wr(0x0A, 0x01)
        self.page(1)
        self.wr(0x06, 0x01)

    def download(self, order=(9, 10, 11)) -> None:
        chunks = b"".join(bytes(c) for c in fwblob.fw_chunks())
        base = {9: 0, 10: 0x8000, 11: 0x10000}
        size = dict(fwblob.PAGES)
        for p in order:
            self.page(p)
            for off in range(0, size[p], 4096):
                n = min(4096, size[p] - off)
                self.m.write(off, chunks[base[p] + off:base[p] + off + n])

    def boot(self) -> int:
        self.page(0)
        self.wr(0x0B, 0x00)
        self.wr(0x0B, 0x01)
        status0 = self.m.read(0x06, 1)[0]
        self.page(2)
        return status0

    def checksum(self) -> int:
        return struct.unpack(">I", self.m.read(0x2FFC, 4))[0]


def test_good_download_boots_and_reports_the_uld_checksum() -> None:
    r = Raw()
    r.rom_and_access()
    r.download()
    assert r.boot() == 0x80
    assert r.checksum() == fwblob.FW_CHECKSUM


def test_pages_out_of_order_fail_the_checksum() -> None:
    r = Raw()
    r.rom_and_access()
    r.download(order=(10, 9, 11))
    r.boot()
    assert r.checksum() != fwblob.FW_CHECKSUM


def test_no_firmware_access_or_short_download_never_boots() -> None:
    r = Raw()
    r.page(0)
    r.wr(0x0A, 0x03)
    r.wr(0x0A, 0x01)
    r.download()  # GO1 access never enabled: nobody listens
    assert r.boot() == 0x00
    r = Raw()
    r.rom_and_access()
    r.download(order=(9, 10))
    assert r.boot() == 0x00


def _booted() -> Raw:
    r = Raw()
    r.rom_and_access()
    r.download()
    r.boot()
    return r


def test_dci_write_then_read_roundtrip_and_malformed_write() -> None:
    r = _booted()
    host = bytes((8, 8, 0, 0, 4, 4, 0, 0))
    wire = fwblob.block(0x5450, host) + fwblob.footer(0x05, 0x01, len(host) + 12)
    r.m.write(0x2FFF - len(wire) + 1, wire)
    assert r.m.read(0x2C00, 4)[1] == 0x03
    assert r.m.resolution() == 64
    # DCI read of the same index
    cmd = bytes((0x54, 0x50, 0x00, 0x80, 0, 0, 0, 0x0F, 0x00, 0x02, 0x00, 0x08))
    r.m.write(0x2FFF - 11, cmd)
    got = bytearray(r.m.read(0x2C04, 8 + 12))
    fwblob.swap32(got)
    assert bytes(got[4:12]) == host
    # footer size not matching the bytes written: the MCU refuses (byte 2 >= 0x7F)
    bad = fwblob.block(0x5450, host) + fwblob.footer(0x05, 0x01, len(host) + 16)
    r.m.write(0x2FFF - len(bad) + 1, bad)
    assert r.m.read(0x2C00, 4)[2] >= 0x7F


def test_start_ranging_refused_without_output_configuration() -> None:
    r = _booted()
    r.m.write(0x2FFC, b"\x00\x03\x00\x00")
    assert r.m.read(0x2C00, 4)[2] >= 0x7F
    assert not r.m.ranging
