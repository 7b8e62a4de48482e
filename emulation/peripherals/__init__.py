# I2C peripheral models (VL53L8, AS7341) and the product scene. MicroPython-compatible: these
# modules run inside an emulated device's micropython process as well as under CPython.
# The models are imported when a bus is built, not with the package (the gateway reads profiles).

def build(clock_ms, scene=None, seed=1, error_rate=0.0, absent=(), fw_ok=True):
    """An EmulatedI2C with the two sensors of the SQAL board attached at their addresses."""
    from emulation.peripherals.as7341 import AS7341Model
    from emulation.peripherals.bus import EmulatedI2C
    from emulation.peripherals.vl53l8 import VL53L8Model

    bus = EmulatedI2C(seed=seed, error_rate=error_rate, absent=absent)
    bus.attach(0x29, VL53L8Model(clock_ms, scene=scene))
    bus.attach(0x39, AS7341Model(clock_ms, scene=scene, seed=seed + 7919))
    return bus
