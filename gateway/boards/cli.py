"""`sqal board ...`: list ports, flash MicroPython, make the ToF files, deploy the firmware, provision MQTT
credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

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
    n = 0
    for s in steps:
        if s.startswith("  "):  # a detail of the step above
            console.print(f"     {s.strip()}", highlight=False)
            continue
        n += 1
        console.print(f"  {n}. {s}", highlight=False)


@board_app.command("list")
def list_cmd(
    esp32_only: Annotated[bool, typer.Option("--esp32", help="Only ports that look like ESP32 boards.")] = False,
) -> None:
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
    port: Annotated[str, typer.Option("--port", "-p", help="Serial port (see 'sqal board list').")],
    image: Annotated[Path, typer.Option("--image", help="firmware.bin of the SQAL image (docs/boards.md, "
                                        "'Build the SQAL image'), or a stock MicroPython .bin.")],
    chip: Annotated[str | None, typer.Option("--chip", help="esp32, esp32s2, esp32s3 or esp32c3 "
                                             "(default: detect).")] = None,
    baud: Annotated[int, typer.Option("--baud", help="Baud rate for writing (115200 if the link is poor).")] = 460800,
    no_erase: Annotated[bool, typer.Option("--no-erase", help="Do not erase the flash first.")] = False,
    connect_mode: Annotated[str, typer.Option("--connect-mode", hidden=True)] = "default-reset",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each step without touching the port.")] = False,
) -> None:
    """Write MicroPython to a board with esptool: detect/check chip, erase, write, verify, reset."""
    from gateway.boards.flash import FlashPlan, frozen_sqal_modules, image_kind, read_image
    from gateway.boards.flash import flash as run_flash

    plan = FlashPlan(port=port, image=image, chip=chip, baud=baud, erase=not no_erase, connect_mode=connect_mode)
    try:
        if dry_run:
            if image.is_file():
                data, built_for = read_image(image, plan.chip)
                plan.chip = plan.chip or built_for  # show the real offset when the image tells
                console.print(image_kind(frozen_sqal_modules(data)), highlight=False, markup=False)
            _steps(f"flash {image} to {port}", plan.steps())
            return
        result = run_flash(plan, say=lambda s: console.print(s, highlight=False, markup=False))
    except BoardError as e:
        _fail(e)
    what = "The SQAL image" if result.sqal_modules else "Stock MicroPython"
    console.print(f"[green]{what} written to the {result.chip} on {port} at 0x{result.offset:x} "
                  f"({result.size} bytes) and verified.[/green] Next: 'sqal board provision', then 'sqal board deploy'.")


@board_app.command("tof-files")
def tof_files(
    header: Annotated[Path, typer.Option("--header", help="Your copy of ST's vl53l8cx_buffers.h (VL53L8CX ULD "
                                         "driver; ST licence: keep it and the output out of git).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the blob and its .tables into.")],
    name: Annotated[str, typer.Option("--name", help="Blob file name (= config tof_firmware_path; the tables "
                                      "are <name>.tables).")] = "vl53l8cx_fw.bin",
) -> None:
    """Write the VL53L8 ULD firmware blob and its tables file from ST's vl53l8cx_buffers.h."""
    from gateway.boards.tof_files import convert, write_files

    try:
        blob, tables = write_files(convert(header), out, name)
    except BoardError as e:
        _fail(e)
    for path in (blob, tables):
        console.print(f"wrote {path} ({path.stat().st_size} bytes)", highlight=False, markup=False)
    console.print(f"[green]Next:[/green] sqal board deploy ... --sensor-firmware {blob} (its .tables goes "
                  "along). Both files are ST's code: do not commit them.", highlight=False, soft_wrap=True)


@board_app.command()
def deploy(
    port: Annotated[str, typer.Option("--port", "-p", help="Serial port of the board.")],
    device_id: Annotated[str, typer.Option("--device-id", help="Device id, e.g. ESP32_LL_01.")],
    wifi_ssid: Annotated[str, typer.Option("--wifi-ssid")],
    wifi_password: Annotated[str, typer.Option("--wifi-password", prompt=True, hide_input=True)],
    broker: Annotated[str, typer.Option("--broker", help="mqtt://ID:PASSWORD@host:port as printed by provision.")],
    location: Annotated[str, typer.Option("--location", help="Where the device is (free text).")] = "",
    sensor_firmware: Annotated[Path | None, typer.Option(
        "--sensor-firmware", help="VL53L8 ULD blob made by 'sqal board tof-files'; its <blob>.tables beside it "
        "is copied too.")] = None,
    tof_header: Annotated[Path | None, typer.Option(
        "--tof-header", help="ST's vl53l8cx_buffers.h: make the blob and tables from it and copy both "
        "(instead of --sensor-firmware).")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Other config.json field, KEY=VALUE (JSON value or text), e.g. --set i2c_sda=8 "
        "--set i2c_scl=9. Repeatable.")] = None,
    py: Annotated[bool, typer.Option("--py", help="On a stock image, send the modules as .py sources "
                                     "(debugging; needs more heap than the default .mpy).")] = False,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not follow the log until the device is online.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the online line.")] = 90.0,
    online_pattern: Annotated[str | None, typer.Option("--online-pattern",
                                                       help="Regex of the log line meaning online.")] = None,
    baud: Annotated[int, typer.Option("--baud")] = 115200,
    firmware_dir: Annotated[Path | None, typer.Option("--firmware-dir", hidden=True)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each step without touching the port.")] = False,
    ota_key: Annotated[str | None, typer.Option("--ota-key", help="The release public key (64 hex chars) the "
                                                "board verifies updates with (docs/ota.md); default "
                                                "SQAL_OTA_PUBLIC_KEY. Without one the board refuses every "
                                                "update.")] = None,
) -> None:
    """Copy the firmware and config.json to a MicroPython board, reset it, wait until it is online.

    On the SQAL image (firmware frozen in) only boot.py, main.py, config.json and the ToF files are
    copied; on a stock image the sqalfw package goes too, as .mpy, if the board has the heap for it.
    """
    from gateway.boards import deploy as dep

    values: dict[str, object] = {"device_id": device_id, "location": location, "wifi_ssid": wifi_ssid,
                                 "wifi_password": wifi_password, "broker_url": broker}
    for item in settings or []:
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
        if ota_key is None:
            from gateway.config import Settings
            ota_key = Settings().ota_public_key
        plan = dep.make_plan(port, cfg, firmware_dir=firmware_dir or dep.FIRMWARE_DIR,
                             sensor_firmware=sensor_firmware, tof_header=tof_header, py=py, ota_key=ota_key, **opts)
        if dry_run:
            _steps(f"deploy to {port}", plan.steps())
            shown = json.loads(cfg)
            shown["wifi_password"] = "***"
            from sqalfw.urls import hide_password
            shown["broker_url"] = hide_password(shown["broker_url"])
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
    device_id: Annotated[str, typer.Option("--device-id", help="Device id, e.g. ESP32_LL_01.")],
    broker_host: Annotated[str, typer.Option("--broker-host", help="The engine's MQTT address as the board "
                                             "reaches it.")] = "127.0.0.1",
    broker_port: Annotated[int, typer.Option("--broker-port")] = 1883,
    tls: Annotated[bool, typer.Option("--tls", help="The board connects with mqtts://.")] = False,
    rotate: Annotated[bool, typer.Option("--rotate", help="Issue a new password for an existing device.")] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="Delete the device's credentials.")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="SQAL data dir (default: SQAL_DATA_DIR).")]
    = None,
) -> None:
    """Create, rotate (--rotate) or revoke (--revoke) a device's MQTT credentials on the message engine.

    They go into <data dir>/mqtt/users.json (hashed), which the engine's auth callout reads at every
    connection: the change applies to the device's next connection, with no reload.
    """
    from gateway.auth import is_loopback, mqtt_auth_enabled
    from gateway.boards.provision import CredentialStore
    from gateway.config import get_settings

    settings = get_settings()
    root = data_dir or settings.data_dir
    store = CredentialStore(root / "mqtt")
    try:
        if revoke:
            store.revoke(device_id)
        else:
            p = store.provision(device_id, broker_host, broker_port, rotate=rotate, tls=tls)
    except BoardError as e:
        _fail(e)
    if revoke:
        console.print(f"[green]Revoked {device_id}[/green]: the engine refuses its next connection (one already "
                      "open stays until the device reconnects).", highlight=False)
        return
    verb = "New password for" if p.rotated else "Credentials created for"
    console.print(f"[green]{verb} {p.device_id}[/green] (stored hashed in {store.users_path}); the engine checks "
                  "them at the device's next connection, no reload.", highlight=False)
    if p.rotated:
        console.print("The old password stops working at the device's next connection: deploy the new one.",
                      highlight=False)
    if is_loopback(broker_host):
        errors.print(f"note: {broker_host} is this machine's loopback address, which a board cannot reach: pass "
                     "--broker-host with this machine's address on the boards' network.", highlight=False)
    if settings.nats_url:
        console.print(f"External engine: the auth callout must run for it (python -m gateway.nats.auth_callout "
                      f"--data-dir {root} --server <engine URL>; docs/security.md).", highlight=False, soft_wrap=True)
    elif not mqtt_auth_enabled(settings):
        errors.print("note: this gateway's embedded engine does not authenticate devices (SQAL_MQTT_AUTH is not "
                     "true and its MQTT listener is on loopback): set SQAL_MQTT_AUTH=true, or bind "
                     "SQAL_MQTT_EMBEDDED_HOST to the boards' network (docs/security.md).", highlight=False)
    console.print("Broker URL (the password is shown only now):", highlight=False)
    console.print(f"  {p.broker_url}", highlight=False, markup=False, soft_wrap=True)
    console.print("Deploy with:", highlight=False)
    console.print(f"  sqal board deploy --port PORT --device-id {p.device_id} --wifi-ssid SSID "
                  f"--broker '{p.broker_url}'", highlight=False, markup=False, soft_wrap=True)
