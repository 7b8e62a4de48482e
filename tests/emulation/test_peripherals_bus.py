"""EmulatedI2C: machine.I2C semantics, errors like the MicroPython port, fault knobs."""

import pytest

from emulation.peripherals.as7341 import AS7341Model
from emulation.peripherals.bus import EIO, ENODEV, EmulatedI2C
from emulation.peripherals.vl53l8 import VL53L8Model


def make(**kw) -> EmulatedI2C:
    bus = EmulatedI2C(**kw)
    bus.attach(0x39, AS7341Model(lambda: 0.0))
    bus.attach(0x29, VL53L8Model(lambda: 0.0))
    return bus


def test_scan_and_absent_devices() -> None:
    assert make().scan() == [0x29, 0x39]
    bus = make(absent=(0x29,))
    assert bus.scan() == [0x39]
    with pytest.raises(OSError) as e:
        bus.readfrom_mem(0x29, 0, 1, addrsize=16)
    assert e.value.args[0] == ENODEV
    with pytest.raises(OSError):
        bus.writeto(0x10, b"\x00")


def test_register_access_8_and_16_bit() -> None:
    bus = make()
    assert bus.readfrom_mem(0x39, 0x92, 1) == bytes([0x24])
    assert bus.readfrom_mem(0x29, 0x0000, 2, addrsize=16) == b"\xf0\x0c"
    buf = bytearray(2)
    bus.readfrom_mem_into(0x29, 0x0000, buf, addrsize=16)
    assert buf == b"\xf0\x0c"
    with pytest.raises(OSError):  # a 16-bit part addressed with 8 bits
        bus.readfrom_mem(0x29, 0x00, 1)
    # writeto/readfrom: the address bytes set the pointer
    bus.writeto(0x39, bytes([0x81, 42]))
    bus.writeto(0x39, bytes([0x81]))
    assert bus.readfrom(0x39, 1) == bytes([42])


def test_error_rate_is_seeded_and_roughly_honoured() -> None:
    def failures(seed: int) -> list[int]:
        bus = make(seed=seed, error_rate=0.2)
        out = []
        for i in range(500):
            try:
                bus.readfrom_mem(0x39, 0x92, 1)
            except OSError as e:
                assert e.args[0] == EIO
                out.append(i)
        return out

    a = failures(1)
    assert a == failures(1)
    assert a != failures(2)
    assert 60 < len(a) < 140


def test_bad_error_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        EmulatedI2C(error_rate=1.5)
