"""Serial ports, marking the ones whose USB bridge is the kind ESP32 boards carry."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import serial
from serial.tools import list_ports

from gateway.boards import BoardError

# (VID, PID) -> bridge name. PID None = any product of that vendor (Espressif's native USB:
# ESP32-S2/S3/C3/C6 USB-Serial-JTAG and TinyUSB CDC all use VID 0x303A).
ESP32_BRIDGES: dict[tuple[int, int | None], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, None): "Espressif native USB",
}


def bridge_name(vid: int | None, pid: int | None) -> str | None:
    """The USB-serial bridge an ESP32 board would use, or None if this VID:PID is not one."""
    if vid is None:
        return None
    return ESP32_BRIDGES.get((vid, pid)) or ESP32_BRIDGES.get((vid, None))


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    bridge: str | None  # set when the port looks like an ESP32 board

    @property
    def esp32_like(self) -> bool:
        return self.bridge is not None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04X}:{self.pid:04X}" if self.vid is not None and self.pid is not None else "-"


def describe(ports: Iterable[Any]) -> list[PortInfo]:
    """pyserial ListPortInfo-like objects -> PortInfo, ESP32-looking ports first, then by name."""
    out = [
        PortInfo(
            device=p.device,
            description=p.description if p.description and p.description != "n/a" else "",
            vid=p.vid,
            pid=p.pid,
            serial_number=p.serial_number,
            bridge=bridge_name(p.vid, p.pid),
        )
        for p in ports
    ]
    out.sort(key=lambda p: (not p.esp32_like, p.device))
    return out


def list_serial_ports(only_esp32: bool = False) -> list[PortInfo]:
    found = describe(list_ports.comports())
    return [p for p in found if p.esp32_like] if only_esp32 else found


def check_port_free(port: str) -> None:
    """Open and close the port exclusively, to turn 'busy' and 'missing' into clear errors."""
    if "://" in port:  # socket://, rfc2217:// ... a network port: nothing to check locally
        return
    try:
        s = serial.Serial(port, 115200, exclusive=True, timeout=0)
    except serial.SerialException as e:
        text = str(e)
        if getattr(e, "errno", None) == errno.ENOENT or "No such file" in text:
            raise BoardError(f"serial port {port} does not exist: plug the board in and run "
                             "'sqal board list' to find its port") from None
        if "exclusively lock" in text or "busy" in text.lower() or getattr(e, "errno", None) == errno.EBUSY:
            raise BoardError(
                f"serial port {port} is busy: close the program using it (a serial monitor, mpremote, "
                "screen, Thonny, another 'sqal board' command) and try again"
            ) from None
        if "Permission denied" in text:
            raise BoardError(f"no permission to open {port}: add your user to the 'dialout' group "
                             "(then log out and in) or run with the right rights") from None
        raise BoardError(f"cannot open serial port {port}: {text}") from None
    s.close()
