"""A vSphere VM's properties, as the driver read them (:mod:`vmferry.drivers.vsphere`), ->
:class:`VsphereVm`. Pure: the driver turns pyvmomi's objects into the plain ``Raw*`` types
of :mod:`vmferry.model.vsphere`, so this mapping is tested with hand-made input and never
needs a server.

vSphere leaves fields unset that one would expect: the simulator gives a disk's size only
in KiB (``capacityInKB``), a NIC on a distributed switch names its port group only by key,
and a VM being created has no ``config`` yet. Those cases are decided here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vmferry.model.vsphere import RawDisk, RawNic, RawVm, VsphereDisk, VsphereNic, VsphereVm

__all__ = ["vm_from_raw", "vms_from_raw"]


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
    )


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
