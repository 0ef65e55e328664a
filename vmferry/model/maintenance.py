"""A host's maintenance state: ``entering`` (nothing is placed on it; its VMs are being moved
off, or could not all be) or ``in-maintenance`` (empty; nothing is placed on it)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MaintenanceState(enum.StrEnum):
    ENTERING = "entering"
    IN_MAINTENANCE = "in-maintenance"


@dataclass(frozen=True)
class HostMaintenance:
    host: str
    state: MaintenanceState
    since: str  # ISO 8601 UTC
    note: str | None = None  # why it stays entering (the VMs that could not move)
