"""`python -m emulation.run_device`: one emulated SQAL device as a command (the supervisor's catalogue).

A thin wrapper around `emulation.device.EmulatedDevice` (which has no CLI of its own): prepares the
flash directory, boots the real firmware on MicroPython (--target: `unix64`, the 64-bit wheel, or
`esp32` / `esp32-psram`, the emulator's ESP32 profile, docs/emulation.md), copies the device's serial
console (device.log in the flash dir) to stdout so whoever runs this command sees it live, and stops
the device gracefully (firmware publishes `offline`, exits 0) on SIGTERM/SIGINT or after --duration.

Exit codes: 0 stopped (signal or duration), 2 bad arguments, 1 the device process could not run
(on the ESP32 profile: also when the profile cannot be built here; the message says what is missing).
The flash dir persists across runs: the boot counter keeps increasing, so the (device, boot, seq)
dedupe key never repeats. The two kinds of flash (the directory itself on unix64, flash.img in it on
the ESP32 profile) each keep their own state.json; when a flash dir changes target, the boot counter
of the other flash is carried over when it is the higher one (`carry_boot_counter`), so a device
switched between targets does not count its boots from 1 again (its samples would look like
duplicates of the ones already stored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING
from urllib.parse import quote

from emulation import flash_image, targets

if TYPE_CHECKING:
    from emulation.device import EmulatedDevice

PASSWORD_ENV = "SQAL_DEVICE_MQTT_PASSWORD"  # gateway.supervisor.catalogue.DEVICE_PASSWORD_ENV
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,47}$")
POLL_S = 0.2


def with_login(url: str, user: str, password: str) -> str:
    """mqtt://host:port -> mqtt://user:password@host:port (ids and issued passwords are URL-safe)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest.rsplit('@', 1)[-1]}"


def _device_id(text: str) -> str:
    if not DEVICE_ID.match(text):
        raise argparse.ArgumentTypeError(f"device id {text!r} must match {DEVICE_ID.pattern}")
    return text


def _location(text: str) -> str:
    if len(text) > 64 or not text.isprintable():
        raise argparse.ArgumentTypeError("location must be printable and at most 64 characters")
    return text


def _broker(text: str) -> str:
    from sqalfw.urls import parse_broker_url

    try:
        parse_broker_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"broker URL {text!r}: {exc}") from None
    return text


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"interval {text!r} is not a number") from None
    if not 0.1 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"interval must be between 0.1 and 86400 s, got {value}")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"duration {text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"duration must be >= 0 (0 = until stopped), got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    from emulation.peripherals import profiles

    p = argparse.ArgumentParser(prog="python -m emulation.run_device",
                                description="Run one emulated SQAL device (real firmware on MicroPython).")
    p.add_argument("--device-id", type=_device_id, required=True)
    p.add_argument("--location", type=_location, default="")
    p.add_argument("--broker", type=_broker, required=True, help="mqtt://host:port of the broker")
    p.add_argument("--interval", type=_interval, default=30.0, help="seconds between samples")
    p.add_argument("--profile", choices=profiles.names(), default="default", help="quality profile of the scene")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--flash-dir", type=Path, required=True, help="the device's flash (persists across runs)")
    p.add_argument("--duration", type=_duration, default=0.0, help="stop after this many seconds; 0 = until stopped")
    p.add_argument("--target", choices=list(targets.TARGETS), default=targets.DEFAULT,
                   help="the board emulated: unix64 (64-bit wheel, fast) or the ESP32 profile (esp32: 110 KB heap, "
                        "2 MiB littlefs2 flash, no TLS; esp32-psram: 4 MB heap)")
    return p


def _boot_of(raw: bytes | None) -> int:
    try:
        boot = json.loads(raw or b"{}").get("boot", 0)
    except (ValueError, AttributeError):
        return 0
    return boot if isinstance(boot, int) else 0


def carry_boot_counter(device: EmulatedDevice) -> str | None:
    """The other target's state.json onto this target's flash, when its boot counter is higher (see
    the module doc). Returns what was done, for the console; None when nothing was to do."""
    host_state = device.flash_dir / "state.json"
    image = device.flash_dir / "flash.img"
    if device.image is not None:  # this target's flash is the image; the directory's is the other
        if not host_state.exists():
            return None
        dir_state = host_state.read_bytes()
        theirs = _boot_of(dir_state)
        ours = _boot_of(device.read_flash("state.json")) if image.exists() else 0
        if theirs > ours:
            device.put_flash("state.json", dir_state)  # onto the image at power-up, as a deploy would
        host_state.replace(host_state.with_name("state.json.unix64"))  # carried once, kept for reference
        return f"boot counter {theirs} of the unix64 flash carried onto the image" if theirs > ours else None
    if not image.exists():
        return None
    size = image.stat().st_size
    try:
        raw = flash_image.read_file(targets.get("esp32").binary(), image, size, "state.json")
    except Exception as exc:  # noqa: BLE001  (no profile here: the image cannot be read, say so)
        return f"the ESP32 image's state.json could not be read ({exc}): the boot counter may restart"
    theirs = _boot_of(raw)
    if raw is None or theirs <= _boot_of(host_state.read_bytes() if host_state.exists() else None):
        return None
    tmp = host_state.with_name("state.json.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, host_state)
    return f"boot counter {theirs} of the ESP32 image carried onto the unix64 flash"


class _Tail:
    """Copies new bytes of the device log to stdout (the console of the emulated board)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0  # only this run's lines

    def pump(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            self.offset += len(data)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


def _watch_parent(stop: threading.Event) -> None:
    # A second guard next to the supervisor's PR_SET_PDEATHSIG: when our parent goes away (we get
    # re-parented), stop the device instead of running on as an orphan.
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if targets.get(args.target).frozen and args.broker.startswith("mqtts://"):
        p.error(f"target {args.target} is built without TLS (its MicroPython source has no mbedtls): "
                "use an mqtt:// broker, or target unix64 for mqtts://")
    return run(args)


def run(args: argparse.Namespace) -> int:
    from emulation.device import EmulatedDevice

    stop = threading.Event()

    def _signalled(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signalled)
    signal.signal(signal.SIGINT, _signalled)
    # The device's MQTT login, when the broker authenticates, comes through the environment (the
    # gateway's supervisor issues it): argv shows in `ps`. It ends up where a board keeps it, in the
    # flash's config.json, so the flash dir is made private.
    password = os.environ.pop(PASSWORD_ENV, None)
    broker = with_login(args.broker, args.device_id, password) if password else args.broker
    device = EmulatedDevice(args.device_id, args.flash_dir, broker, profile=args.profile, seed=args.seed,
                            interval=args.interval, config={"location": args.location}, target=args.target)
    device.prepare()  # rewrite config.json each run: the options of this run take effect
    if password:
        os.chmod(device.flash_dir, 0o700)
    tail = _Tail(device.flash_dir / "device.log")
    print(f"run_device: {args.device_id} ({args.location or 'no location'}) broker={args.broker} "
          f"interval={args.interval}s profile={args.profile} seed={args.seed} target={args.target} "
          f"flash={device.flash_dir}", flush=True)
    try:
        carried = carry_boot_counter(device)
        if carried:
            print(f"run_device: {carried}", flush=True)
        device.start()
    except Exception as exc:  # noqa: BLE001  (missing interpreter, unwritable flash...: say what, exit 1)
        print(f"run_device: cannot start {args.device_id}: {exc}", flush=True)
        return 1
    threading.Thread(target=_watch_parent, args=(stop,), daemon=True).start()
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    rc = 0
    try:
        while not stop.wait(POLL_S):
            tail.pump()
            if deadline is not None and time.monotonic() >= deadline:
                print(f"run_device: duration {args.duration}s reached, stopping", flush=True)
                break
            if not device.running and device.exits and device.exits[-1][1] == "config_error":
                print("run_device: the firmware refused its configuration (see above)", flush=True)
                rc = 1
                break
    finally:
        code = device.stop()
        tail.pump()
        print(f"run_device: {args.device_id} stopped (firmware exit code {code})", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
