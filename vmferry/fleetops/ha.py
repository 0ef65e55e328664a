"""HA decisions (pure): what a host's signals say, and the fencing rule that guards every
restart.

A host is judged from two signals vmferry reads each round: its libvirt answers or not, and
its host heartbeat (a command over the host's shell, SSH for a remote host) answers, does
not, or cannot be read (no shell recorded):

- libvirt answers: ``up``;
- libvirt silent, heartbeat answers: ``libvirt-down``: the host runs, so may its VMs; an
  alert, no fencing, no restart;
- libvirt silent, heartbeat lost or unknown: ``suspect``: its HA VMs are restarted elsewhere
  only after the host is **fenced**: powered off through its power driver and the driver
  confirms it is off. Without a power driver, or when the driver fails or cannot confirm,
  nothing is restarted and an alert says why: a partitioned host may still run the VM. A
  host whose power automation is ``manual`` or ``disabled`` is not powered off by the
  monitor: it counts as fenced only when its driver already says it is off.
"""

from __future__ import annotations

import enum

__all__ = ["FenceOutcome", "HostVerdict", "fence_outcome", "host_verdict"]


class HostVerdict(enum.StrEnum):
    UP = "up"
    LIBVIRT_DOWN = "libvirt-down"
    SUSPECT = "suspect"


def host_verdict(libvirt_answers: bool, heartbeat: bool | None) -> HostVerdict:
    """The verdict on a host from its two signals (``heartbeat`` None: not readable)."""
    if libvirt_answers:
        return HostVerdict.UP
    if heartbeat:
        return HostVerdict.LIBVIRT_DOWN
    return HostVerdict.SUSPECT


class FenceOutcome(enum.StrEnum):
    FENCED = "fenced"  # powered off and confirmed off: restarts may go ahead
    NO_DRIVER = "no-power-driver"
    FAILED = "power-off-failed"
    UNCONFIRMED = "not-confirmed-off"
    REFUSED = "refused-by-policy"  # its power automation is not automatic


def fence_outcome(has_driver: bool, off_ok: bool, status_after: str | None, *,
                  refused: bool = False) -> FenceOutcome:  # fmt: skip
    """Whether a suspect host counts as fenced: only a driver that powered it off and then
    reports it ``off``. ``refused``: the host's power automation does not let vmferry's
    loops power it off, so it is fenced only if its driver already reports it ``off``."""
    if not has_driver:
        return FenceOutcome.NO_DRIVER
    if refused:
        return FenceOutcome.FENCED if status_after == "off" else FenceOutcome.REFUSED
    if not off_ok:
        return FenceOutcome.FAILED
    if status_after != "off":
        return FenceOutcome.UNCONFIRMED
    return FenceOutcome.FENCED
