"""Watch a running lab guest for a while and say what was seen (host clock, real probes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vmferry.lab import client
from vmferry.lab.console import (
    ConsoleTail,
    DiskCheck,
    Heartbeat,
    MemCheck,
    StampedLine,
    latest_memcheck,
    max_heartbeat_gap_ms,
    work_stats,
)
from vmferry.lab.state import GuestRecord


@dataclass(frozen=True)
class GuestObservation:
    """What a guest showed over ``seconds`` of host time."""

    guest: str
    seconds: float
    heartbeats: int
    first_seq: int | None
    last_seq: int | None
    heartbeat_max_gap_ms: int | None
    memory_check: str  # ok | fail | none (no verification pass finished in the window)
    memory_check_detail: str
    memory_check_passes: int
    dirty_kib_s: tuple[int, ...]
    disk_checksum_match: bool | None
    echo_rtt_ms: tuple[float, ...]
    echo_error: str | None


def summarize(guest: GuestRecord, window: list[StampedLine], all_lines: list[StampedLine],
              seconds: float, echo_rtt_ms: tuple[float, ...],
              echo_error: str | None) -> GuestObservation:  # fmt: skip
    """Pure: reduce console lines and probe results to an observation."""
    beats = [ln.event.seq for ln in window if isinstance(ln.event, Heartbeat)]
    checks = [ln.event for ln in window if isinstance(ln.event, MemCheck)]
    last_check = latest_memcheck(window)
    failed = next((c for c in checks if not c.ok), None)
    disks = [ln.event for ln in all_lines if isinstance(ln.event, DiskCheck)]
    if failed is not None:
        memory, detail = "fail", failed.detail
    elif last_check is not None:
        memory, detail = "ok", last_check.detail
    else:
        memory, detail = "none", "no verification pass finished in the window"
    return GuestObservation(
        guest=guest.name,
        seconds=seconds,
        heartbeats=len(beats),
        first_seq=beats[0] if beats else None,
        last_seq=beats[-1] if beats else None,
        heartbeat_max_gap_ms=max_heartbeat_gap_ms(window),
        memory_check=memory,
        memory_check_detail=detail,
        memory_check_passes=len(checks),
        dirty_kib_s=tuple(w.dirtied_kib for w in work_stats(window)),
        disk_checksum_match=(disks[-1].sha256 == guest.data_sha256) if disks else None,
        echo_rtt_ms=echo_rtt_ms,
        echo_error=echo_error,
    )


def observe_guest(guest: GuestRecord, seconds: float = 6.0) -> GuestObservation:
    """Tail the guest's console for ``seconds`` and probe its echo service from the client."""
    with ConsoleTail(Path(guest.console)) as tail:
        time.sleep(0.3)  # let the tail catch up with what is already in the file
        start = tail.count()
        time.sleep(seconds)
        rtts: tuple[float, ...] = ()
        error: str | None = None
        try:
            rtts = tuple(client.echo(guest.address, count=3))
        except Exception as exc:  # reported in the observation, not raised
            error = str(exc)
        window = tail.lines(start)
        everything = tail.lines()
    return summarize(guest, window, everything, seconds, rtts, error)
