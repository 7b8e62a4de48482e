# The ESP32 profile of the emulator: MicroPython's unix port built 32-bit with single-precision
# floats, the firmware and the device-side emulation frozen in, littlefs2 for the flash image.
# Built by emulation/esp32/build.py (FROZEN_MANIFEST is given on its make command line).
MICROPY_FORCE_32BIT = 1
# TLS buffers live outside the MicroPython heap on an ESP32; the source subset has no mbedtls
MICROPY_PY_SSL = 0
MICROPY_PY_FFI = 0
MICROPY_PY_BTREE = 0
# the emulated hardware watchdog is a thread (emulation/mpboard/wdt.py), as the ESP32's is a timer
MICROPY_PY_THREAD = 1
MICROPY_VFS_LFS2 = 1
