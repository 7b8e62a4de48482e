"""Mosquitto for the benchmarks that measure the boards' side against a plain MQTT broker
(bench/fleet.py, bench/spool_flash.py), started as a child process on a free loopback port.

The benchmarks' own launcher: tests/fixtures/mqtt.py has the tests' one, but a benchmark must run in
the environment `./sqal` sets up, which has no pytest (and tests/ is no library). Persistence on
(saved every second and at a clean stop), so a persistent session survives `stop()` / `start()`.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
import uuid
from pathlib import Path

MOSQUITTO_BIN = os.environ.get("SQAL_MOSQUITTO", "/usr/sbin/mosquitto")
READY_TIMEOUT_S = 15.0


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connack_code(host: str, port: int, timeout: float = 1.0) -> int:
    """One MQTT 3.1.1 CONNECT (clean session); the CONNACK's return code (0: accepted)."""
    cid = b"ready-" + uuid.uuid4().hex[:8].encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(cid).to_bytes(2, "big") + cid
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"\x10" + bytes([len(body)]) + body)
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            if not chunk:
                raise ConnectionError("closed before CONNACK")
            got += chunk
        s.sendall(b"\xe0\x00")
    if got[0] != 0x20:
        raise ConnectionError(f"not a CONNACK: {got!r}")
    return got[3]


class Mosquitto:
    """`Mosquitto(workdir).start()`; `.host`, `.port`, `.url`, `.proc`; `stop()` saves its
    persistence file, a later `start()` (same port) restores the sessions."""

    def __init__(self, workdir: Path, *, extra_config: list[str] | None = None, binary: str = MOSQUITTO_BIN) -> None:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise BrokerError(f"mosquitto not found at {binary}: install the Debian package 'mosquitto' "
                              "or set SQAL_MOSQUITTO to its path")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = "127.0.0.1", free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"
        self.conf_path = self.workdir / "mosquitto.conf"
        persist = self.workdir / "persist"
        persist.mkdir(exist_ok=True)
        lines = [
            # as root mosquitto would drop to user "mosquitto", which cannot read a private tmp dir
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {persist}/",
            "autosave_interval 1",
            "log_dest stdout",
            "max_queued_messages 100000",
            *(extra_config or []),
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                connack_code(self.host, self.port)
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto not ready on {self.url} after {READY_TIMEOUT_S:.0f} s:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # mosquitto saves its persistence file on SIGTERM
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
