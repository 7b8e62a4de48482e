# SQAL firmware package: the same files run on an ESP32 and on the MicroPython unix port.
VERSION = "0.1.0"
