# Sensor drivers for the SQAL board. They talk to a machine.I2C-like object only, so the same
# code drives the real parts on an ESP32 and the register models in emulation.


class SensorError(Exception):
    """A sensor could not be used. The message names the sensor and the step that failed."""
