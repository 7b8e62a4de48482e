# Entry point of an emulation host: several emulated SQAL devices in one MicroPython process
# (`micropython emulation/host_main.py [--stagger-ms N] [--gc-ms N] <flash_dir> ...`, MICROPYPATH as
# for device_main.py). Each device runs the firmware application unchanged on its own board; see
# emulation/mpboard/host.py. Exits 0 once every device has stopped.
import sys

from emulation.mpboard import host

sys.exit(host.run(sys.argv[1:]))
