"""AS7341 driver against the AS7341 register model, on the real MicroPython interpreter."""

import json

HEAP = "160k"

PRELUDE = """
import asyncio, json, time
from emulation.peripherals.bus import EmulatedI2C
from emulation.peripherals.as7341 import AS7341Model, REFERENCE
from sqalfw.drivers import SensorError
from sqalfw.drivers.i2cbus import RetryingI2C
from sqalfw.drivers.as7341 import AS7341

def rig(clock=time.ticks_ms, scene=None, absent=(), error_rate=0.0):
    m = AS7341Model(clock, scene=scene, seed=3)
    bus = EmulatedI2C(seed=5, error_rate=error_rate, absent=absent)
    bus.attach(0x39, m)
    r = RetryingI2C(bus, retries=5)
    return m, bus, r, AS7341(r)
"""


def run(micropython_run, body: str) -> str:
    return micropython_run(PRELUDE + body, heap=HEAP).stdout


def test_measure_two_passes_returns_every_channel(micropython_run) -> None:
    out = json.loads(run(micropython_run, """
m, bus, r, s = rig()
s.init(29, 599, 3)
print(json.dumps(asyncio.run(s.measure())))
"""))
    assert set(out) == {"F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "CLEAR", "NIR", "gain", "atime",
                        "astep", "saturated"}
    assert (out["gain"], out["atime"], out["astep"], out["saturated"]) == (4.0, 29, 599, False)
    # 30 x 600 x 2.78 us = 50.04 ms at gain 4: half the 100 ms reference counts (+/- noise)
    ref = {"F1": 400, "F2": 600, "F3": 500, "F4": 1900, "F5": 900, "F6": 600, "F7": 1150, "F8": 750,
           "NIR": 600, "CLEAR": 6500}
    for ch, v in ref.items():
        assert abs(out[ch] - v * 0.5004) < 25, (ch, out[ch])


def test_counts_follow_gain(micropython_run) -> None:
    out = run(micropython_run, """
m, bus, r, s = rig()
for again in (3, 4, 6):
    s.init(29, 599, again)
    d = asyncio.run(s.measure())
    print(d["F4"], d["F8"], d["gain"])
""").split("\n")
    f4 = [int(line.split()[0]) for line in out[:3]]
    gains = [float(line.split()[2]) for line in out[:3]]
    assert gains == [4.0, 8.0, 32.0]
    assert abs(f4[1] / f4[0] - 2.0) < 0.05
    assert abs(f4[2] / f4[0] - 8.0) < 0.1


def test_saturation_digital_and_analog(micropython_run) -> None:
    out = run(micropython_run, """
now = [0.0]
m, bus, r, s = rig(clock=lambda: now[0])
s.init(29, 599, 9)                  # 256x: F4 would be ~121,000 counts, full scale is 18,000
s.start_pass(0)
now[0] += 60
print(s.pass_ready(), s.read_pass()[3], s.full_scale(), s.saturated)
s.init(255, 999, 9)                 # full scale 65535: the ADC itself (analog) overflows
s.saturated = False
s.start_pass(0)
now[0] += 800
print(s.pass_ready(), m._sat, s.read_pass()[3], s.saturated)
s.init(29, 599, 3)
s.saturated = False
s.start_pass(0)
now[0] += 60
print(s.pass_ready(), s.saturated)
""").split("\n")
    assert out[0] == "True 18000 18000 True"
    ok, sat, f4, flag = out[1].split()
    assert ok == "True" and int(sat) & 0x08 and f4 == "65535" and flag == "True"
    assert out[2] == "True False"


def test_smux_routing_decides_which_channel_lands_where(micropython_run) -> None:
    out = run(micropython_run, """
from sqalfw.drivers import as7341 as drv
now = [0.0]
m, bus, r, s = rig(clock=lambda: now[0])
s.init(29, 599, 3)
s.start_pass(1)                  # F5-F8 routing
now[0] += 60
print(s.pass_ready(), s.read_pass())
# an empty SMUX configuration routes nothing: every ADC reads dark
s._wr(0x80, 0x01); s._wr(0xAF, 0x10); r.writeto_mem(0x39, 0, bytes(20)); s._wr(0x80, 0x11)
s._rd(0x80); s._wr(0x80, 0x03)
now[0] += 60
print(s.pass_ready(), s.read_pass())
# without the SMUX command (CFG6 = 0) the RAM is not loaded: the routing stays as it was
s.start_pass(0)
s._wr(0x80, 0x01); s._wr(0xAF, 0x00); r.writeto_mem(0x39, 0, drv.SMUX_F5_F8); s._wr(0x80, 0x11)
s._rd(0x80); s._wr(0x80, 0x03)
now[0] += 60
print(s.pass_ready(), s.read_pass())
""").split("\n")
    ok, vals = out[0].split(" ", 1)
    f5, _f6, _f7, f8, clear, nir = eval(vals)
    assert ok == "True"
    assert abs(f5 - 450) < 25 and abs(f8 - 375) < 25 and abs(clear - 3252) < 25 and abs(nir - 300) < 25
    assert out[1] == "True [0, 0, 0, 0, 0, 0]"
    ok, vals = out[2].split(" ", 1)
    assert abs(eval(vals)[0] - 200) < 25  # still F1 on ADC0


def test_avalid_timeout_absent_and_wrong_id(micropython_run) -> None:
    out = run(micropython_run, """
m, bus, r, s = rig(clock=lambda: 0.0)      # the model's clock never moves: AVALID never comes
s.init(29, 599, 3)
try:
    asyncio.run(s.measure(timeout_ms=60))
except SensorError as e:
    print(e)
m, bus, r, s = rig(absent=(0x39,))
try:
    s.init()
except SensorError as e:
    print(e)
m, bus, r, s = rig()
m.regs[0x92] = 0x40
try:
    s.init()
except SensorError as e:
    print(e)
""").split("\n")
    assert "AVALID not set within 60 ms (pass 0)" in out[0]
    assert "no answer at I2C address 0x39" in out[1]
    assert "unexpected ID register 0x40" in out[2]


def test_i2c_errors_retried_during_measure(micropython_run) -> None:
    out = run(micropython_run, """
m, bus, r, s = rig(error_rate=0.1)
s.init(29, 599, 3)
d = asyncio.run(s.measure())
print(abs(d["F4"] - 951) < 25, bus.injected > 0, r.errors == bus.injected, r.failures)
""")
    assert out.split() == ["True", "True", "True", "0"]


def test_smux_deadline_passed_while_paused_is_not_a_failure(micropython_run) -> None:
    # a host that deschedules the device past the SMUX deadline before its first look (a saturated
    # machine running a fleet) must not fail the sensor; a SMUX that never finishes still does
    out = run(micropython_run, """
import sqalfw.drivers.as7341 as drv

class PausedClock:
    # ticks jump 150 ms after the driver takes its start time: the first look is already late
    def __init__(self):
        self.t = 0
        self.calls = 0
    def ticks_ms(self):
        self.calls += 1
        if self.calls == 2:
            self.t += 150
        return self.t
    def ticks_diff(self, a, b):
        return a - b
    def sleep_ms(self, ms):
        self.t += ms

m, bus, r, s = rig()
s.init(29, 599, 3)
clock = PausedClock()
drv.time = clock
s.start_pass(0)
print("paused ok")
m._smux_pending = True
m.regs[0x80] |= 0x10
m._r_orig = m._r
def stuck(reg):
    v = m._r_orig(reg)
    if reg == 0x80:
        v |= 0x10          # SMUXEN never clears
    return v
m._r = stuck
clock.calls = 0
try:
    s.start_pass(1)
    print("no error")
except SensorError as e:
    print("stuck:", e)
""")
    assert "paused ok" in out
    assert "stuck: as7341: SMUX did not finish within 100 ms" in out
