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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
