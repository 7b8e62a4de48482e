# Process exit codes shared by the emulated board (MicroPython) and the host launcher (CPython).
STOPPED = 0          # graceful stop requested by the host
RESET = 75           # board.reset(): reboot command, offline too long, fatal error -> restart, flash kept
CONFIG_ERROR = 78    # config.json invalid: restarting would not help, the host must not loop
FLASH_CORRUPTED = 74  # the flash image holds a filesystem that does not mount: a board stops there too
WATCHDOG_SIGNAL = 10  # the emulated watchdog kills the process with SIGUSR1 (returncode -10)
