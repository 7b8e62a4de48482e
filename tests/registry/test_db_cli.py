"""`sqal db status` and `sqal db retention` on a real registry (SQAL_DATABASE_URL)."""

from __future__ import annotations

from typer.testing import CliRunner

from gateway.cli import app


def test_db_status_and_retention(database_url: str) -> None:
    env = {"SQAL_DATABASE_URL": database_url, "SQAL_RETENTION_RAW_DAYS": "9", "COLUMNS": "200"}
    runner = CliRunner()
    done = runner.invoke(app, ["db", "retention"], env=env)
    assert done.exit_code == 0, done.output
    assert "partitions made ahead" in done.output and "nothing past retention (raw 9 days" in done.output
    res = runner.invoke(app, ["db", "status"], env=env)
    assert res.exit_code == 0, res.output
    for text in ("Readings", "sqal_samples", "sqal_sample_raw", "9 days", "730 days", "next drop", "Partitions",
                 "sqal_sample_hours", "lot_events"):
        assert text in res.output, text
