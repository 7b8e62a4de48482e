"""The `sqal` command. Each area adds its own sub-commands here."""

from __future__ import annotations

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


def _run_gateway(host: str | None, port: int | None, banner: bool) -> None:
    """Run the gateway (uvicorn, programmatic) until SIGINT/SIGTERM.

    uvicorn turns both signals into a graceful shutdown that runs the app's lifespan exit: the
    pool closes and the embedded PostgreSQL (if any) is stopped with `pg_ctl stop -m fast`.
    """
    import logging
    import signal

    import uvicorn

    from gateway.app import create_app
    from gateway.config import Settings

    settings = Settings()
    if host is not None:
        settings.http_host = host
    if port is not None:
        settings.http_port = port
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
            await super().startup(sockets=sockets)
            if self.started and banner:
                bound = self.servers[0].sockets[0].getsockname() if self.servers else (settings.http_host, settings.http_port)
                base = f"http://{bound[0]}:{bound[1]}"
                db = app.state.db
                typer.echo(f"SQAL gateway running: {base}")
                typer.echo(f"  API:       {base}/api/lots   (health: {base}/health)")
                typer.echo(f"  API docs:  {base}/docs")
                typer.echo(f"  data dir:  {settings.data_dir}")
                if db.embedded is not None:
                    typer.echo(f"  database:  embedded PostgreSQL {db.embedded.display_dsn}, files in {db.embedded.pgdata}")
                else:
                    typer.echo("  database:  SQAL_DATABASE_URL")
                typer.echo("Press Ctrl-C to stop (the embedded database is stopped cleanly).")

    config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port, log_level=settings.log_level.lower(),
                            lifespan="on")
    server = Server(config)

    def _terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # uvicorn captures SIGINT/SIGTERM, shuts down gracefully (lifespan exit: pool closed, embedded
    # PostgreSQL stopped), then re-raises the signal to the previous handler: end with exit code 0.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise typer.Exit(1)


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
) -> None:
    """Run the demo: embedded PostgreSQL + gateway; prints the API and docs URLs. Ctrl-C stops it."""
    _run_gateway(host, port, banner=True)


from gateway.boards.cli import board_app  # noqa: E402  (sub-apps register after the root commands)

app.add_typer(board_app, name="board")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
