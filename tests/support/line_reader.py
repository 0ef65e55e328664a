"""A child process's output read line by line in a thread, waited on with a deadline.

``selectors`` on a buffered text pipe misses lines: ``readline`` may pull two lines from
the pipe into Python's buffer, and the next ``select`` then waits for bytes that already
arrived (a server's "startup complete" and "running on" lines often come together). A
thread that reads every line into a queue has no such gap.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

import pytest


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


@dataclass
class Served:
    """A `vmferry server` started by :func:`vmferry_server`: its URL, its process and its
    stderr as read so far."""

    url: str
    process: subprocess.Popen[str]
    reader: LineReader


@contextmanager
def vmferry_server(env: dict[str, str]) -> Iterator[Served]:
    """`vmferry server` with store ``env`` names on a free loopback port (port 0: the kernel
    picks it, uvicorn says which); stopped with SIGTERM when the block ends (killed if it
    does not stop within 60 s). Its stderr is read to the end: a full pipe would stall it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vmferry.cli.main", "server", "--listen", "127.0.0.1:0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stderr is not None
    reader = LineReader(process.stderr)
    try:
        address = reader.until(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", limit_s=60)
        if address is None:
            pytest.fail(f"vmferry server did not listen within 60 s: {''.join(reader.seen)}")
        yield Served(address.group(1), process, reader)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
