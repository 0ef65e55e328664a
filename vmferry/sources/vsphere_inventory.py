"""A vSphere VM's properties, as the driver read them (:mod:`vmferry.drivers.vsphere`), ->
:class:`VsphereVm`. Pure: the driver turns pyvmomi's objects into the plain ``Raw*`` types
of :mod:`vmferry.model.vsphere`, so this mapping is tested with hand-made input and never
needs a server.

vSphere leaves fields unset that one would expect: the simulator gives a disk's size only
in KiB (``capacityInKB``), a NIC on a distributed switch names its port group only by key,
and a VM being created has no ``config`` yet. Those cases are decided here.

Placement and performance settings (``config.cpuAffinity``, the allocations, latency
sensitivity, hot-add) become the same :class:`PlacementSettings` a VMX gives, non-defaults
only, named by their vSphere property paths; the guest's virtual NUMA layout
(``numa.vcpu.maxPerVirtualNode``, in ``config.extraConfig``) is not read from vSphere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.model.vsphere import (
    RawAllocation,
    RawDisk,
    RawNic,
    RawVm,
    VsphereDisk,
    VsphereGuestNic,
    VsphereNic,
    VsphereVm,
)
from vmferry.sources.placement_keys import settle

__all__ = ["placement_from_raw", "vm_from_raw", "vms_from_raw"]


def vms_from_raw(raws: Sequence[RawVm], networks: Mapping[str, str]) -> list[VsphereVm]:
    """Every VM that has a configuration (one being created has none yet), by name.
    ``networks`` names networks by managed object id and port groups by key."""
    vms = [vm for vm in (vm_from_raw(raw, networks) for raw in raws) if vm is not None]
    return sorted(vms, key=lambda vm: (vm.name, vm.uuid))


def vm_from_raw(raw: RawVm, networks: Mapping[str, str]) -> VsphereVm | None:
    """One VM, or None when vSphere gave it no ``config.uuid`` (not created yet)."""
    props = raw.properties
    uuid = _text(props, "config.uuid")
    if uuid is None:
        return None
    return VsphereVm(
        name=_text(props, "name") or uuid,
        uuid=uuid,
        power_state=_text(props, "runtime.powerState") or "unknown",
        vcpus=_number(props, "config.hardware.numCPU"),
        memory_mb=_number(props, "config.hardware.memoryMB"),
        guest_os=_text(props, "config.guestFullName"),
        disks=tuple(_disk(disk) for disk in raw.disks),
        nics=tuple(_nic(nic, networks) for nic in raw.nics),
        guest_id=_text(props, "config.guestId"),
        firmware=_text(props, "config.firmware"),
        cbt_enabled=props.get("config.changeTrackingEnabled") is True,
        tools_state=_text(props, "guest.toolsRunningStatus"),
        placement=settle(placement_from_raw(props), _number(props, "config.hardware.memoryMB")),
        guest_addresses=_guest_nics(props.get("guest.net")),
        guest_gateway=_stack(props)[0],
        guest_dns=_stack(props)[1],
        committed_bytes=_number(props, "summary.storage.committed") or None,
    )


def _guest_nics(value: object) -> tuple[VsphereGuestNic, ...]:
    """The driver's (MAC, addresses) pairs, the NICs without an address left out."""
    if not isinstance(value, tuple):
        return ()
    return tuple(VsphereGuestNic(str(mac), tuple(str(a) for a in found))
                 for mac, found in value if found)  # fmt: skip


def _stack(props: Mapping[str, object]) -> tuple[str | None, tuple[str, ...]]:
    """The driver's (gateway, DNS servers)."""
    value = props.get("guest.ipStack")
    if not isinstance(value, tuple) or len(value) != 2:
        return None, ()
    gateway, dns = value
    return (None if gateway is None else str(gateway)), tuple(str(d) for d in dns)


def placement_from_raw(props: Mapping[str, object]) -> PlacementSettings:
    """The VM's non-default placement settings (before :func:`settle`): an affinity that
    names host CPUs or NUMA nodes, a reservation above 0, a limit other than -1, shares other
    than normal, a latency sensitivity other than normal, memory locked to its reservation,
    hot-add enabled."""
    cpu = props.get("config.cpuAllocation")
    memory = props.get("config.memoryAllocation")
    cpu = cpu if isinstance(cpu, RawAllocation) else RawAllocation()
    memory = memory if isinstance(memory, RawAllocation) else RawAllocation()
    level = _text(props, "config.latencySensitivity")
    return PlacementSettings(
        cpu_affinity=_affinity(props, "config.cpuAffinity"),
        numa_node_affinity=_affinity(props, "config.memoryAffinity"),
        cpu_reservation=_reservation(cpu, "config.cpuAllocation"),
        cpu_limit=_limit(cpu, "config.cpuAllocation"),
        cpu_shares=_shares(cpu, "config.cpuAllocation"),
        memory_reservation=_reservation(memory, "config.memoryAllocation"),
        memory_limit=_limit(memory, "config.memoryAllocation"),
        memory_shares=_shares(memory, "config.memoryAllocation"),
        memory_pinned=_enabled(props, "config.memoryReservationLockedToMax"),
        latency_sensitivity=(
            SourceSetting("config.latencySensitivity.level", level)
            if level not in (None, "normal") else None),
        cpu_hot_add=_enabled(props, "config.cpuHotAddEnabled"),
        memory_hot_add=_enabled(props, "config.memoryHotAddEnabled"),
    )  # fmt: skip


def _affinity(props: Mapping[str, object], path: str) -> SourceSetting | None:
    value = props.get(path)
    if not isinstance(value, tuple) or not value:
        return None
    return SourceSetting(f"{path}.affinitySet", ",".join(str(n) for n in value))


def _reservation(allocation: RawAllocation, path: str) -> SourceSetting | None:
    if not allocation.reservation:
        return None
    return SourceSetting(f"{path}.reservation", str(allocation.reservation))


def _limit(allocation: RawAllocation, path: str) -> SourceSetting | None:
    if allocation.limit is None or allocation.limit == -1:
        return None
    return SourceSetting(f"{path}.limit", str(allocation.limit))


def _shares(allocation: RawAllocation, path: str) -> SourceSetting | None:
    level = allocation.shares_level
    if level in (None, "normal"):
        return None
    value = f"custom ({allocation.shares})" if level == "custom" else str(level)
    return SourceSetting(f"{path}.shares", value)


def _enabled(props: Mapping[str, object], path: str) -> SourceSetting | None:
    return SourceSetting(path, "true") if props.get(path) is True else None


def _disk(disk: RawDisk) -> VsphereDisk:
    if disk.capacity_in_bytes is not None:
        size = disk.capacity_in_bytes
    else:
        size = (disk.capacity_in_kb or 0) * 1024
    return VsphereDisk(disk.file_name, size)


def _nic(nic: RawNic, networks: Mapping[str, str]) -> VsphereNic:
    key = nic.portgroup_key or nic.network
    network = networks.get(key) if key is not None else None
    return VsphereNic((nic.mac or "").lower(), network or nic.device_name or key)


def _text(props: Mapping[str, object], path: str) -> str | None:
    value = props.get(path)
    return str(value) if value not in (None, "") else None


def _number(props: Mapping[str, object], path: str) -> int:
    value = props.get(path)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
