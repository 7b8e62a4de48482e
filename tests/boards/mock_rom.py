"""An emulated ESP ROM bootloader on a loopback TCP port, for esptool to flash without a board.

The SLIP protocol handling (SYNC, READ_REG chip detection, stub upload, FLASH_BEGIN/DATA/END,
FLASH_DEFL_*, ERASE_FLASH, SPI_FLASH_MD5...) is the `esp32-mock-bootloader` package's; this wrapper
runs it in a thread with a flash image the test owns, so the test reads the bytes that landed
directly instead of asking esptool (the package's READ_FLASH digest is unreliable).
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self

from esp32_mock_bootloader.server import BootloaderConnection, FlashImage, handle_client


class MockRom:
    def __init__(self, chip: str) -> None:
        self.chip = chip
        self.flash = FlashImage()
        self.flash.data[:] = b"\x5a" * len(self.flash.data)  # "old firmware": shows erase happened
        self._stop = threading.Event()
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(1)
        self._srv.settimeout(0.2)
        self.port = self._srv.getsockname()[1]
        self.sessions = 0
        self._thread = threading.Thread(target=self._serve, name=f"mock-rom-{chip}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.sessions += 1
            handle_client(BootloaderConnection(sock=conn), self._stop, self.chip, None,
                          exit_on_disconnect=True, flash=self.flash)
            conn.close()

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.flash.data[offset:offset + length])

    def close(self) -> None:
        self._stop.set()
        self._srv.close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
