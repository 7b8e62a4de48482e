# The ESP32 profile of the emulator: build (build.py), variant and manifest.
