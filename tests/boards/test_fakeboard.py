"""The fake board itself (tests/boards/fakeboard.py): its REPL must behave as MicroPython's does,
or deploy tests fail for the fake's sake."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.boards.fakeboard import RAW_BANNER, FakeBoard

LOOPING_MAIN = "import time\nprint('app: running')\nwhile True:\n    time.sleep(0.01)\n"


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[FakeBoard, int]]:
    board = FakeBoard(tmp_path / "flash")
    (board.flash_dir / "main.py").write_text(LOOPING_MAIN)
    fd = os.open(board.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    yield board, fd
    os.close(fd)
    board.close()


def read_until(fd: int, marker: bytes, timeout: float = 10.0) -> bytes:
    got, deadline = b"", time.monotonic() + timeout
    while marker not in got:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} within {timeout} s; the board said {got[-300:]!r}")
        try:
            got += os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.01)
    return got


@pytest.mark.parametrize("burst", [2, 40])
def test_a_burst_of_ctrl_c_stops_the_app_and_the_repl_answers(line: tuple[FakeBoard, int], burst: int) -> None:
    """On a board the interrupt character is armed only while code runs (pyexec.c): Ctrl-Cs that
    arrive while the KeyboardInterrupt is reported are keystrokes at the prompt, never a second
    interrupt that cuts the report (and its prompt) short. `sqal board deploy` sends two."""
    _, fd = line
    os.write(fd, b"\x04")  # soft reboot at the friendly REPL: main.py runs
    read_until(fd, b"app: running")
    os.write(fd, b"\r" + b"\x03" * burst)
    out = read_until(fd, b">>> ")
    assert b"KeyboardInterrupt" in out
    os.write(fd, b"\r\x01")  # Ctrl-A: raw REPL
    read_until(fd, RAW_BANNER + b">", timeout=5)


def test_ctrl_a_in_the_raw_repl_resets_it(line: tuple[FakeBoard, int]) -> None:
    """A deploy that stopped in the raw REPL (refused, say) leaves the board there; the next one
    sends Ctrl-A again and must get the banner, as pyexec.c answers."""
    _, fd = line
    os.write(fd, b"\r\x01")
    read_until(fd, RAW_BANNER + b">", timeout=5)
    os.write(fd, b"print(1)")  # half-typed, then abandoned
    os.write(fd, b"\r\x01")
    read_until(fd, RAW_BANNER + b">", timeout=5)
    os.write(fd, b"print(6 * 7)\x04")
    assert b"OK42" in read_until(fd, b"\x04>", timeout=5)
