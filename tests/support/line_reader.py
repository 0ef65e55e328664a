"""A child process's output read line by line in a thread, waited on with a deadline.

``selectors`` on a buffered text pipe misses lines: ``readline`` may pull two lines from
the pipe into Python's buffer, and the next ``select`` then waits for bytes that already
arrived (a server's "startup complete" and "running on" lines often come together). A
thread that reads every line into a queue has no such gap.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from typing import IO


class LineReader:
    """Reads ``stream`` to its end in a daemon thread."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        finally:
            self._lines.put(None)

    def until(self, pattern: str, limit_s: float) -> re.Match[str] | None:
        """The match of ``pattern`` in the first line that has it; None when the stream
        ends or ``limit_s`` passes first (every line read is in ``seen``)."""
        deadline = time.monotonic() + limit_s
        while not self._ended:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                self._ended = True
                return None
            self.seen.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        return None

    def rest(self, limit_s: float = 30) -> str:
        """Every line after those already taken, once the stream has ended."""
        self._thread.join(limit_s)
        more = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                more.append(line)
        self.seen.extend(more)
        return "".join(more)
