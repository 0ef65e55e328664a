"""A host's maintenance state: ``entering`` (nothing is placed on it; its VMs are being moved
off, or could not all be), ``in-maintenance`` (empty; nothing is placed on it) or
``standby`` (emptied by consolidation, powered off or to be; `vmferry host wake` brings it
back)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# The jobs that record a decision about a host (consolidation's standby, its wake-up): their
# subject (`Job.vm`) is the host's name, not a VM's.
HOST_JOB_KINDS = ("host-standby", "host-wake")


class MaintenanceState(enum.StrEnum):
    ENTERING = "entering"
    IN_MAINTENANCE = "in-maintenance"
    STANDBY = "standby"  # emptied by `vmferry consolidate --apply` (powered off, or to be)


@dataclass(frozen=True)
class HostMaintenance:
    host: str
    state: MaintenanceState
    since: str  # ISO 8601 UTC
    note: str | None = None  # why it stays entering (the VMs that could not move)
