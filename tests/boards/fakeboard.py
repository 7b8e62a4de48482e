"""A MicroPython board on a pty: speaks the REPL protocol and executes on the real interpreter.

The serial side models MicroPython's pyexec.c: friendly REPL (">>> "), Ctrl-A raw REPL, Ctrl-B back,
Ctrl-C interrupt, Ctrl-D soft reboot (in the friendly REPL it then runs boot.py and main.py; in the
raw REPL only boot.py), and raw-paste mode ("\\x05A\\x01" -> "R\\x01" + window, "\\x01" per window
consumed). What the host sends is executed by a MicroPython unix-port child (mp_exec_server.py)
whose cwd is `flash_dir`, so files land there. A soft reboot restarts the child (fresh heap).

`heap` is the child's -X heapsize: what gc.mem_free() reports is a little less, as on a board.
`frozen_dir` makes the fake a SQAL image: the modules in it stand for the image's frozen ones. The
unix port's own '.frozen' entry only finds modules frozen into its binary, so mp_exec_server.py
answers imports through that entry from `frozen_dir` as well (it is never part of the flash dir).
Deploy's probe (import with sys.path limited to '.frozen') then finds sqalfw as it would on a
board; the difference is that these "frozen" modules are compiled into the heap.
"""

from __future__ import annotations

import io
import os
import select
import signal
import struct
import subprocess
import threading
import time
import tty
from pathlib import Path

from tests.fixtures.micropython import micropython_binary

SERVER = Path(__file__).with_name("mp_exec_server.py")
WINDOW = 128  # raw-paste flow-control window the board announces (bytes)
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
SIGINT_REARM_S = 1.0  # a Ctrl-C this long after an unanswered one interrupts again


class FakeBoard:
    def __init__(self, flash_dir: Path, mp_path: str = ":.frozen:lib", heap: str = "200k",
                 frozen_dir: Path | None = None, interpreter: str | None = None, deaf_s: float = 0.0) -> None:
        self.flash_dir = flash_dir
        # a board still booting: what arrives on the serial line in its first deaf_s is lost
        self._deaf_until = time.monotonic() + deaf_s
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self.mp_path = mp_path  # MICROPYPATH: the flash root first, like sys.path on a board
        self.heap = heap
        self.frozen_dir = frozen_dir
        # another MicroPython binary (e.g. a build with sqalfw really frozen in), for runs by hand
        self.interpreter = interpreter or micropython_binary()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # a UART: no echo, no newline translation
        self.port = os.ttyname(self.slave)
        self.commands: list[str] = []  # every raw-REPL command executed (for assertions)
        self.soft_reboots = 0
        self._wlock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        # close() and a soft reboot on the serial thread may race: no child starts once closed
        self._child_lock = threading.Lock()
        self._running_friendly = False
        # When the last Ctrl-C was turned into a SIGINT, while main.py runs (None: none pending).
        # On a board the interrupt character is armed only while code runs (pyexec.c): once the
        # KeyboardInterrupt is raised, further Ctrl-Cs are keystrokes for the coming prompt. Here a
        # second SIGINT landing while the child reports the first cut the report and its prompt
        # short, and the board never answered again (a flaky deploy test in CI).
        self._sigint_at: float | None = None
        self._stop = False
        self._start_child()
        self._rx = threading.Thread(target=self._serial_loop, name="fakeboard-rx", daemon=True)
        self._rx.start()

    # --- the MicroPython child ------------------------------------------------------------------
    def _start_child(self) -> None:
        env = dict(os.environ, MICROPYPATH=self.mp_path)
        env.pop("FAKEBOARD_FROZEN", None)
        if self.frozen_dir is not None:
            env["FAKEBOARD_FROZEN"] = str(self.frozen_dir.resolve())
        with self._child_lock:
            if self._stop:
                return
            self._child = subprocess.Popen(
                [self.interpreter, "-X", f"heapsize={self.heap}", str(SERVER)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=self.flash_dir, env=env,
            )
            child = self._child
        threading.Thread(target=self._pump, args=(child,), name="fakeboard-tx", daemon=True).start()

    def _pump(self, child: subprocess.Popen[bytes]) -> None:
        """Child output -> serial line, verbatim (its framing is the raw REPL's)."""
        out = child.stdout
        assert isinstance(out, io.BufferedReader)  # bufsize=-1: read1 returns what is there, without waiting for more
        while True:
            data = out.read1(4096)
            if not data:
                child.wait()
                if child is self._child and not self._stop:
                    self._child_died()
                return
            if b">>> " in data:
                self._running_friendly = False
                self._sigint_at = None
            self._send(data)

    def _child_died(self) -> None:
        """The interpreter exited on its own (a Ctrl-C that hit it while starting, or a crash):
        the board comes back at its REPL, as after an interrupted program."""
        self._child = None
        self._start_child()
        self._running_friendly = False
        self._sigint_at = None
        self._send(b"\r\nKeyboardInterrupt\r\nMicroPython (fake board) on unix\r\n>>> ")

    def _kill_child(self) -> None:
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(timeout=10)

    def _submit(self, kind: str, code: bytes) -> None:
        child = self._child
        if child is None and self._stop:
            return  # close() ran while a soft reboot was starting the child (a deploy that did not wait)
        assert child is not None and child.stdin is not None
        try:
            child.stdin.write(f"{kind} {len(code)}\n".encode() + code)
            child.stdin.flush()
        except OSError:
            if not self._stop:
                raise

    def _soft_reboot(self, friendly: bool) -> None:
        self.soft_reboots += 1
        self._sigint_at = None
        self._kill_child()
        self._send(b"MPY: soft reboot\r\n")
        self._start_child()
        boot = self.flash_dir / "boot.py"
        main = self.flash_dir / "main.py"
        script = b""
        if boot.is_file():
            script += b"exec(open('boot.py').read())\n"
        if friendly and main.is_file():
            script += b"exec(open('main.py').read())\n"
        if friendly:
            self._running_friendly = True
            self._submit("F", script)  # ends with the ">>> " prompt when main.py returns
        else:
            self._submit("B", script)  # ends with the raw REPL banner

    # --- the serial side ------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        with self._wlock:
            try:
                os.write(self.master, data)
            except OSError:
                pass

    def _read(self) -> bytes:
        try:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            return os.read(self.master, 4096) if ready else b""
        except (OSError, ValueError):
            return b""

    def _serial_loop(self) -> None:
        raw = False
        buf = bytearray()
        pending = bytearray()
        held = bytearray()  # typed while main.py runs: the REPL reads it once the program ends
        while not self._stop:
            if held and not self._running_friendly:
                pending[:0] = held
                held.clear()
            if not pending:
                data = self._read()
                if not data:
                    if self._stop:
                        return
                    continue
                if time.monotonic() < self._deaf_until:
                    continue
                pending += data
            c = pending[0]
            del pending[0]
            if self._running_friendly:
                now = time.monotonic()
                # One SIGINT per interrupt: the KeyboardInterrupt in main.py. Re-armed after 1 s in
                # case the program caught it and runs on (it is armed again on a board too).
                if c == 0x03 and self._child is not None and (self._sigint_at is None
                                                             or now - self._sigint_at > SIGINT_REARM_S):
                    self._sigint_at = now
                    self._child.send_signal(signal.SIGINT)
                else:
                    held.append(c)  # typed ahead: the REPL reads it once the program ends
                continue
            if not raw:
                if c == 0x01:
                    raw = True
                    buf.clear()
                    self._send(RAW_BANNER + b">")
                elif c == 0x04:
                    self._soft_reboot(friendly=True)
                elif c == 0x03:
                    self._send(b"\r\n>>> ")
                continue
            # raw REPL
            if c == 0x01:
                buf.clear()  # Ctrl-A again resets the raw REPL (pyexec.c), e.g. a new deploy's entry
                self._send(RAW_BANNER + b">")
            elif c == 0x02:
                raw = False
                self._send(b"\r\nMicroPython (fake board) on unix\r\n>>> ")
            elif c == 0x03:
                buf.clear()
            elif c == 0x05 and not buf:
                pending = self._raw_paste(pending)
            elif c == 0x04:
                if not buf:
                    self._soft_reboot(friendly=False)
                else:
                    self._send(b"OK")
                    self._exec(bytes(buf))
                    buf.clear()
            else:
                buf.append(c)

    def _read_exact(self, pending: bytearray, n: int) -> bytes:
        while len(pending) < n and not self._stop:
            pending += self._read()
        out = bytes(pending[:n])
        del pending[:n]
        return out

    def _raw_paste(self, pending: bytearray) -> bytearray:
        if self._read_exact(pending, 2) != b"A\x01":
            return pending
        self._send(b"R\x01" + struct.pack("<H", WINDOW) + b"\x01")
        code = bytearray()
        used = 0
        while not self._stop:
            if not pending:
                pending += self._read()
                continue
            c = pending[0]
            del pending[0]
            if c == 0x04:
                self._send(b"\x04")  # end of data acknowledged
                break
            code.append(c)
            used += 1
            if used == WINDOW:
                used = 0
                self._send(b"\x01")  # room for another window
        self._exec(bytes(code))
        return pending

    def _exec(self, code: bytes) -> None:
        self.commands.append(code.decode(errors="replace"))
        self._submit("R", code)

    def close(self) -> None:
        with self._child_lock:
            self._stop = True
        self._kill_child()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self._rx.join(timeout=5)
