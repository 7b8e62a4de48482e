# What the ESP32 profile's interpreter has frozen in: asyncio (the esp32 port freezes it too), the
# firmware through the same manifest a real image is built with, and the device side of the
# emulation (emulated board, sensor models, scene), which on a board would be real chips. Not
# peripherals/_scenefast.py: its viper code assumes 64-bit machine ints (scene.py takes the plain
# path on a 32-bit interpreter).
include("$(MPY_DIR)/extmod/asyncio")
include("../../firmware/manifest.py", port_manifest=False)
package(
    "emulation",
    files=[
        "__init__.py",
        "device_main.py",
        "mpboard/__init__.py",
        "mpboard/board.py",
        "mpboard/control.py",
        "mpboard/exitcodes.py",
        "mpboard/flash.py",
        "mpboard/net.py",
        "mpboard/sensors.py",
        "mpboard/wdt.py",
        "peripherals/__init__.py",
        "peripherals/as7341.py",
        "peripherals/bus.py",
        "peripherals/fwblob.py",
        "peripherals/profiles.py",
        "peripherals/rng.py",
        "peripherals/scene.py",
        "peripherals/vl53l8.py",
    ],
    base_path="../..",
)
