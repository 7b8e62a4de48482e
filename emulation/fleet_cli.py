"""`sqal fleet`: run N emulated SQAL devices against a broker, with live progress and faults.

    sqal fleet --devices 50 --broker mqtt://127.0.0.1:1883 --interval 1 --duration 120 \\
        --fault "broker-outage@30s:10s" --fault "partition@60s:15s/20%" --fault "reboot@90s/5%"

Ctrl-C (or SIGTERM) stops every device gracefully and prints the summary. Fault syntax: see
emulation/faults.py or docs/emulation.md ("Fault injection").
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from emulation import faults as faultlib
from emulation import targets
from emulation.fleet import DeviceStats, Fleet

fleet_app = typer.Typer(
    name="fleet",
    help="Run a fleet of emulated SQAL devices (real firmware on MicroPython) against an MQTT broker.",
    add_completion=False,
    invoke_without_command=True,
)

MAX_ROWS = 40  # beyond this the live table shows the first rows and the totals


def _table(fleet: Fleet, stats: list[DeviceStats], elapsed: float, title: str) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in (
        "device",
        "state",
        "boots",
        "sampled",
        "acked",
        "recv",
        "spool",
        "reconn",
        "drop",
        "miss",
        "i2c",
    ):
        t.add_column(col, justify="left" if col in ("device", "state") else "right", no_wrap=True)
    shown = stats[:MAX_ROWS]
    for s in shown:
        t.add_row(
            s.device_id,
            s.state,
            str(s.boots),
            str(s.sampled),
            str(s.acked),
            str(s.received),
            str(s.spool),
            str(s.reconnects),
            str(s.dropped),
            str(s.missing),
            str(s.i2c_errors),
        )
    if len(stats) > len(shown):
        t.add_row(f"... {len(stats) - len(shown)} more", "", "", "", "", "", "", "", "", "", "")
    tot = fleet.totals(stats)
    t.add_row(
        f"TOTAL {tot['devices']}",
        f"{tot['online']} online",
        str(tot["boots"]),
        str(tot["sampled"]),
        str(tot["acked"]),
        str(tot["received"]),
        str(tot["spool"]),
        str(tot["reconnects"]),
        str(tot["dropped"]),
        str(tot["missing"]),
        str(tot["i2c_errors"]),
        style="bold",
    )
    t.caption = f"{elapsed:.0f} s elapsed" + (
        f", faults: {len(fleet.fault_log())} applied" if fleet.faults else ""
    )
    return t


def _summary(console: Console, fleet: Fleet, elapsed: float) -> None:
    stats = fleet.stats()
    console.print(_table(fleet, stats, elapsed, "SQAL fleet summary"))
    tot = fleet.totals(stats)
    console.print(
        f"devices {tot['devices']}  sampled {tot['sampled']}  acked {tot['acked']}  "
        f"received {tot['received']} unique ({tot['duplicates']} duplicates)  "
        f"missing {tot['missing']}  still spooled {tot['spool']}  reconnects {tot['reconnects']}  "
        f"dropped {tot['dropped']}  boots {tot['boots']}"
    )
    bad = [s for s in stats if any(r not in ("stopped", "reset") for _rc, r in s.exits)]
    for s in bad:
        console.print(
            f"[yellow]{s.device_id}: exits {s.exits} (log: {fleet.base_dir / s.device_id / 'device.log'})"
        )
    for t, what, err in fleet.fault_log():
        console.print(f"fault at {t:.1f} s: {what}" + (f" [red]FAILED: {err}" if err else ""))
    if fleet.monitor.bad:
        console.print(
            f"[yellow]{fleet.monitor.bad} message(s) broke the contract; last: {fleet.monitor.last_error}"
        )


@fleet_app.callback(invoke_without_command=True)
def fleet(
    broker: Annotated[list[str], typer.Option(
        "--broker", help="Broker URL, mqtt://host:port or mqtts://host:port. Repeat it for the nodes of a "
        "cluster: every device gets them all and fails over between them (device i starts on node i mod n).")],
    devices: Annotated[int, typer.Option("--devices", "-n", min=1, max=5000, help="Number of devices.")] = 10,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between samples, per device.")
    ] = 1.0,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="Lot quality profile of the scene (default, premium, good, acceptable, low, defective).",
        ),
    ] = "default",
    seed: Annotated[int, typer.Option("--seed", help="Scene seed (device i uses seed*1000+i).")] = 1,
    duration: Annotated[
        float, typer.Option("--duration", min=0.0, help="Run this many seconds, 0 = until Ctrl-C.")
    ] = 0.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="KIND\\[=VALUE]@AT\\[:FOR]\\[/WHO], repeatable, e.g. "
            "broker-outage@30s:10s, partition@20s:15s/25%, reboot@45s/10%, "
            "clock-skew=-3600@10s/all, i2c-errors=0.05@0s:60s/50%.",
        ),
    ] = None,
    telemetry: Annotated[
        float,
        typer.Option(
            "--telemetry",
            min=1.0,
            help="Device telemetry interval (s): the live counters are as fresh as this.",
        ),
    ] = 5.0,
    resolution: Annotated[int, typer.Option("--resolution", help="ToF resolution, 4 or 8.")] = 8,
    proxy: Annotated[
        bool,
        typer.Option(
            "--proxy",
            help="Put the fault proxy between devices and broker even without a broker-outage fault.",
        ),
    ] = False,
    base_dir: Annotated[
        Path | None,
        typer.Option(
            "--base-dir",
            help="Where the flash dirs go (default: a temp dir, removed at the end unless --keep).",
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the flash dirs and device logs.")] = False,
    id_prefix: Annotated[
        str, typer.Option("--id-prefix", help="Device ids are PREFIX_001...")
    ] = "ESP32_FLEET",
    per_process: Annotated[
        int,
        typer.Option(
            "--per-process",
            min=1,
            help="Devices per MicroPython process (default 1: one process per device, a board's "
            "fidelity). K > 1 runs hosts of K devices for large fleets: each keeps its own board, "
            "connection, watchdog and reset, but they share one heap (docs/emulation.md).",
        ),
    ] = 1,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            help="mqtts:// broker: the CA certificate (PEM) that signed the broker's. Each device gets "
            "it as ca.pem on its flash and verifies the broker with it, as a board does.",
        ),
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="The board the devices stand for: unix64 (the fast 64-bit interpreter, default), esp32 "
            "(the ESP32 profile: 32-bit, firmware frozen, 110 KB heap, 2 MiB littlefs flash; built "
            "on first use from ../shared/micropython/) or esp32-psram (the same with a PSRAM heap).",
        ),
    ] = targets.DEFAULT,
) -> None:
    """Start DEVICES emulated devices, show live counters, inject faults, print a summary."""
    console = Console()
    if resolution not in (4, 8):
        raise typer.BadParameter(f"must be 4 or 8, got {resolution}", param_hint="--resolution")
    try:
        f = Fleet(
            devices,
            broker if len(broker) > 1 else broker[0],
            interval=interval,
            profile=profile,
            seed=seed,
            base_dir=base_dir,
            id_prefix=id_prefix,
            telemetry_interval=telemetry,
            resolution=resolution,
            faults=fault or [],
            proxy=True if proxy else None,
            per_process=per_process,
            ca_file=ca,
            target=target,
        )
    except faultlib.FaultError as e:
        raise typer.BadParameter(str(e), param_hint="--fault") from None
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None

    # Ctrl-C and SIGTERM only set a flag that the loops below look at: a KeyboardInterrupt raised
    # at an arbitrary point could land inside a lock the live display holds and hang the stop.
    # A second one while stopping is a power cut for whoever is left.
    asked: list[int] = []

    def _on_signal(signum: int, frame: Any) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        f.abort_start()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        try:
            console.print(
                f"starting {devices} device(s) against {', '.join(broker)}"
                + (f" through the fault proxy {f.proxy.url}" if f.proxy else "")
                + f"; flash dirs in {f.base_dir}",
                soft_wrap=True,
            )
            f.start()
        except ConnectionError as e:
            console.print(f"[red]{e}", soft_wrap=True)  # unwrapped: a URL or path stays whole
            raise typer.Exit(2) from None
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not asked and (not duration or time.monotonic() - t0 < duration):
                live.update(_table(f, f.stats(), time.monotonic() - t0, "SQAL fleet (Ctrl-C stops)"))
                for _ in range(5):  # 0.5 s, looking at the flag every 0.1 s
                    if asked:
                        break
                    time.sleep(0.1)
    finally:
        console.print("stopping every device..." + (" (interrupted)" if asked else ""))
        try:
            f.stop()
        except KeyboardInterrupt:  # a second Ctrl-C: power cut for whoever is left
            for d in f.devices:
                d.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _summary(console, f, time.monotonic() - t0)
    if not keep:
        f.cleanup()


if __name__ == "__main__":
    fleet_app()
