"""`sqal board deploy`: mpremote (as a library) against a fake board on a pty that speaks
MicroPython's raw REPL and executes everything on the real MicroPython unix port.

The fake board is a stock image by default; FakeBoard(frozen_dir=...) makes it a SQAL image whose
frozen sqalfw is that directory (tests/boards/fakeboard.py), and heap= sets its heap."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.boards import deploy as deploy_module
from gateway.boards.cli import board_app
from gateway.boards.deploy import (
    FIRMWARE_DIR,
    REQUIRED_FREE_HEAP,
    DeployError,
    build_config,
    collect_files,
    deploy,
    entry_files,
    make_plan,
    module_files,
)
from tests.boards.fakeboard import FakeBoard
from tests.boards.st_header import expected_tables, header_text, random_arrays

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


def tof_pair(root: Path, name: str = "fw.bin") -> tuple[Path, bytes, bytes]:
    """A blob and its .tables beside it, as 'sqal board tof-files' writes them (random bytes)."""
    blob, tables = os.urandom(86016), os.urandom(1788)
    (root / name).write_bytes(blob)
    (root / (name + ".tables")).write_bytes(tables)
    return root / name, blob, tables


def frozen_image(root: Path, firmware_dir: Path = FIRMWARE_DIR) -> Path:
    """What the SQAL image freezes: the sqalfw package (the fake board's stand-in for '.frozen')."""
    shutil.copytree(firmware_dir / "sqalfw", root / "sqalfw", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def writes(board: FakeBoard) -> list[str]:
    """Every file the board opened for writing."""
    return [c.split("open('", 1)[1].split("'", 1)[0] for c in board.commands if ".tmp', 'wb')" in c]


def test_stock_image_gets_every_file_as_mpy_byte_for_byte(board: FakeBoard, tmp_path: Path) -> None:
    sensor, blob, tables = tof_pair(tmp_path)
    cfg = build_config(CONFIG)
    plan = make_plan(board.port, cfg, sensor_firmware=sensor, wait_online=False)
    result = deploy(plan, say=quiet)

    assert result.board is not None and not result.board.sqal_image
    expected = {f.remote: f.data for f in entry_files(FIRMWARE_DIR) + module_files(FIRMWARE_DIR, mpy=True)}
    sources = sorted(p.relative_to(FIRMWARE_DIR).as_posix() for p in (FIRMWARE_DIR / "sqalfw").rglob("*.py"))
    assert sorted(n for n in expected if n.startswith("sqalfw/")) == [s[:-3] + ".mpy" for s in sources]
    expected["config.json"] = cfg
    expected["vl53l8cx_fw.bin"] = blob
    expected["vl53l8cx_fw.bin.tables"] = tables
    landed = board_files(board.flash_dir)
    assert sorted(landed) == sorted(expected)  # nothing missing, no .tmp left behind
    for name, data in expected.items():
        assert landed[name] == data, name
    assert all(landed[n][:2] == b"M\x06" for n in landed if n.endswith(".mpy"))
    assert json.loads(landed["config.json"]) == CONFIG
    assert sorted(result.copied) == sorted(expected) and result.unchanged == []
    assert board.soft_reboots >= 2  # raw-REPL entry, then the reset that starts main.py


def test_sqal_image_gets_only_entry_config_and_tof_files(tmp_path: Path) -> None:
    """The SQAL image: sqalfw frozen in, a small heap (an ESP32 without PSRAM), and a sqalfw/ left on
    flash by an earlier deploy to a stock image, which would shadow the frozen package."""
    flash = tmp_path / "flash"
    (flash / "sqalfw" / "drivers").mkdir(parents=True)
    (flash / "sqalfw" / "__init__.py").write_text("VERSION = 'stale'\n")
    (flash / "sqalfw" / "app.mpy").write_bytes(b"M\x06stale")
    (flash / "sqalfw" / "drivers" / "vl53l8.py").write_text("# stale\n")
    sensor, blob, tables = tof_pair(tmp_path)
    board = FakeBoard(flash, heap="96k", frozen_dir=frozen_image(tmp_path / "rom"))
    try:
        cfg = build_config(CONFIG)
        said: list[str] = []
        result = deploy(make_plan(board.port, cfg, sensor_firmware=sensor, wait_online=False), say=said.append)
    finally:
        board.close()
    info = result.board
    assert info is not None and info.sqal_image and info.frozen_version == "0.1.0"
    assert info.free_heap < REQUIRED_FREE_HEAP["mpy"]  # no heap check on the SQAL image
    assert any(line.startswith("board: SQAL image (sqalfw 0.1.0 frozen in)") for line in said)
    expected = {f.remote: f.data for f in entry_files(FIRMWARE_DIR)}
    expected.update({"config.json": cfg, "vl53l8cx_fw.bin": blob, "vl53l8cx_fw.bin.tables": tables})
    assert board_files(flash) == expected
    assert not (flash / "sqalfw").exists()
    assert "sqalfw" in result.removed and "sqalfw/drivers/vl53l8.py" in result.removed
    assert sorted(result.copied) == sorted(expected)
    assert not any(w.startswith("sqalfw") for w in writes(board))


def test_sqal_image_runs_the_frozen_package_not_a_stale_copy(tmp_path: Path) -> None:
    fw = tiny_firmware(tmp_path / "fw", ONLINE_MAIN)
    flash = tmp_path / "flash"
    (flash / "sqalfw").mkdir(parents=True)
    (flash / "sqalfw" / "__init__.py").write_text("")
    (flash / "sqalfw" / "hello.py").write_text("def greet(name):\n    return 'stale ' + name\n")
    board = FakeBoard(flash, frozen_dir=frozen_image(tmp_path / "rom", fw))
    try:
        result = deploy(make_plan(board.port, build_config(CONFIG), firmware_dir=fw, timeout_s=20), say=quiet)
    finally:
        board.close()
    assert result.board is not None and result.board.frozen_version == "0-test"
    assert result.online_line is not None and result.online_line.strip() == "sqal: online as ESP32_TEST_01"
    assert sorted(board_files(flash)) == ["config.json", "main.py"]


def test_stock_image_with_too_little_heap_is_refused_and_nothing_copied(tmp_path: Path) -> None:
    sensor, _, _ = tof_pair(tmp_path)
    board = FakeBoard(tmp_path / "flash", heap="100k")
    try:
        with pytest.raises(DeployError) as err:
            deploy(make_plan(board.port, build_config(CONFIG), sensor_firmware=sensor, wait_online=False),
                   say=quiet)
        assert writes(board) == []
    finally:
        board.close()
    msg = str(err.value)
    free = int(msg.split(" has ", 1)[1].split(" bytes", 1)[0])
    assert 90 * 1024 < free < 100 * 1024  # what the board measured, not a figure of ours
    need = REQUIRED_FREE_HEAP["mpy"]
    assert f"has {free} bytes ({free // 1024} KiB) of free heap" in msg
    assert f"sent as .mpy files needs at least {need} bytes ({need // 1024} KiB)" in msg
    assert "Nothing was copied. Flash the SQAL image" in msg and "docs/boards.md, 'Build the SQAL image'" in msg
    assert board_files(board.flash_dir) == {}


def test_py_sources_need_more_heap_than_mpy(tmp_path: Path) -> None:
    board = FakeBoard(tmp_path / "flash", heap="150k")  # between the .mpy and the .py requirement
    try:
        cfg = build_config(CONFIG)
        with pytest.raises(DeployError, match=r"sent as \.py files needs at least .* without --py"):
            deploy(make_plan(board.port, cfg, py=True, wait_online=False), say=quiet)
        assert writes(board) == []
        result = deploy(make_plan(board.port, cfg, wait_online=False), say=quiet)
    finally:
        board.close()
    assert REQUIRED_FREE_HEAP["mpy"] <= 150 * 1024 < REQUIRED_FREE_HEAP["py"]
    assert "sqalfw/app.mpy" in result.copied


def test_tof_header_is_converted_and_both_files_arrive(tmp_path: Path) -> None:
    arrays = random_arrays(5)
    header = tmp_path / "vl53l8cx_buffers.h"
    header.write_text(header_text(arrays))
    board = FakeBoard(tmp_path / "flash", frozen_dir=frozen_image(tmp_path / "rom"))
    try:
        cfg = build_config(dict(CONFIG, tof_firmware_path="tof/uld.bin"))
        result = deploy(make_plan(board.port, cfg, tof_header=header, wait_online=False), say=quiet)
    finally:
        board.close()
    landed = board_files(board.flash_dir)
    assert landed["tof/uld.bin"] == arrays["VL53L8CX_FIRMWARE"]
    assert landed["tof/uld.bin.tables"] == expected_tables(arrays)
    assert {"tof/uld.bin", "tof/uld.bin.tables"} <= set(result.copied)


def test_tof_file_errors_are_clear(tmp_path: Path) -> None:
    cfg = build_config(CONFIG)
    (tmp_path / "alone.bin").write_bytes(os.urandom(86016))
    with pytest.raises(DeployError) as err:
        make_plan("/dev/null", cfg, sensor_firmware=tmp_path / "alone.bin")
    assert f"{tmp_path / 'alone.bin.tables'} not found" in str(err.value)
    assert "sqal board tof-files --header vl53l8cx_buffers.h" in str(err.value)

    sensor, _, _ = tof_pair(tmp_path, "short.bin")
    sensor.write_bytes(os.urandom(86015))
    with pytest.raises(DeployError, match=r"short\.bin is 86015 bytes, expected 86016"):
        make_plan("/dev/null", cfg, sensor_firmware=sensor)
    (tmp_path / "short.bin").write_bytes(os.urandom(86016))
    (tmp_path / "short.bin.tables").write_bytes(os.urandom(1000))
    with pytest.raises(DeployError, match=r"short\.bin\.tables is 1000 bytes, expected 1788"):
        make_plan("/dev/null", cfg, sensor_firmware=sensor)
    with pytest.raises(DeployError, match="--sensor-firmware and --tof-header both"):
        make_plan("/dev/null", cfg, sensor_firmware=sensor, tof_header=tmp_path / "x.h")
    arrays = random_arrays()
    del arrays["VL53L8CX_GET_NVM_CMD"]
    (tmp_path / "bad.h").write_text(header_text(arrays))
    with pytest.raises(DeployError, match="VL53L8CX_GET_NVM_CMD not found"):
        make_plan("/dev/null", cfg, tof_header=tmp_path / "bad.h")


def test_second_deploy_copies_only_what_changed(board: FakeBoard, tmp_path: Path) -> None:
    fw = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = build_config(CONFIG)
    deploy(make_plan(board.port, cfg, firmware_dir=fw, wait_online=False), say=quiet)

    again = deploy(make_plan(board.port, cfg, firmware_dir=fw, wait_online=False), say=quiet)
    assert again.copied == []
    assert "sqalfw/app.mpy" in again.unchanged and "config.json" in again.unchanged

    (fw / "sqalfw" / "backoff.py").write_text((fw / "sqalfw" / "backoff.py").read_text() + "\nLIMIT = 3\n")
    cfg2 = build_config(dict(CONFIG, location="Ligne B - Landes"))
    writes_before = writes(board).count("sqalfw/backoff.mpy.tmp")
    third = deploy(make_plan(board.port, cfg2, firmware_dir=fw, wait_online=False), say=quiet)
    assert sorted(third.copied) == ["config.json", "sqalfw/backoff.mpy"]
    new_mpy = next(f.data for f in module_files(fw) if f.remote == "sqalfw/backoff.mpy")
    assert (board.flash_dir / "sqalfw" / "backoff.mpy").read_bytes() == new_mpy
    assert (board.flash_dir / "config.json").read_bytes() == cfg2
    assert writes(board).count("sqalfw/backoff.mpy.tmp") == writes_before + 1
    # nothing else was opened for writing in the third deploy
    assert len(writes(board)) == len(collect_files(fw)) + 1 + 2


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
    deploy(make_plan(board.port, build_config(CONFIG), firmware_dir=fw, py=True, wait_online=False), say=quiet)
    assert (board.flash_dir / "sqalfw" / "hello.py").exists() and not (board.flash_dir / "sqalfw" / "hello.mpy").exists()

    result = deploy(make_plan(board.port, build_config(CONFIG), firmware_dir=fw, timeout_s=20), say=quiet)
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
    with pytest.raises(DeployError, match="sensor firmware .* not found: make it with 'sqal board tof-files"):
        make_plan("/dev/null", build_config(CONFIG), sensor_firmware=tmp_path / "nope.bin")


def test_board_without_micropython_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the same three tries, shorter: 35 s of waiting proves nothing more than 1.5 s
    monkeypatch.setattr(deploy_module, "ENTER_TIMEOUTS_S", (0.5, 0.5, 0.5))
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
    assert "copy sqalfw/app.mpy" in res.output and "soft reset" in res.output
    assert "SQAL image (sqalfw frozen in): remove a stale sqalfw/ directory" in res.output
    assert f"stock image: refuse below {REQUIRED_FREE_HEAP['mpy'] // 1024} KiB of free heap" in res.output
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


def test_a_board_still_booting_is_tried_again(tmp_path: Path) -> None:
    # what reaches it in its first 6 s is lost (longer than the first try's 5 s): the deploy
    # interrupts and tries again instead of giving up
    b = FakeBoard(tmp_path / "flash", deaf_s=6)
    try:
        fw = tiny_firmware(tmp_path / "fw", ONLINE_MAIN)
        result = deploy(make_plan(b.port, build_config(CONFIG), firmware_dir=fw, py=True, wait_online=False),
                        say=quiet)
        assert "main.py" in result.copied and (b.flash_dir / "main.py").exists()
    finally:
        b.close()


def test_cli_puts_the_release_key_on_the_board_from_the_option_or_the_gateways_setting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--ota-key (or SQAL_OTA_PUBLIC_KEY) lands in ota_key.pub, the file the frozen installer
    verifies releases with (firmware/sqalboot/install.py KEY); a malformed key touches nothing."""
    key_file = re.search(r'^KEY = "([^"]+)"', (FIRMWARE_DIR / "sqalboot" / "install.py").read_text(), re.MULTILINE)
    assert key_file is not None
    sensor, _, _ = tof_pair(tmp_path)
    base = ["deploy", "--device-id", "ESP32_TEST_01", "--wifi-ssid", "lab", "--wifi-password", "pw",
            "--broker", "mqtt://127.0.0.1:1883", "--sensor-firmware", str(sensor), "--no-wait"]
    key_option, key_setting = "AB" * 32, "0f" * 32
    for name, extra, env, expected in (("option", ["--ota-key", key_option], "", key_option.lower()),
                                       ("setting", [], key_setting, key_setting)):
        if env:
            monkeypatch.setenv("SQAL_OTA_PUBLIC_KEY", env)
        board = FakeBoard(tmp_path / name, frozen_dir=frozen_image(tmp_path / f"rom-{name}"))
        try:
            res = CliRunner().invoke(board_app, [*base, "--port", board.port, *extra])
        finally:
            board.close()
        assert res.exit_code == 0, res.output
        assert (tmp_path / name / key_file.group(1)).read_bytes() == expected.encode(), name

    board = FakeBoard(tmp_path / "bad", frozen_dir=frozen_image(tmp_path / "rom-bad"))
    try:
        res = CliRunner().invoke(board_app, [*base, "--port", board.port, "--ota-key", "ab" * 31])
    finally:
        board.close()
    assert res.exit_code == 1 and "--ota-key: the release public key is 64 hex characters" in res.output
    assert board.commands == [] and not any((tmp_path / "bad").iterdir())
