"""RetryingI2C on the real MicroPython interpreter, over the emulated bus."""


def test_retries_are_bounded_and_counted(micropython_run) -> None:
    out = micropython_run("""
from emulation.peripherals.bus import EmulatedI2C
from emulation.peripherals.as7341 import AS7341Model
from sqalfw.drivers.i2cbus import RetryingI2C
bus = EmulatedI2C(seed=11, error_rate=0.3)
bus.attach(0x39, AS7341Model(lambda: 0.0))
r = RetryingI2C(bus, retries=8)
ok = 0
for i in range(200):
    if r.readfrom_mem(0x39, 0x92, 1)[0] == 0x24:
        ok += 1
print(ok, r.errors == bus.injected, r.errors > 20, r.failures)
dead = RetryingI2C(bus, retries=2)
try:
    dead.readfrom_mem(0x50, 0, 1)
except OSError as e:
    print("OSError", e.args[0], dead.errors, dead.failures)
""").stdout.split("\n")
    assert out[0] == "200 True True 0"
    assert out[1] == "OSError 19 3 1"  # ENODEV after 1 + 2 attempts, one give-up
