"""AS7341Model register behaviour (CPython; driver-level tests run it under MicroPython)."""

from emulation.peripherals.as7341 import AS7341Model

SMUX_F1_F4 = bytes.fromhex("3001000000420000500000002004003001500006")


def setup(now: list[float], scene=None) -> AS7341Model:
    m = AS7341Model(lambda: now[0], scene=scene, seed=1)
    m.write(0x81, bytes([29]))
    m.write(0xCA, bytes([599 & 0xFF, 599 >> 8]))
    m.write(0xAA, bytes([3]))
    m.write(0x80, bytes([0x01]))
    m.write(0xAF, bytes([0x10]))
    m.write(0x00, SMUX_F1_F4)
    m.write(0x80, bytes([0x11]))
    return m


def test_smuxen_clears_after_the_command_and_avalid_after_integration() -> None:
    now = [0.0]
    m = setup(now)
    assert m.read(0x80, 1)[0] & 0x10
    assert not m.read(0x80, 1)[0] & 0x10
    m.write(0x80, bytes([0x03]))
    now[0] = 49.0
    assert m.read(0xA3, 1)[0] & 0x40 == 0
    assert m.read(0x95, 2) == b"\x00\x00"
    now[0] = 50.1
    assert m.read(0xA3, 1)[0] & 0x40


def test_low_bank_needs_reg_bank_bit() -> None:
    m = AS7341Model(lambda: 0.0)
    m.write(0x74, bytes([0x8A]))            # LED register ignored in the high bank
    assert m.read(0x74, 1)[0] == 0
    m.write(0xA9, bytes([0x10]))
    m.write(0x74, bytes([0x8A]))
    assert m.read(0x74, 1)[0] == 0x8A


def test_scene_factors_scale_the_counts() -> None:
    class Dull:
        def spectral_factors(self):
            return {k: 0.5 for k in ("F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR")}

    counts = []
    for scene in (None, Dull()):
        now = [0.0]
        m = setup(now, scene)
        m.read(0x80, 1)
        m.write(0x80, bytes([0x03]))
        now[0] = 60.0
        raw = m.read(0x95, 12)
        counts.append([raw[2 * i] | raw[2 * i + 1] << 8 for i in range(6)])
    assert abs(counts[1][3] / counts[0][3] - 0.5) < 0.03  # F4


def test_a_block_read_of_the_channel_data_is_the_registers_read_one_by_one() -> None:
    # the data block has its own path in read() (one AVALID check, one measurement): it must
    # give what reading each register alone gives, for the whole block and for any window of it
    now = [0.0]
    m = setup(now)
    m.read(0x80, 1)
    m.write(0x80, bytes([0x03]))
    now[0] = 20.0
    assert m.read(0x95, 12) == bytes(12) == bytes(m._r(r) for r in range(0x95, 0xA1))  # before AVALID
    now[0] = 60.0
    one_by_one = bytes(m._r(r) for r in range(0x95, 0xA1))  # the per-register definition
    assert any(one_by_one)
    assert m.read(0x95, 12) == one_by_one
    for start in range(0x95, 0xA1):
        for n in range(1, 0xA1 - start + 1):
            assert m.read(start, n) == one_by_one[start - 0x95:start - 0x95 + n], (hex(start), n)
