import subprocess
import sys

from typer.testing import CliRunner

from gateway.cli import app


def test_help_lists_the_command_and_reads_well() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "SQAL" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("sqal ")


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
