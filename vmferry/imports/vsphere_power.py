"""Pure: how a vSphere VM is stopped before its disks are read (a cold import).

- powered off: read as it is, nothing to do;
- powered on with VMware Tools running: a guest shutdown (``ShutdownGuest``), waited for
  (with ``--force`` too; the service then powers it off if the guest does not stop in time);
- powered on without running Tools, or suspended: refused, unless ``--force``: then
  powered off (``PowerOffVM_Task``: like pulling the plug, the guest is not asked);
- ``--dry-run``: never anything, whatever the state (the caller does not act).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["PowerAction", "PowerDecision", "decide_power_off"]

TOOLS_RUNNING = "guestToolsRunning"


class PowerAction(enum.StrEnum):
    NONE = "none"  # already powered off
    SHUTDOWN_GUEST = "shutdown-guest"
    POWER_OFF = "power-off"


@dataclass(frozen=True)
class PowerDecision:
    """``action``, or ``refusal`` (a one-line reason, nothing to be done) when None."""

    action: PowerAction | None
    refusal: str | None = None


def decide_power_off(
    vm: str, power_state: str, tools_state: str | None, force: bool
) -> PowerDecision:
    """What to do to ``vm`` before its disks are read (see the module's docstring)."""
    if power_state == "poweredOff":
        return PowerDecision(PowerAction.NONE)
    if power_state == "poweredOn" and tools_state == TOOLS_RUNNING:
        return PowerDecision(PowerAction.SHUTDOWN_GUEST)  # with --force too: the guest first
    if force:
        return PowerDecision(PowerAction.POWER_OFF)
    if power_state == "suspended":
        why = f"{vm} is suspended"
    elif power_state == "poweredOn":
        why = f"{vm} is powered on and VMware Tools do not run in it ({tools_state or 'no status'})"
    else:
        why = f"{vm} is {power_state}"
    return PowerDecision(None, f"{why}: shut it down in the guest, or pass --force to power it "
                               "off (the guest is not asked); nothing was changed")  # fmt: skip
