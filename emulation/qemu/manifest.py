# mypy: ignore-errors
# What the bare-metal image (MicroPython's qemu port) has frozen in, built by emulation/qemu/build.py:
# asyncio as Python (the port leaves the C _asyncio module off, so its task.py too), the firmware
# through the manifest a real image is built with, and the device side of the emulation that the
# sampling path needs: the sensor models, the I2C bus model, the scene and the synthetic ToF blob
# (other chips on a board), and the lot runner (emulation/qemu/lot.py). Not the emulated board of
# the unix port (emulation/mpboard: host files, sockets, threads) and not peripherals/_scenefast.py
# (viper code for 64-bit ints: the scene takes its plain path on a 32-bit target).
include("$(MPY_DIR)/extmod/asyncio")
package("asyncio", files=["task.py"], base_path="$(MPY_DIR)/extmod", opt=3)
include("../../firmware/manifest.py", port_manifest=False)
package(
    "emulation",
    files=[
        "__init__.py",
        "peripherals/__init__.py",
        "peripherals/as7341.py",
        "peripherals/bus.py",
        "peripherals/fwblob.py",
        "peripherals/profiles.py",
        "peripherals/rng.py",
        "peripherals/scene.py",
        "peripherals/vl53l8.py",
        "qemu/__init__.py",
        "qemu/lot.py",
    ],
    base_path="../..",
)
