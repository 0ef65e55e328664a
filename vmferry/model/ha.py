"""HA restart: which VMs vmferry restarts elsewhere when their host dies, and how a host is
powered off (fenced) before that (docs/operations.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class HaPriority(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"

    @property
    def rank(self) -> int:
        return ("high", "medium", "low").index(self.value)


@dataclass(frozen=True)
class HaVm:
    """An HA-enabled VM, as the monitor last saw it: where it ran, and its definition (what
    is defined again on another host when its host dies)."""

    vm: str
    priority: HaPriority
    host: str
    definition_xml: str
    vcpus: int
    memory_bytes: int
    state: str = "protected"  # protected | restarted | failed
    note: str | None = None
    updated_at: str = ""


@dataclass(frozen=True)
class HostPower:
    """How a host is powered off, on and asked: commands vmferry runs (the power driver
    ``command``: ipmitool, a Redfish client, or the lab's own), each exiting 0 on success;
    the status command prints ``on`` or ``off``."""

    host: str
    on_command: str
    off_command: str
    status_command: str
    timeout_s: float = 60.0
