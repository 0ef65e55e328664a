"""The machine-wide turn on the lab: its namespaces and addresses are the machine's, so the
test suite's labs, the demo's test and the benches take turns on an exclusive lock on
``/run/vmferry-lab.lock`` while their lab is up (`flock /run/vmferry-lab.lock CMD` takes it
by hand). `vmferry lab up` itself takes no lock: a lab left up is refused by the next
`lab up` instead."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LAB_LOCK", "lab_turn"]

LAB_LOCK = Path("/run/vmferry-lab.lock")


@contextmanager
def lab_turn() -> Iterator[None]:
    """Wait for the lab's lock and hold it for the block."""
    with LAB_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
