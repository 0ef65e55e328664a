"""What the QEMU guest agent tells about a VM before and after its move, and the verdict.

The agent answers from inside the guest: ``guest-ping`` (it runs), ``guest-get-time`` (the
guest's clock, in ns since the epoch) and ``guest-network-get-interfaces`` (each NIC's MAC and
addresses). A move that kept the guest whole keeps its NICs' MACs and addresses; the clock
drift is how far the guest's clock moved against the host's across the move (the change of
the offset, so a constant offset between the two clocks does not count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_MAC = "00:00:00:00:00:00"  # loopback


@dataclass(frozen=True)
class AgentView:
    addresses: Mapping[str, frozenset[str]]  # MAC -> its addresses ("198.18.2.100/24")
    clock_offset_ms: float | None  # guest clock minus host clock at the reading


@dataclass(frozen=True)
class AgentCheck:
    """`migrate --json`'s ``verification.agent``."""

    ping: bool  # the agent answered after the move
    mac_ok: bool  # every MAC the guest had before, it has after
    addresses_ok: bool  # and each keeps its addresses
    clock_drift_ms: int | None  # after minus before of (guest clock - host clock)
    notes: tuple[str, ...] = ()  # which checks could not run or failed, one line each
    health_ok: bool | None = None  # the VM's health command after the move (None: none ran)

    @property
    def passed(self) -> bool:
        return self.ping and self.mac_ok and self.addresses_ok and self.health_ok is not False


def view_from(interfaces: Sequence[Mapping[str, Any]], guest_time_ns: int | None,
              host_before_s: float, host_after_s: float) -> AgentView:  # fmt: skip
    """Pure: an :class:`AgentView` from the agent's replies; the host's clock is read before
    and after ``guest-get-time``, and the guest's reading is taken as their midpoint."""
    addresses: dict[str, frozenset[str]] = {}
    for nic in interfaces:
        mac = str(nic.get("hardware-address", "")).lower()
        if not mac or mac == NO_MAC:
            continue
        found = {f"{a.get('ip-address')}/{a.get('prefix')}" for a in nic.get("ip-addresses", [])}
        addresses[mac] = frozenset(addresses.get(mac, frozenset()) | found)
    offset = None
    if guest_time_ns is not None:
        offset = guest_time_ns / 1e6 - (host_before_s + host_after_s) / 2 * 1000
    return AgentView(addresses, offset)


def compare(before: AgentView, after: AgentView | None) -> AgentCheck:
    """Pure: the verdict from the views before and after the move (None: no answer after)."""
    if after is None:
        return AgentCheck(False, False, False, None,
                          ("the guest agent did not answer after the move: its MAC, address "
                           "and clock checks could not run",))  # fmt: skip
    notes: list[str] = []
    missing = sorted(set(before.addresses) - set(after.addresses))
    if missing:
        notes.append(f"the guest lost its NIC {', '.join(missing)}")
    changed = sorted(mac for mac in before.addresses if mac in after.addresses
                     and not before.addresses[mac] <= after.addresses[mac])  # fmt: skip
    for mac in changed:
        gone = sorted(before.addresses[mac] - after.addresses[mac])
        notes.append(f"NIC {mac} lost its address {', '.join(gone)}")
    drift = None
    if before.clock_offset_ms is not None and after.clock_offset_ms is not None:
        drift = round(after.clock_offset_ms - before.clock_offset_ms)
    else:
        notes.append("the guest agent did not give its clock: the drift is not measured")
    return AgentCheck(True, not missing, not missing and not changed, drift, tuple(notes))


def health_verdict(command: str, before: int | None, after: int | None,
                   answered: bool) -> tuple[bool | None, str | None]:  # fmt: skip
    """Pure: the health command's verdict from its exit codes before and after the move
    (None: it did not end in time), and the note to make. A command that did not pass before
    the move is reported and not counted; after the move it must exit 0."""
    if before != 0:
        why = "did not end in time" if before is None else f"exited {before}"
        return None, f"health command {command} {why} before the move; it is not counted"
    if not answered:
        return False, f"health command {command} could not run after the move (no agent)"
    if after != 0:
        why = "did not end in time" if after is None else f"exited {after}"
        return False, f"health command {command} {why} after the move"
    return True, None
