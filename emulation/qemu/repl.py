"""Talk to MicroPython on an emulated board through its raw REPL, as mpremote does over a serial
port: start QEMU with the board's UART on our pipes, wait for the banner, enter the raw REPL
(Ctrl-A), send code and Ctrl-D, read "OK", the output up to Ctrl-D, the exception text up to
Ctrl-D, and the ">" prompt.

Every wait has a deadline. A target that stops answering (a hang, a loop, a crash that leaves the
CPU spinning) raises ReplTimeout naming what was awaited and the last output; QEMU exiting raises
ReplError with its exit code and stderr; an exception on the target raises TargetError with its
traceback. The emulator is killed on close() and on any of these.

    with QemuRepl(board.qemu_argv(elf)) as repl:
        out = repl.exec("import gc; print(gc.mem_free())", timeout=10)
"""

from __future__ import annotations

import os
import selectors
import subprocess
import tempfile
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Self

RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
FRIENDLY_PROMPT = b">>> "
CTRL_A, CTRL_B, CTRL_C, CTRL_D = b"\x01", b"\x02", b"\x03", b"\x04"


class ReplError(RuntimeError):
    """The board could not be talked to (QEMU exited, or the REPL said something unexpected)."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message + (f"\n--- target output (last 2000 chars)\n{output[-2000:]}" if output else ""))
        self.output = output


class ReplTimeout(ReplError):
    """The board did not answer within the deadline: hung, looping, or far slower than expected."""


class TargetError(ReplError):
    """The code raised on the board: `error` is its traceback, `output` what it printed first."""

    def __init__(self, output: str, error: str) -> None:
        super().__init__(f"the code raised on the target:\n{error}", output)
        self.error = error


class QemuRepl:
    def __init__(self, argv: list[str], *, boot_timeout: float = 30.0) -> None:
        self.argv = argv
        self.boot_timeout = boot_timeout
        self.banner = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._sel: selectors.BaseSelector | None = None
        self._buf = bytearray()

    # ---- lifecycle ----

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> str:
        """Boot the board and enter its raw REPL. Returns the boot banner."""
        # a file, not a pipe: nobody reads it while QEMU runs; closed by close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        assert self._proc.stdout is not None
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._proc.stdout, selectors.EVENT_READ)
        try:
            deadline = time.monotonic() + self.boot_timeout
            self.banner = self._read_until(FRIENDLY_PROMPT, deadline, "the boot banner and the >>> prompt").decode(
                errors="replace")
            # Ctrl-C twice stops anything a boot script started; Ctrl-A enters the raw REPL
            self._send(b"\r" + CTRL_C + CTRL_C + CTRL_A)
            self._read_until(RAW_PROMPT, deadline, "the raw REPL prompt")
        except BaseException:
            self.close()
            raise
        return self.banner

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for f in (proc.stdin, proc.stdout, self._stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._stderr = None

    # ---- raw REPL ----

    def exec(self, code: str, timeout: float, on_output: Callable[[str], None] | None = None) -> str:
        """Run `code` on the board; returns what it printed (\\r\\n made \\n). `on_output` gets
        the output as it arrives (progress). TargetError if it raised, ReplTimeout if the whole
        exchange took longer than `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self._send(code.encode() + CTRL_D)
        ok = self._read_until(b"OK", deadline, "OK (the board taking the code)")
        if ok[:-2].strip():
            raise ReplError(f"unexpected answer to the code: {ok!r}")
        out = self._read_until(CTRL_D, deadline, "the end of the code's output", on_output)[:-1]
        err = self._read_until(CTRL_D, deadline, "the end of the code's error output")[:-1]
        self._read_until(b">", deadline, "the raw REPL prompt after the code")
        text = out.decode(errors="replace").replace("\r\n", "\n")
        if err:
            raise TargetError(text, err.decode(errors="replace").replace("\r\n", "\n"))
        return text

    # ---- plumbing ----

    def _send(self, data: bytes) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise ReplError("the emulator is not running")
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise ReplError(f"the emulator stopped reading its input ({e}){self._exit_note()}",
                            self._buf.decode(errors="replace")) from None

    def _exit_note(self) -> str:
        proc, f = self._proc, self._stderr
        if proc is None or proc.poll() is None:
            return ""
        err = ""
        if f is not None:
            f.seek(0)
            err = f.read().decode(errors="replace").strip()
        return f": {self.argv[0]} exited with code {proc.returncode}" + (f"; stderr: {err[-1000:]}" if err else "")

    def _read_until(self, marker: bytes, deadline: float, what: str,
                    on_output: Callable[[str], None] | None = None) -> bytes:
        """Bytes up to and including `marker`; the rest stays buffered for the next read."""
        proc, sel = self._proc, self._sel
        if proc is None or sel is None or proc.stdout is None:
            raise ReplError("the emulator is not running")
        fd = proc.stdout.fileno()
        scanned = 0
        while True:
            i = self._buf.find(marker, max(0, scanned - len(marker) + 1))
            if i >= 0:
                end = i + len(marker)
                got = bytes(self._buf[:end])
                del self._buf[:end]
                if on_output is not None and i > scanned:
                    on_output(got[scanned:i].decode(errors="replace"))
                return got
            if on_output is not None and len(self._buf) > scanned:
                on_output(self._buf[scanned:].decode(errors="replace"))
            scanned = len(self._buf)
            left = deadline - time.monotonic()
            if left <= 0:
                tail = self._buf.decode(errors="replace")
                self.close()
                raise ReplTimeout(f"no answer from the target within the deadline: waited for {what}"
                                  " (hung, or far slower than expected); the emulator was killed", tail)
            if not sel.select(timeout=min(left, 1.0)):
                continue
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                note = self._exit_note() or f": {self.argv[0]} closed its output"
                tail = self._buf.decode(errors="replace")
                self.close()
                raise ReplError(f"the emulator went away while waiting for {what}{note}", tail)
            self._buf += chunk
