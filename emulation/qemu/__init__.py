# The bare-metal tier of the emulator: MicroPython's qemu port (no operating system, a fixed heap,
# Thumb-2 or RV32 code, software floating point) with the firmware frozen in. Host side: build.py
# (the image), repl.py (its raw REPL), compare.py (the lot on both targets). Device side, frozen
# into the image and run on the unix port too: lot.py. Kept free of CPython-only imports.
