"""Fixtures for the browser tests: the real gateway as a child process (`sqal serve` with the page
mounted, a real PostgreSQL, the embedded MQTT broker, simulators as its children) and Debian's
Chromium driven by Playwright. A missing Chromium fails the test; nothing here skips."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SQAL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
TOKEN = "web-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebGateway:
    base: str
    token: str
    log_path: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""


@pytest.fixture
def web_gateway(database_url: str, tmp_path: Path) -> Iterator[WebGateway]:
    """The gateway with a fast dispatcher and a small inspection target, so that a lot goes from gavage
    to inspection within the test. Stopped with SIGTERM: the gateway stops its simulators itself."""
    port = free_port()
    data_dir = tmp_path / "gw"
    data_dir.mkdir()
    log_path = data_dir / "gateway.log"
    env = dict(os.environ, SQAL_DATABASE_URL=database_url, SQAL_DATA_DIR=str(data_dir), SQAL_API_TOKEN=TOKEN,
               SQAL_MQTT_EMBEDDED_PORT="0", SQAL_INSPECTION_SAMPLES="3", SQAL_DISPATCH_POLL_S="0.5",
               SQAL_INGEST_FLUSH_MS="5", SQAL_LOG_LEVEL="WARNING")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tests.web.gateway_main", "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    gw = WebGateway(f"http://127.0.0.1:{port}", TOKEN, log_path, proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gateway exited {proc.returncode}:\n{gw.log()}")
            try:
                with urllib.request.urlopen(gw.base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not up after 60 s:\n{gw.log()}")
            time.sleep(0.2)
        yield gw
    finally:
        if proc.poll() is None:
            try:  # simulators stopped through the API first: their shutdown is what matters
                req = urllib.request.Request(gw.base + "/api/control-panel/orchestrate/stop-all", method="POST",
                                             headers={"Authorization": f"Bearer {TOKEN}"})
                urllib.request.urlopen(req, timeout=30).close()
            except OSError:
                pass
            proc.send_signal(signal.SIGTERM)
            try:
                # a closed /ws/realtime client can hold uvicorn's graceful shutdown (see docs/web.md)
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        try:  # whatever is left of its process group (a worker pool after a forced stop)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class ConsoleLog:
    """Every console message and page error of a page; `errors()` are the ones a test fails on."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    allowed: list[tuple[str, str]] = field(default_factory=list)  # (url, text fragment) deliberately provoked

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.messages.append({"type": m.type, "text": m.text,
                                                           "url": (m.location or {}).get("url", "")}))
        page.on("pageerror", lambda e: self.messages.append({"type": "pageerror", "text": str(e), "url": ""}))

    def allow(self, url: str, fragment: str) -> None:
        self.allowed.append((url, fragment))

    def errors(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] in ("error", "pageerror")
                and not any(m["url"].endswith(u) and f in m["text"] for u, f in self.allowed)]


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install chromium) "
                    "or set SQAL_TEST_CHROMIUM to its path", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install playwright "
                    "(its own browser download is not needed: the test uses Debian's Chromium)", pytrace=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
