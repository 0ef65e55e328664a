"""Pure data types shared by every layer. Imports nothing else of vmferry."""

from vmferry.model.finding import Finding, Severity, is_blocked
from vmferry.model.host import Host
from vmferry.model.hostinfo import HostInfo
from vmferry.model.vm import (
    CpuTopology,
    Disk,
    DiskDevice,
    HostDevice,
    Nic,
    VcpuPin,
    VmRecord,
    VmSpec,
    VmState,
)

__all__ = [
    "CpuTopology",
    "Disk",
    "DiskDevice",
    "Finding",
    "Host",
    "HostDevice",
    "HostInfo",
    "Nic",
    "Severity",
    "VcpuPin",
    "VmRecord",
    "VmSpec",
    "VmState",
    "is_blocked",
]
