"""`sqal board list`: ESP32-looking ports marked by their USB bridge's VID:PID."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serial.tools.list_ports_common import ListPortInfo
from typer.testing import CliRunner

from gateway.boards import BoardError, cli
from gateway.boards.ports import bridge_name, check_port_free, describe


def port(device: str, vid: int | None, pid: int | None, desc: str = "n/a") -> ListPortInfo:
    p = ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.description = vid, pid, desc
    return p


@pytest.mark.parametrize("vid,pid,name", [
    (0x10C4, 0xEA60, "Silicon Labs CP210x"), (0x1A86, 0x7523, "WCH CH340"), (0x1A86, 0x55D4, "WCH CH9102"),
    (0x0403, 0x6001, "FTDI FT232R"), (0x0403, 0x6015, "FTDI FT231X"),
    (0x303A, 0x1001, "Espressif native USB"), (0x303A, 0x0002, "Espressif native USB"),
])
def test_known_bridges(vid: int, pid: int, name: str) -> None:
    assert bridge_name(vid, pid) == name


@pytest.mark.parametrize("vid,pid", [(0x2341, 0x0043), (0x1A86, 0x5523), (0x0403, 0x6011), (None, None)])
def test_other_devices_are_not_marked(vid: int | None, pid: int | None) -> None:
    assert bridge_name(vid, pid) is None


def test_describe_marks_and_orders() -> None:
    found = describe([port("/dev/ttyS0", None, None), port("/dev/ttyACM0", 0x2341, 0x0043, "Arduino Uno"),
                      port("/dev/ttyUSB1", 0x1A86, 0x55D4, "USB Single Serial")])
    assert [p.device for p in found] == ["/dev/ttyUSB1", "/dev/ttyACM0", "/dev/ttyS0"]
    assert found[0].esp32_like and found[0].usb_id == "1A86:55D4" and found[0].bridge == "WCH CH9102"
    assert not found[1].esp32_like and found[1].description == "Arduino Uno"
    assert found[2].usb_id == "-" and found[2].description == ""


def test_cli_list_shows_a_table_with_the_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller"),
            port("/dev/ttyACM3", 0x2341, 0x0043, "Arduino Uno")]
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: fake)
    monkeypatch.setattr(cli.console, "width", 200)
    res = CliRunner().invoke(cli.board_app, ["list"])
    assert res.exit_code == 0, res.output
    row = next(x for x in res.output.splitlines() if "/dev/ttyUSB0" in x)
    assert "yes" in row and "10C4:EA60" in row and "Silicon Labs CP210x" in row
    other = next(x for x in res.output.splitlines() if "/dev/ttyACM3" in x)
    assert "yes" not in other
    only = CliRunner().invoke(cli.board_app, ["list", "--esp32"])
    assert "/dev/ttyUSB0" in only.output and "/dev/ttyACM3" not in only.output


def test_check_port_free(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        check_port_free(os.ttyname(slave))  # free: no error
        with pytest.raises(BoardError, match="does not exist"):
            check_port_free(str(tmp_path / "ttyNONE"))
    finally:
        os.close(master)
        os.close(slave)
