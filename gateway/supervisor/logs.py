"""Per-simulator log capture: a bounded ring in memory, a size-capped file on disk, live subscribers.

Why three: the ring answers GET .../logs quickly without reading disk, the file survives the
gateway (post-mortem of a crashed simulator), and subscribers (the WebSocket) see each line as the
child prints it. A slow subscriber loses its oldest pending lines, never blocks the child.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

MAX_LINE = 4000  # characters kept of one line; longer lines are cut (and say so)


class LogBuffer:
    def __init__(self, path: Path, max_lines: int = 1000, max_file_bytes: int = 5 * 1024 * 1024,
                 subscriber_queue: int = 1000) -> None:
        self.path = path
        self.max_file_bytes = max_file_bytes
        self.lines: deque[dict[str, Any]] = deque(maxlen=max_lines)
        self.total = 0  # lines seen since this buffer exists (all runs)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._queue_max = subscriber_queue
        self._file: IO[str] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, text: str, run_id: str | None = None) -> None:
        text = text.rstrip("\r\n")
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + f" ...[cut, {len(text)} chars]"
        self.total += 1
        entry = {"n": self.total, "at": datetime.now(UTC).isoformat(), "run_id": run_id, "line": text}
        self.lines.append(entry)
        self._write(f"{entry['at']} {text}\n")
        for q in list(self._subscribers):
            if q.full():  # slow reader: drop its oldest line rather than stall the child's output
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(entry)

    def _write(self, text: str) -> None:
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115
            self._file.write(text)
            self._file.flush()
            if self._file.tell() > self.max_file_bytes:  # keep one previous file, bounded disk use
                self._file.close()
                self._file = None
                self.path.replace(self.path.with_name(self.path.name + ".1"))
        except OSError:  # a full disk must not stop the capture in memory
            self._file = None

    def tail(self, n: int) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        return list(self.lines)[-n:]

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_max)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
