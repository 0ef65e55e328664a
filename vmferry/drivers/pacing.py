"""A byte rate shared by threads: each read waits its turn so that all of them together
stay at or under ``bytes_per_s`` (the cap a plan's schedule or ``--bandwidth`` gives).

Each request reserves the next ``n / rate`` seconds of the line (:func:`reserve`, pure);
its caller sleeps until that slot begins. The first request goes at once, so a burst is one
request (a range read: 4 MiB); over any longer span the rate holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["ByteRate", "reserve"]


def reserve(now: float, free_at: float, nbytes: int, bytes_per_s: float) -> tuple[float, float]:
    """Pure: a request of ``nbytes`` at ``now`` when the line is free from ``free_at``:
    (seconds to wait before it is sent, when the line is free after it)."""
    start = max(now, free_at)
    return start - now, start + nbytes / bytes_per_s


class ByteRate:
    """``bytes_per_s`` for all the threads that call :meth:`take` (thread-safe)."""

    def __init__(self, bytes_per_s: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], object] = time.sleep) -> None:  # fmt: skip
        if bytes_per_s <= 0:
            raise ValueError(f"a byte rate must be > 0, not {bytes_per_s}")
        self.bytes_per_s = bytes_per_s
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._free_at = 0.0
        self.waited_s = 0.0  # all the waits together (for notes and tests)

    def take(self, nbytes: int, stop: threading.Event | None = None) -> None:
        """Wait until ``nbytes`` may be read; a wait ends early when ``stop`` is set (the
        reader is closing: the caller looks at it)."""
        with self._lock:
            wait, self._free_at = reserve(self._clock(), self._free_at, nbytes,
                                          self.bytes_per_s)  # fmt: skip
            self.waited_s += wait
        if wait > 0:
            if stop is None:
                self._sleep(wait)
            else:
                stop.wait(wait)
