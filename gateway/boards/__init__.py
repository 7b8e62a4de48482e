"""Put MicroPython and the SQAL firmware on real ESP32 boards: list, flash, deploy, provision.

Each module does one step and raises its own error type with a message that says what to do;
`gateway.boards.cli` turns those into the `sqal board ...` commands. See docs/boards.md.
"""

from __future__ import annotations


class BoardError(Exception):
    """A step on a board failed; the message names the step and what the user can do."""
