"""The migration socket's send queue at the switchover (pure).

When QEMU decides to switch over it stops the guest and sends what is left; but the
kernel may still hold megabytes the migration stream wrote earlier and the link has not
carried yet (TCP's send buffer grows to ``net.ipv4.tcp_wmem``'s maximum, 4 MiB by default,
while the link is the bottleneck). The guest stays paused until that queue has drained
too: 4 MiB take 34 ms on a 1 Gbit/s link. QEMU's switchover test does not see it (it
counts those bytes as sent). ``net.ipv4.tcp_notsent_lowat`` bounds the bytes a socket
keeps unsent (unlimited by default): with it at 128 KiB on the source, the lab's guest
paused 30-42 ms instead of 67-81 ms idle and 51-52 ms instead of 96-108 ms dirtying 12 MiB/s,
with the same total time (docs/performance.md "The send queue").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SYSCTL", "TARGET_BYTES", "SendQueue", "restore_to", "tune_to"]

SYSCTL = "net.ipv4.tcp_notsent_lowat"
TARGET_BYTES = 128 * 1024


@dataclass(frozen=True)
class SendQueue:
    """What vmferry changed on a host for a move: the sysctl from ``was`` to ``now``."""

    host: str
    was: int
    now: int


def tune_to(current: int, target: int = TARGET_BYTES) -> int | None:
    """The value to give the sysctl for a move, or None when it bounds the queue as tightly
    already (an administrator's lower value is kept)."""
    return target if current > target else None


def restore_to(change: SendQueue, current: int, others_moving: bool) -> int | None:
    """The value to put back after the move, or None to leave it: another move from the
    host still runs (it keeps the bound; the host keeps it afterwards), or someone changed
    the sysctl since (theirs is kept)."""
    if others_moving or current != change.now:
        return None
    return change.was
