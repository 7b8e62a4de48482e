#!/usr/bin/env bash
# System packages the tests use that PyPI cannot give: Mosquitto (a real MQTT broker), Chromium
# (the web page's end-to-end tests drive Debian's chromium with playwright; no browser download)
# gcc-multilib (the emulator's ESP32 profile is a 32-bit MicroPython build), and the cross
# toolchains and QEMU of the bare-metal tier.
# As root, installs what is missing; otherwise says what to install and fails.
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# the emulator's ESP32 profile is a 32-bit build of MicroPython (emulation/esp32/build.py)
echo 'int main(void) { return 0; }' | gcc -m32 -x c - -o /dev/null 2>/dev/null || missing+=(gcc-multilib)
# the bare-metal tier: the firmware on MicroPython in QEMU, Cortex-M3 and RISC-V 32 (docs/qemu.md)
command -v arm-none-eabi-gcc >/dev/null 2>&1 || missing+=(gcc-arm-none-eabi libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || missing+=(qemu-system-arm)
command -v riscv64-unknown-elf-gcc >/dev/null 2>&1 || missing+=(gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf)
command -v qemu-system-riscv32 >/dev/null 2>&1 || missing+=(qemu-system-misc)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "sqal: installing system packages: ${missing[*]}" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    # Debian starts a system-wide broker on 1883; tests run their own on free ports.
    (command -v service >/dev/null && service mosquitto stop >/dev/null 2>&1) || true
else
    echo "sqal: the tests need these system packages: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
