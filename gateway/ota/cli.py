"""`sqal release ...` (on the release machine: the key and the signed releases) and `sqal rollout ...`
(against a running gateway's API: releases registered, rollouts started, followed, retried,
rolled back). docs/ota.md, "Commands"."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gateway.ota import release as rel

release_app = typer.Typer(name="release", help="Signed releases of the board application (over-the-air updates).",
                          no_args_is_help=True)
rollout_app = typer.Typer(name="rollout", help="Roll a release out to boards through a running gateway.",
                          no_args_is_help=True)
console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _fail(msg: str) -> None:
    errors.print(f"[red]error:[/red] {msg}", highlight=False)
    raise typer.Exit(1)


def _data_dir() -> Path:
    from gateway.config import Settings

    return Settings().data_dir


@release_app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Where the private key goes (PEM, 0600): on the release "
                                      "machine, never in the repository nor in the gateway's data directory.")],
) -> None:
    """Make the release key pair; prints the public key boards and the gateway are given."""
    try:
        pub = rel.keygen(out, _data_dir())
    except rel.ReleaseError as e:
        _fail(str(e))
    console.print(f"private key: {out} (keep it offline; whoever holds it can update every board)", highlight=False)
    console.print(f"public key:  {pub}", highlight=False)
    console.print("boards: put it in ota_key.pub on their flash; gateway: SQAL_OTA_PUBLIC_KEY", highlight=False)


@release_app.command()
def build(
    version: Annotated[str, typer.Option("--version", help="The release's version, e.g. 0.2.0.")],
    key: Annotated[Path, typer.Option("--key", help="The release private key (sqal release keygen).")],
    out: Annotated[Path, typer.Option("--out", help="Releases directory: the release goes to OUT/<version>/ "
                                      "(the gateway's SQAL_OTA_RELEASES_DIR, or copied there).")],
    min_version: Annotated[str | None, typer.Option("--min-version", help="Once a board confirmed this "
                                                    "release it refuses any release below this version.")] = None,
    source: Annotated[Path, typer.Option("--source", help="The sqalfw package to build from.")] = rel.SOURCE,
) -> None:
    """Compile sqalfw to .mpy, write the manifest (version, files, sizes, SHA-256) and sign it."""
    try:
        r = rel.build(version, rel.load_private(key, _data_dir()), out, source=source, min_version=min_version)
    except (rel.ReleaseError, OSError) as e:
        _fail(str(e))
    console.print(f"release {r.version}: {len(r.files)} files, {r.size} bytes, in {r.directory}", highlight=False)


@release_app.command()
def verify(
    directory: Annotated[Path, typer.Argument(help="A release directory (OUT/<version>).")],
    public_key: Annotated[str, typer.Option("--public-key", envvar="SQAL_OTA_PUBLIC_KEY",
                                            help="The release public key, 64 hex chars.")],
) -> None:
    """Check a release as a board will: the manifest's signature, every file's size and SHA-256."""
    try:
        r = rel.load(directory)
        rel.verify(r, rel.parse_public(public_key))
    except (rel.ReleaseError, OSError, ValueError) as e:
        _fail(str(e))
    console.print(f"release {r.version}: signature and {len(r.files)} files verified", highlight=False)


# ---- against the gateway ----

def _api(base: str, token: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail")
        except (ValueError, AttributeError):
            detail = e.reason
        _fail(f"{method} {path}: {e.code} {detail}")
    except urllib.error.URLError as e:
        _fail(f"the gateway at {base} does not answer: {e.reason}")


def _token() -> str | None:
    from gateway.auth import resolve_api_token
    from gateway.config import Settings

    token, _source = resolve_api_token(Settings())
    return token


URL = Annotated[str, typer.Option("--url", help="The gateway's base URL.")]


def _show(r: dict[str, Any]) -> None:
    console.print(f"rollout {r['id']}: release {r['version']}, {r['state']}"
                  + (f" ({r['reason']})" if r.get("reason") else "")
                  + f", waves {r['waves']}, counts {r.get('counts', {})}", highlight=False)
    if "devices" in r:
        table = Table("device", "wave", "state", "progress", "attempts", "reason")
        for d in r["devices"]:
            table.add_row(d["device_id"], str(d["wave"] or ""), d["state"], f"{d['progress']} %",
                          str(d["attempts"]), d["reason"] or "")
        console.print(table)


@rollout_app.command("register")
def register(version: Annotated[str, typer.Argument(help="A release in the gateway's releases directory.")],
             url: URL = "http://127.0.0.1:8000") -> None:
    """Have the gateway verify a release with its public key and register it."""
    r = _api(url, _token(), "POST", "/api/ota/releases", {"version": version})
    console.print(f"release {r['version']} registered: {r['files']} files, {r['size']} bytes", highlight=False)


@rollout_app.command("start")
def start(
    version: Annotated[str, typer.Argument(help="A registered release.")],
    site: Annotated[str | None, typer.Option("--site", help="Only the devices of this site.")] = None,
    from_version: Annotated[str | None, typer.Option("--from-version", help="Only devices running this.")] = None,
    device: Annotated[list[str] | None, typer.Option("--device", help="Only these devices (repeat).")] = None,
    waves: Annotated[str, typer.Option("--waves", help="Cumulative wave sizes, comma-separated.")] = "1,10%,100%",
    max_failures: Annotated[float, typer.Option("--max-failures", help="Stop past this share of failed devices "
                                                "(a number >= 1: this many devices).")] = 0.2,
    probation_s: Annotated[int | None, typer.Option("--probation-s", help="The boards' health-check deadline.")] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Show progress until it ends.")] = True,
    url: URL = "http://127.0.0.1:8000",
) -> None:
    """Roll a release out in waves; only devices that do not run it already are chosen."""
    body: dict[str, Any] = {"version": version, "waves": [w.strip() for w in waves.split(",") if w.strip()],
                            "max_failures": max_failures}
    for k, v in (("site", site), ("from_version", from_version), ("devices", device or None),
                 ("probation_s", probation_s)):
        if v is not None:
            body[k] = v
    r = _api(url, _token(), "POST", "/api/ota/rollouts", body)
    _follow(url, int(r["id"])) if follow else _show(r)


def _follow(url: str, rid: int) -> None:
    while True:
        r = _api(url, None, "GET", f"/api/ota/rollouts/{rid}")
        if r["state"] not in ("created", "running"):
            _show(r)
            return
        console.print(f"rollout {rid}: {r['state']}, {r['counts']}", highlight=False)
        time.sleep(2)


@rollout_app.command("show")
def show(rollout_id: int, url: URL = "http://127.0.0.1:8000") -> None:
    """A rollout: every device's state, progress and reason."""
    _show(_api(url, None, "GET", f"/api/ota/rollouts/{rollout_id}"))


@rollout_app.command("retry")
def retry(rollout_id: int, url: URL = "http://127.0.0.1:8000") -> None:
    """Send the release again to the rollout's failed devices only."""
    _api(url, _token(), "POST", f"/api/ota/rollouts/{rollout_id}/retry")
    _follow(url, rollout_id)


@rollout_app.command("rollback")
def rollback(rollout_id: int, url: URL = "http://127.0.0.1:8000") -> None:
    """Return the devices the rollout updated to their previous release."""
    _api(url, _token(), "POST", f"/api/ota/rollouts/{rollout_id}/rollback")
    _follow(url, rollout_id)


@rollout_app.command("cancel")
def cancel(rollout_id: int, url: URL = "http://127.0.0.1:8000") -> None:
    """No further wave or device (the ones updating finish)."""
    _show(_api(url, _token(), "POST", f"/api/ota/rollouts/{rollout_id}/cancel"))
