"""`sqal board ...`: list ports, flash MicroPython, deploy the firmware, provision MQTT credentials."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from gateway.boards import BoardError

board_app = typer.Typer(name="board", help="Flash, deploy and provision real ESP32 boards.", no_args_is_help=True)
console = Console()
# Errors go to stderr unwrapped: a path or a URL cut across lines cannot be copied or searched for.
errors = Console(stderr=True, soft_wrap=True)


def _fail(e: BoardError) -> None:
    errors.print(f"[red]error:[/red] {e}", highlight=False)
    raise typer.Exit(1)


def _steps(title: str, steps: list[str]) -> None:
    console.print(f"[bold]{title}[/bold] (dry run: the port is not touched)")
    for i, s in enumerate(steps, 1):
        console.print(f"  {i}. {s}", highlight=False)


@board_app.command("list")
def list_cmd(esp32_only: bool = typer.Option(False, "--esp32", help="Only ports that look like ESP32 boards.")) -> None:
    """Serial ports; the ones with an ESP32 board's USB bridge are marked."""
    from gateway.boards.ports import list_serial_ports

    ports = list_serial_ports(only_esp32=esp32_only)
    if not ports:
        console.print("no serial ports found: plug the board in with a data (not charge-only) USB cable")
        return
    table = Table("port", "ESP32?", "USB id", "bridge", "description", "serial")
    for p in ports:
        table.add_row(p.device, "yes" if p.esp32_like else "", p.usb_id, p.bridge or "", p.description,
                      p.serial_number or "")
    console.print(table)


@board_app.command()
def flash(
    port: str = typer.Option(..., "--port", "-p", help="Serial port (see 'sqal board list')."),
    image: Path = typer.Option(..., "--image", help="MicroPython .bin downloaded from micropython.org."),
    chip: str = typer.Option(None, "--chip", help="esp32, esp32s2, esp32s3 or esp32c3 (default: detect)."),
    baud: int = typer.Option(460800, "--baud", help="Baud rate for writing (115200 if the link is poor)."),
    no_erase: bool = typer.Option(False, "--no-erase", help="Do not erase the flash first."),
    connect_mode: str = typer.Option("default-reset", "--connect-mode", hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each step without touching the port."),
) -> None:
    """Write MicroPython to a board with esptool: detect/check chip, erase, write, verify, reset."""
    from gateway.boards.flash import FlashPlan, read_image
    from gateway.boards.flash import flash as run_flash

    plan = FlashPlan(port=port, image=image, chip=chip, baud=baud, erase=not no_erase, connect_mode=connect_mode)
    try:
        if dry_run:
            if plan.chip is None and image.is_file():
                plan.chip = read_image(image, None)[1]  # show the real offset when the image tells
            _steps(f"flash {image} to {port}", plan.steps())
            return
        result = run_flash(plan, say=lambda s: console.print(s, highlight=False))
    except BoardError as e:
        _fail(e)
    console.print(f"[green]MicroPython written to the {result.chip} on {port} at 0x{result.offset:x} "
                  f"({result.size} bytes) and verified.[/green] Next: 'sqal board provision', then 'sqal board deploy'.")


@board_app.command()
def deploy(
    port: str = typer.Option(..., "--port", "-p", help="Serial port of the board."),
    device_id: str = typer.Option(..., "--device-id", help="Device id, e.g. ESP32_LL_01."),
    location: str = typer.Option("", "--location", help="Where the device is (free text)."),
    wifi_ssid: str = typer.Option(..., "--wifi-ssid"),
    wifi_password: str = typer.Option(..., "--wifi-password", prompt=True, hide_input=True),
    broker: str = typer.Option(..., "--broker", help="mqtt://ID:PASSWORD@host:port as printed by provision."),
    sensor_firmware: Path = typer.Option(None, "--sensor-firmware", help="VL53L8 ULD firmware blob to copy."),
    settings: list[str] = typer.Option([], "--set", help="Other config.json field, KEY=VALUE (JSON value "
                                       "or text), e.g. --set i2c_sda=8 --set i2c_scl=9. Repeatable."),
    mpy: bool = typer.Option(False, "--mpy", help="Compile modules to .mpy with mpy-cross (less board RAM)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not follow the log until the device is online."),
    timeout: float = typer.Option(90.0, "--timeout", help="Seconds to wait for the online line."),
    online_pattern: str = typer.Option(None, "--online-pattern", help="Regex of the log line meaning online."),
    baud: int = typer.Option(115200, "--baud"),
    firmware_dir: Path = typer.Option(None, "--firmware-dir", hidden=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print each step without touching the port."),
) -> None:
    """Copy the firmware and config.json to a MicroPython board, reset it, wait until it is online."""
    from gateway.boards import deploy as dep

    values: dict[str, object] = {"device_id": device_id, "location": location, "wifi_ssid": wifi_ssid,
                                 "wifi_password": wifi_password, "broker_url": broker}
    for item in settings:
        key, sep, text = item.partition("=")
        if not sep or not key:
            errors.print(f"[red]error:[/red] --set {item!r}: expected KEY=VALUE", highlight=False)
            raise typer.Exit(2)
        try:
            values[key.strip()] = json.loads(text)
        except ValueError:
            values[key.strip()] = text
    try:
        cfg = dep.build_config(values)
        opts: dict[str, object] = {"baud": baud, "wait_online": not no_wait, "timeout_s": timeout}
        if online_pattern:
            opts["online_pattern"] = online_pattern
        plan = dep.make_plan(port, cfg, firmware_dir=firmware_dir or dep.FIRMWARE_DIR,
                             sensor_firmware=sensor_firmware, mpy=mpy, **opts)
        if dry_run:
            _steps(f"deploy to {port}", plan.steps())
            shown = json.loads(cfg)
            shown["wifi_password"] = "***"
            from sqalfw.config import _hide_pass
            shown["broker_url"] = _hide_pass(shown["broker_url"])
            console.print("config.json (secrets hidden): " + json.dumps(shown, sort_keys=True), highlight=False)
            return
        result = dep.deploy(plan, say=lambda s: console.print(s, highlight=False, markup=False))
    except BoardError as e:
        _fail(e)
    console.print(f"[green]deployed: {len(result.copied)} file(s) copied, {len(result.unchanged)} unchanged.[/green]")
    if result.online_line:
        console.print(f"[green]{device_id} is online:[/green] {result.online_line}", highlight=False)


@board_app.command()
def provision(
    device_id: str = typer.Option(..., "--device-id", help="Device id, e.g. ESP32_LL_01."),
    broker_host: str = typer.Option("127.0.0.1", "--broker-host", help="Broker address as the board reaches it."),
    broker_port: int = typer.Option(1883, "--broker-port"),
    tls: bool = typer.Option(False, "--tls", help="The board connects with mqtts://."),
    rotate: bool = typer.Option(False, "--rotate", help="Issue a new password for an existing device."),
    data_dir: Path = typer.Option(None, "--data-dir", help="SQAL data dir (default: SQAL_DATA_DIR)."),
) -> None:
    """Create a device's MQTT credentials and write the Mosquitto and amqtt auth/ACL files."""
    from gateway.boards.provision import CredentialStore
    from gateway.config import get_settings

    root = data_dir or get_settings().data_dir
    store = CredentialStore(root / "mqtt")
    try:
        p = store.provision(device_id, broker_host, broker_port, rotate=rotate, tls=tls)
    except BoardError as e:
        _fail(e)
    files = store.write_broker_files()
    verb = "New password for" if p.rotated else "Credentials created for"
    console.print(f"[green]{verb} {p.device_id}[/green] (stored hashed in {store.users_path}).")
    console.print(f"Mosquitto: add 'include_dir' or copy the lines of {files['mosquitto.conf']} into your "
                  "mosquitto.conf, then reload mosquitto (SIGHUP).", highlight=False)
    console.print(f"Embedded broker: plugins config in {files['amqtt.json']}.", highlight=False)
    console.print("The password is shown only now. Deploy with:", highlight=False)
    console.print(f"  sqal board deploy --port PORT --device-id {p.device_id} --wifi-ssid SSID "
                  f"--broker '{p.broker_url}'", highlight=False, markup=False, soft_wrap=True)
