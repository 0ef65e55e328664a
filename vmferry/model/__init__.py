"""Pure data types shared by every layer. Imports nothing else of vmferry."""

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
    "Host",
    "HostDevice",
    "HostInfo",
    "Nic",
    "VcpuPin",
    "VmRecord",
    "VmSpec",
    "VmState",
]
