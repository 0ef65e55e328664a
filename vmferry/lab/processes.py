"""Stop processes by pid and start time, so only the lab's own are touched."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from vmferry.drivers.processes import is_same_process, start_ticks

__all__ = ["is_same_process", "read_pidfile", "start_ticks", "stop"]


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def stop(pid: int, ticks: int, *, grace_s: float = 10.0) -> bool:
    """SIGTERM the process if it is still the one we started, SIGKILL after ``grace_s``.

    Returns True when the process is gone (or was never ours to stop).
    """
    if not is_same_process(pid, ticks):
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not is_same_process(pid, ticks):
            _reap(pid)
            return True
        _reap(pid)
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(100):
        _reap(pid)
        if not is_same_process(pid, ticks):
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
