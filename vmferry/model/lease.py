"""Who drives a job or a plan run: a lease in the store.

The vmferry process that runs a job takes a lease (an owner id, the machine and pid it runs
on) and renews it every few seconds; a job whose owner's lease has expired is the work of a
dead vmferry and may be reconciled. Every time in a lease is the store's clock (PostgreSQL's
``now()``; for SQLite, the one machine's), so owners on other machines are judged by one
clock. A process on the same machine (same kernel boot, same pid namespace: the same
``node``) is also checked directly, so a killed owner is seen at once there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

LEASE_SETTING = "jobs.owner_lease_s"
DEFAULT_LEASE_S = 15


@dataclass(frozen=True)
class Lease:
    owner_id: str
    host: str  # the owner machine's host name, for people
    node: str  # kernel boot id and pid namespace: where ``pid`` means this process
    pid: int
    start_ticks: int | None
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class OwnerState:
    alive: bool
    why: str  # one line for people: who holds it, or why it counts as gone


def owner_state(
    lease: Lease | None, now: datetime, node: str, process_alive: bool | None
) -> OwnerState:
    """Pure: whether the owner holding ``lease`` still drives its work.

    ``now`` is the store's clock; ``node`` is this process's node; ``process_alive`` is
    whether the lease's pid (with its start time) runs here, or None when not looked at.
    """
    if lease is None:
        return OwnerState(False, "no vmferry process holds its lease")
    who = f"vmferry pid {lease.pid} on {lease.host}"
    if lease.node == node and process_alive is False:
        return OwnerState(False, f"{who} is gone (this machine; its lease would expire later)")
    if lease.expires_at <= now:
        ago = (now - lease.heartbeat_at).total_seconds()
        return OwnerState(False, f"{who} last renewed its lease {ago:.0f} s ago; it expired")
    return OwnerState(True, f"{who} holds its lease")


def heartbeat_interval_s(lease_s: float) -> float:
    """Renew three times per lease, so two missed renewals still keep it."""
    return max(0.5, lease_s / 3)
