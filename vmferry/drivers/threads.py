"""Run a blocking call (libvirt's C calls cannot be interrupted) in a daemon thread.

The caller decides how long to wait: :func:`call_in_thread` returns the thread and a
``Future`` that receives the call's result or exception. A thread the caller stops waiting
for is abandoned; being a daemon, it never holds up the process's exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")

__all__ = ["call_in_thread"]


def call_in_thread(call: Callable[[], T], name: str) -> tuple[threading.Thread, Future[T]]:
    """Start ``call()`` in a daemon thread named ``name``; its outcome goes to the Future
    (nothing runs if the Future was cancelled before the thread started)."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(call())
        except BaseException as exc:  # handed to the caller through the Future
            future.set_exception(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, future
