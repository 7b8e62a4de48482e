import os
import re
import shutil
import signal
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from gateway.cli import app
from registry.embedded import EmbeddedPostgres
from tests.fixtures.postgres import make_data_dir


def test_help_lists_the_command_and_reads_well() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "SQAL" in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("sqal ")


def test_console_script_is_installed() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_demo_serves_and_stops_embedded_postgres_on_signal() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        data_dir = make_data_dir("sqal-cli-")
        env = {**os.environ, "SQAL_DATA_DIR": str(data_dir), "SQAL_INGEST_ENABLED": "false"}
        env.pop("SQAL_DATABASE_URL", None)
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "demo", "--port", "0"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            url = None
            deadline = time.monotonic() + 60
            while url is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                assert line, "demo exited before serving"
                m = re.search(r"SQAL gateway running: (http://\S+)", line)
                url = m.group(1) if m else None
            assert url is not None
            assert httpx.get(f"{url}/health").json()["database"] == "ok"
            assert EmbeddedPostgres(data_dir).pid is not None
            proc.send_signal(sig)
            rest, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            assert not EmbeddedPostgres(data_dir).running, f"{sig.name}: embedded PostgreSQL left running"
            # the user is told the stop is under way, then that it is over
            lines = [ln for ln in rest.splitlines() if ln.startswith(("Stopping:", "Stopped."))]
            assert lines and lines[0].startswith("Stopping:") and lines[-1] == "Stopped.", rest
        finally:
            if proc.poll() is None:
                proc.kill()
            EmbeddedPostgres(data_dir).stop()
            shutil.rmtree(data_dir, ignore_errors=True)


def test_board_subcommands_are_registered() -> None:
    result = CliRunner().invoke(app, ["board", "--help"])
    assert result.exit_code == 0
    for sub in ("list", "flash", "deploy", "provision"):
        assert sub in result.output
