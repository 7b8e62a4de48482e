"""`sqal board deploy`: mpremote (as a library) against a fake board on a pty that speaks
MicroPython's raw REPL and executes everything on the real MicroPython unix port."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.boards.cli import board_app
from gateway.boards.deploy import (
    FIRMWARE_DIR,
    DeployError,
    build_config,
    collect_files,
    deploy,
    make_plan,
)
from tests.boards.fakeboard import FakeBoard

CONFIG = {"device_id": "ESP32_TEST_01", "location": "Ligne A - Landes", "wifi_ssid": "lab",
          "wifi_password": "wifi-secret", "broker_url": "mqtt://ESP32_TEST_01:pw@192.0.2.10:1883"}
# A tiny firmware for the log-following tests: main.py reads the deployed config.json and says
# online the way the real firmware is asked to (docs/boards.md), or never does.
ONLINE_MAIN = """import json, time
from sqalfw import hello
cfg = json.load(open("config.json"))
print("sqal: device %s boot 1" % cfg["device_id"])
print("sqal: online " + hello.greet(cfg["device_id"]))
while True:
    time.sleep(0.05)
"""
SILENT_MAIN = """import time
print("sqal: link down, retrying")
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def board(tmp_path: Path) -> Iterator[FakeBoard]:
    b = FakeBoard(tmp_path / "flash")
    yield b
    b.close()


def tiny_firmware(root: Path, main: str) -> Path:
    (root / "sqalfw").mkdir(parents=True)
    (root / "sqalfw" / "__init__.py").write_text("VERSION = '0-test'\n")
    (root / "sqalfw" / "hello.py").write_text("def greet(name):\n    return 'as ' + name\n")
    (root / "main.py").write_text(main)
    return root


def board_files(flash: Path) -> dict[str, bytes]:
    return {p.relative_to(flash).as_posix(): p.read_bytes() for p in flash.rglob("*") if p.is_file()}


def quiet(_: str) -> None:
    pass


def test_deploy_copies_every_file_and_config_byte_for_byte(board: FakeBoard, tmp_path: Path) -> None:
    blob = os.urandom(86016)  # the VL53L8 ULD blob's size
    (tmp_path / "fw.bin").write_bytes(blob)
    cfg = build_config(CONFIG)
    plan = make_plan(board.port, cfg, sensor_firmware=tmp_path / "fw.bin", wait_online=False)
    result = deploy(plan, say=quiet)

    expected = {f.remote: f.data for f in collect_files(FIRMWARE_DIR)}
    expected["config.json"] = cfg
    expected["vl53l8cx_fw.bin"] = blob
    landed = board_files(board.flash_dir)
    assert sorted(landed) == sorted(expected)  # nothing missing, no .tmp left behind
    for name, data in expected.items():
        assert landed[name] == data, name
    assert json.loads(landed["config.json"]) == CONFIG
    assert sorted(result.copied) == sorted(expected) and result.unchanged == []
    assert board.soft_reboots >= 2  # raw-REPL entry, then the reset that starts main.py


def test_second_deploy_copies_only_what_changed(board: FakeBoard, tmp_path: Path) -> None:
    fw = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = build_config(CONFIG)
    deploy(make_plan(board.port, cfg, firmware_dir=fw, wait_online=False), say=quiet)

    again = deploy(make_plan(board.port, cfg, firmware_dir=fw, wait_online=False), say=quiet)
    assert again.copied == []
    assert "sqalfw/app.py" in again.unchanged and "config.json" in again.unchanged

    (fw / "sqalfw" / "backoff.py").write_text((fw / "sqalfw" / "backoff.py").read_text() + "\n# changed\n")
    cfg2 = build_config(dict(CONFIG, location="Ligne B - Landes"))
    writes_before = sum("open('sqalfw/backoff.py.tmp'" in c for c in board.commands)
    third = deploy(make_plan(board.port, cfg2, firmware_dir=fw, wait_online=False), say=quiet)
    assert sorted(third.copied) == ["config.json", "sqalfw/backoff.py"]
    assert (board.flash_dir / "sqalfw" / "backoff.py").read_bytes() == (fw / "sqalfw" / "backoff.py").read_bytes()
    assert (board.flash_dir / "config.json").read_bytes() == cfg2
    assert sum("open('sqalfw/backoff.py.tmp'" in c for c in board.commands) == writes_before + 1
    # nothing else was opened for writing in the third deploy
    assert sum(".tmp', 'wb')" in c for c in board.commands) == len(collect_files(fw)) + 1 + 2


def test_follows_the_log_until_online_even_over_a_running_app(board: FakeBoard, tmp_path: Path) -> None:
    fw = tiny_firmware(tmp_path / "fw", ONLINE_MAIN)
    plan = make_plan(board.port, build_config(CONFIG), firmware_dir=fw, timeout_s=20)
    lines: list[str] = []
    first = deploy(plan, say=lines.append)
    assert first.online_line is not None and first.online_line.strip() == "sqal: online as ESP32_TEST_01"
    assert "sqal: device ESP32_TEST_01 boot 1" in [x.strip() for x in lines]
    # main.py is still running on the board: a redeploy interrupts it and still works
    second = deploy(plan, say=quiet)
    assert second.copied == [] and second.online_line is not None


def test_timeout_shows_the_last_lines(board: FakeBoard, tmp_path: Path) -> None:
    fw = tiny_firmware(tmp_path / "fw", SILENT_MAIN)
    plan = make_plan(board.port, build_config(CONFIG), firmware_dir=fw, timeout_s=2)
    with pytest.raises(DeployError) as err:
        deploy(plan, say=quiet)
    msg = str(err.value)
    assert "did not report online within 2 s" in msg and "sqal: link down, retrying" in msg


def test_mpy_modules_load_on_micropython_and_replace_stale_py(board: FakeBoard, tmp_path: Path) -> None:
    fw = tiny_firmware(tmp_path / "fw", ONLINE_MAIN)
    deploy(make_plan(board.port, build_config(CONFIG), firmware_dir=fw, wait_online=False), say=quiet)
    assert (board.flash_dir / "sqalfw" / "hello.py").exists()

    result = deploy(make_plan(board.port, build_config(CONFIG), firmware_dir=fw, mpy=True, timeout_s=20),
                    say=quiet)
    assert "sqalfw/hello.mpy" in result.copied and "main.py" in result.unchanged
    assert sorted(result.removed) == ["sqalfw/__init__.py", "sqalfw/hello.py"]
    assert not (board.flash_dir / "sqalfw" / "hello.py").exists()
    assert (board.flash_dir / "sqalfw" / "hello.mpy").read_bytes()[:1] == b"M"
    assert result.online_line is not None and "as ESP32_TEST_01" in result.online_line  # imported the .mpy


def test_bad_config_names_the_field() -> None:
    with pytest.raises(DeployError, match="device_id"):
        build_config(dict(CONFIG, device_id="x"))
    with pytest.raises(DeployError, match="broker_url"):
        build_config(dict(CONFIG, broker_url="http://nope"))


def test_missing_sensor_firmware_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="sensor firmware .* not found"):
        make_plan("/dev/null", build_config(CONFIG), sensor_firmware=tmp_path / "nope.bin")


def test_board_without_micropython_is_a_clear_error(tmp_path: Path) -> None:
    master, slave = os.openpty()  # a port where nothing answers
    try:
        plan = make_plan(os.ttyname(slave), build_config(CONFIG), wait_online=False)
        with pytest.raises(DeployError, match="did not answer the MicroPython raw REPL"):
            deploy(plan, say=quiet)
    finally:
        os.close(master)
        os.close(slave)


def test_cli_dry_run_hides_secrets(board: FakeBoard) -> None:
    res = CliRunner().invoke(board_app, [
        "deploy", "--port", board.port, "--device-id", "ESP32_TEST_01", "--wifi-ssid", "lab",
        "--wifi-password", "wifi-secret", "--broker", "mqtt://ESP32_TEST_01:brokerpw@192.0.2.10:1883", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "copy sqalfw/app.py" in res.output and "soft reset" in res.output
    assert "wifi-secret" not in res.output and "brokerpw" not in res.output
    assert board.commands == [] and not any(board.flash_dir.iterdir())


def test_cli_set_adds_validated_config_fields(board: FakeBoard) -> None:
    base = ["deploy", "--port", board.port, "--device-id", "ESP32_TEST_01", "--wifi-ssid", "lab",
            "--wifi-password", "pw", "--broker", "mqtt://127.0.0.1:1883", "--dry-run"]
    ok = CliRunner().invoke(board_app, base + ["--set", "i2c_sda=8", "--set", "i2c_scl=9"])
    assert ok.exit_code == 0, ok.output
    assert '"i2c_sda": 8' in ok.output and '"i2c_scl": 9' in ok.output
    bad = CliRunner().invoke(board_app, base + ["--set", "i2c_sda=99"])
    assert bad.exit_code == 1 and "i2c_sda" in bad.output
