"""The `sqal` command. Each area adds its own sub-commands here."""

from __future__ import annotations

import contextlib
from typing import Any

import typer

from gateway import __version__

app = typer.Typer(
    name="sqal",
    help="SQAL: quality control and traceability of foie gras lots, from gavage to consumer.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sqal {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """SQAL command line."""


def _run_gateway(host: str | None, port: int | None, banner: bool, demo_opts: Any = None) -> None:
    """Run the gateway (uvicorn, programmatic) until SIGINT/SIGTERM.

    uvicorn turns both signals into a graceful shutdown that runs the app's lifespan exit: the
    simulators are stopped, the pool closes and the embedded PostgreSQL (if any) is stopped with
    `pg_ctl stop -m fast`. With `demo_opts` (gateway.demo.DemoOptions) the complete_demo scenario
    starts once the server listens, and a live summary runs until the shutdown.
    """
    import asyncio
    import logging
    import os
    import signal

    import uvicorn

    from gateway.app import create_app
    from gateway.config import Settings

    settings = Settings()
    if host is not None:
        settings.http_host = host
    if port is not None:
        settings.http_port = port
    quiet = demo_opts is not None and "SQAL_LOG_LEVEL" not in os.environ  # the live summary needs the terminal
    log_level = "WARNING" if quiet else settings.log_level.upper()
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if demo_opts is not None:
        from gateway import demo as demo_mod

        demo_mod.apply_options(settings, demo_opts)
    from gateway.auth import prepare_api_token

    prepare_api_token(settings, typer.echo)  # SQAL_API_TOKEN or <data dir>/api-token (made on first run)
    app = create_app(settings)

    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level=log_level.lower(),
                            lifespan="on",
                            # the server never buffers a huge frame; the app answers and closes above its own limit
                            ws_max_size=4 * settings.ws_max_message_bytes)
    server = uvicorn.Server(config)

    def announce_started() -> None:
        bound = server.servers[0].sockets[0].getsockname() if server.servers else (settings.http_host,
                                                                                    settings.http_port)
        base = f"http://{bound[0]}:{bound[1]}"
        # the simulators reach this gateway here (port 0 resolved; wildcard -> loopback)
        local = "127.0.0.1" if bound[0] in ("0.0.0.0", "::", "") else bound[0]
        app.state.api_url = f"http://{local}:{bound[1]}"
        if not banner:
            return
        db = app.state.db
        typer.echo(f"SQAL gateway running: {base}")
        typer.echo(f"  API:       {base}/api/lots   (health: {base}/health)")
        typer.echo(f"  API docs:  {base}/docs")
        typer.echo(f"  data dir:  {settings.data_dir}")
        if db.embedded is not None:
            typer.echo(f"  database:  embedded PostgreSQL {db.embedded.display_dsn}, files in {db.embedded.pgdata}")
        else:
            typer.echo("  database:  SQAL_DATABASE_URL")
        typer.echo(f"  web page:  {base}/ui/   (enter the API token there)")
        if demo_opts is not None:
            typer.echo(f"  control:   {base}/api/control-panel/orchestrate/status")
        typer.echo("Press Ctrl-C to stop (simulators and the embedded database are stopped cleanly).")

    async def run_demo() -> None:
        from gateway import demo as demo_mod

        assert demo_opts is not None
        await demo_mod.start(app, demo_opts, typer.echo)
        await demo_mod.live_summary(app)

    async def follow() -> None:
        """Beside the server, through its public state: once it listens, the banner and the demo
        (a task of the app's, which its lifespan stops before the simulators); once it is told to
        stop, say so: a few silent seconds invite a second Ctrl-C, which cuts the clean stop short."""
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        announce_started()
        if demo_opts is not None:
            app.state.tasks.add(asyncio.create_task(run_demo(), name="demo"))
        while not server.should_exit:
            await asyncio.sleep(0.1)
        if banner:
            typer.echo("Stopping: simulators, ingest, then the database (a few seconds)...")

    async def serve() -> None:
        follower = asyncio.create_task(follow())
        try:
            await server.serve()
        finally:
            follower.cancel()
            with contextlib.suppress(BaseException):
                await follower

    def _terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # uvicorn captures SIGINT/SIGTERM, shuts down gracefully (lifespan exit: pool closed, embedded
    # PostgreSQL stopped), then re-raises the signal to the previous handler: end with exit code 0.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise typer.Exit(1)
    if banner:
        typer.echo("Stopped.")


@app.command()
def serve(
    host: str = typer.Option(None, "--host", help="Bind address (default SQAL_HTTP_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, "--port", min=0, max=65535, help="HTTP port (default SQAL_HTTP_PORT, 8000)."),
) -> None:
    """Run the gateway: registry API on PostgreSQL (SQAL_DATABASE_URL, else embedded)."""
    _run_gateway(host, port, banner=False)


@app.command()
def demo(
    host: str = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", min=0, max=65535, help="HTTP port (default 8000)."),
    scenario: bool = typer.Option(True, "--scenario/--no-scenario", help="Start complete_demo (default) or only "
                                  "the gateway."),
    nb_lots: int = typer.Option(3, "--nb-lots", min=1, max=10, help="Lots in gavage at once."),
    acceleration: float = typer.Option(10000, "--acceleration", min=1, max=1_000_000,
                                       help="Simulated time speed-up (10000: a day lasts 8.6 s)."),
    devices: int = typer.Option(4, "--devices", min=1, max=4, help="Emulated SQAL devices (ESP32_DEMO_...)."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, max=3600, help="Seconds between a device's samples."),
    feedbacks_per_hour: float = typer.Option(360, "--feedbacks-per-hour", min=1, max=36000,
                                             help="Consumer feedback rate."),
    inspection_samples: int = typer.Option(10, "--inspection-samples", min=1, max=100000,
                                           help="Samples after which a lot's inspection closes "
                                                "(SQAL_INSPECTION_SAMPLES wins when set)."),
) -> None:
    """Run the demo: embedded PostgreSQL + message engine + gateway, then the complete_demo scenario (gavage ->
    SQAL devices on the real firmware -> consumer feedback, one lot id all the way) with a live summary.
    Ctrl-C stops everything."""
    opts = None
    if scenario:
        from gateway.demo import DemoOptions

        opts = DemoOptions(nb_lots=nb_lots, acceleration=acceleration, nb_sqal_devices=devices, interval=interval,
                           feedbacks_per_hour=feedbacks_per_hour, inspection_samples=inspection_samples)
    _run_gateway(host, port, banner=True, demo_opts=opts)


from gateway.boards.cli import board_app

app.add_typer(board_app, name="board")

from emulation.fleet_cli import fleet_app

app.add_typer(fleet_app, name="fleet")

from gateway.nats.cli import engine_app

app.add_typer(engine_app, name="engine")

from gateway.ota.cli import release_app, rollout_app

app.add_typer(release_app, name="release")
app.add_typer(rollout_app, name="rollout")

from gateway.db_cli import db_app

app.add_typer(db_app, name="db")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
