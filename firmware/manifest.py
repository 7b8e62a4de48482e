# The SQAL firmware frozen into a MicroPython image: the code runs from flash and costs no heap.
# A real board is built with it as its FROZEN_MANIFEST (docs/boards.md, "Build the SQAL image"), which
# also freezes the port's own modules (asyncio, ntptime...) as the stock image does. The emulator's
# ESP32 profile includes it with port_manifest=False and freezes asyncio itself (the unix port has
# no boards/manifest.py). boot.py and main.py stay files on the board's flash.
options.defaults(port_manifest=True)
if options.port_manifest:
    include("$(PORT_DIR)/boards/manifest.py")
package("sqalfw")
# the boot loader and update installer: frozen only, never in an application slot (docs/ota.md)
package("sqalboot", files=["__init__.py", "slots.py", "install.py", "ed25519.py", "run.py"])
