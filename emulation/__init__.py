# Kept empty on purpose: emulated devices import emulation.peripherals under MicroPython too.
