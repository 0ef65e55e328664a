"""A witness for a lab guest that is shut down and booted again (a cold move).

Its memory is not preserved, so there is nothing to check it against, and its TCP
connections break by design: what counts is that the guest's heartbeat comes back on the
destination. ``heartbeat_max_gap_ms`` is the outage its users saw, on the host clock, from
the last heartbeat before the stop to the first one after the boot.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from vmferry.lab.console import ConsoleTail, Heartbeat, StampedLine
from vmferry.lab.state import GuestRecord
from vmferry.verify.witness import WitnessReport


def outage_ms(lines: list[StampedLine], start: float) -> int | None:
    """Pure: the largest host-clock gap between heartbeats seen after ``start`` (sequence
    numbers ignored: a rebooted guest counts from 1 again); None with fewer than two."""
    stamps = sorted(ln.monotonic for ln in lines if isinstance(ln.event, Heartbeat))
    stamps = [t for t in stamps if t >= start]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return round(max(gaps) * 1000) if gaps else None


class RebootWitness:
    """Follows a lab guest's console across a shutdown and a boot elsewhere."""

    def __init__(self, guest: GuestRecord, *, boot_timeout_s: float = 60.0) -> None:
        self.guest = guest
        self.boot_timeout_s = boot_timeout_s
        self._tail = ConsoleTail(Path(guest.console))
        self._started = 0.0

    def start(self) -> None:
        self._tail.start()
        time.sleep(0.3)  # the tail catches up with the console
        self._started = time.monotonic()

    def finish(self, moved: bool, *, running: bool = True) -> WitnessReport:
        ended = time.monotonic()
        deadline = ended + (self.boot_timeout_s if running else 0)
        beats: list[StampedLine] = []
        while not beats and time.monotonic() < deadline:
            beats = [ln for ln in self._tail.lines()
                     if isinstance(ln.event, Heartbeat) and ln.monotonic > ended]  # fmt: skip
            if not beats:
                time.sleep(0.2)
        lines = self._tail.lines()
        self._tail.stop()
        problems = () if beats else (f"no heartbeat within {self.boot_timeout_s:g} s after "
                                     "the move",)  # fmt: skip
        return WitnessReport(
            outage_ms(lines, self._started), None, None, None, problems, level="lab"
        )
