"""`sqal release keygen | build | verify` (gateway/ota/cli.py): the release key kept out of the
repository and of the gateway's data directory, a release built and signed, its verification
passing with the public key and failing with another key or a tampered file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.ota import release as rel

REPO = Path(__file__).resolve().parents[2]


def test_keygen_build_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "gw-data"
    monkeypatch.setenv("SQAL_DATA_DIR", str(data_dir))
    runner = CliRunner()

    # the key is refused inside the repository and inside the gateway's data directory
    for bad in (REPO / "release-key.pem", data_dir / "release-key.pem"):
        r = runner.invoke(app, ["release", "keygen", "--out", str(bad)])
        assert r.exit_code == 1 and not bad.exists(), r.output
    key = tmp_path / "keys" / "release.pem"
    r = runner.invoke(app, ["release", "keygen", "--out", str(key)])
    assert r.exit_code == 0, r.output
    pub = re.search(r"public key:\s+([0-9a-f]{64})", r.output)
    assert pub is not None, r.output
    assert key.stat().st_mode & 0o777 == 0o600
    assert runner.invoke(app, ["release", "keygen", "--out", str(key)]).exit_code == 1  # never overwritten

    out = tmp_path / "releases"
    r = runner.invoke(app, ["release", "build", "--version", "0.5.0", "--key", str(key), "--out", str(out),
                            "--min-version", "0.4.0"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "0.5.0" / "manifest.json").read_bytes())
    assert manifest["version"] == "0.5.0" and manifest["min_version"] == "0.4.0" and manifest["mpy"] == 6
    assert {f["path"] for f in manifest["files"]} >= {"sqalfw/__init__.mpy", "sqalfw/app.mpy"}
    # the release's VERSION is the application's (telemetry and status say it)
    assert b"0.5.0" in (out / "0.5.0" / "sqalfw" / "__init__.mpy").read_bytes()
    assert runner.invoke(app, ["release", "build", "--version", "0.5.0", "--key", str(key),
                               "--out", str(out)]).exit_code == 1  # never rebuilt

    ok = runner.invoke(app, ["release", "verify", str(out / "0.5.0"), "--public-key", pub.group(1)])
    assert ok.exit_code == 0 and "signature and" in ok.output, ok.output
    other = rel.keygen(tmp_path / "keys" / "other.pem")
    r = runner.invoke(app, ["release", "verify", str(out / "0.5.0"), "--public-key", other])
    assert r.exit_code == 1 and "signature does not verify" in r.output, r.output
    f = out / "0.5.0" / "sqalfw" / "codec.mpy"
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    r = runner.invoke(app, ["release", "verify", str(out / "0.5.0"), "--public-key", pub.group(1)])
    assert r.exit_code == 1 and "sqalfw/codec.mpy: does not match the manifest" in r.output, r.output
