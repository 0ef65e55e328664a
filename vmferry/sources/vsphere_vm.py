"""A vSphere VM (what the driver read: :class:`RawVm`, and the inventory's
:class:`VsphereVm`) -> the :class:`SourceVm` a file import reads from a VMX, plus the disks
vmferry cannot import as blockers. Pure: tested with hand-made input.

The disks keep their datastore paths (``[datastore] dir/name.vmdk``); the import reads them
over the datastore's HTTPS ``/folder`` URL (:func:`datastore_url`). What cannot be read that
way, or would lose data, is a blocker: a raw device map (its data is on a LUN, not in the
datastore), an independent disk (the brief's rule: never part of a snapshot, so it cannot
be imported the same way warm), a snapshot's delta disk (its data is spread over a chain),
a backing vmferry does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from vmferry.errors import BadInputError
from vmferry.model.finding import Finding, Severity
from vmferry.model.source_vm import (
    Firmware,
    GuestNetwork,
    ImageFormat,
    SourceDisk,
    SourceNic,
    SourceVm,
)
from vmferry.model.source_vm import SourceFormat as Format
from vmferry.model.vsphere import RawDisk, RawVm, VsphereVm
from vmferry.sources.devices import order_disks
from vmferry.sources.guest_os import from_vmware_id

__all__ = [
    "DatastorePath",
    "datastore_url",
    "disk_blockers",
    "parse_datastore_path",
    "parse_vsphere_vm_ref",
    "source_vm_from_vsphere",
    "warm_blockers",
]

_SUPPORTED_BACKINGS = ("flat", "sparse")


@dataclass(frozen=True)
class DatastorePath:
    """``[datastore] dir/name.vmdk``: the datastore's name and the path inside it."""

    datastore: str
    path: str

    def sibling(self, name: str) -> DatastorePath:
        """The file ``name`` in the same directory (a descriptor's extent)."""
        directory = self.path.rpartition("/")[0]
        return DatastorePath(self.datastore, f"{directory}/{name}" if directory else name)

    def __str__(self) -> str:
        return f"[{self.datastore}] {self.path}"


def parse_datastore_path(text: str) -> DatastorePath:
    """``[LocalDS_0] vm/disk.vmdk`` -> DatastorePath; :class:`BadInputError` otherwise
    (and for a path that climbs out of the datastore)."""
    if not text.startswith("[") or "]" not in text:
        raise BadInputError(f"{text!r} is not a datastore path ([datastore] dir/file.vmdk)")
    datastore, _, rest = text[1:].partition("]")
    path = rest.strip()
    if not datastore or not path or path.startswith("/") or ".." in path.split("/"):
        raise BadInputError(f"{text!r} is not a datastore path ([datastore] dir/file.vmdk)")
    return DatastorePath(datastore, path)


def datastore_url(host: str, port: int, path: DatastorePath, datacenter: str) -> str:
    """vCenter's (and ESXi's) URL of a datastore file:
    ``https://HOST:PORT/folder/<path>?dcPath=<datacenter>&dsName=<datastore>``."""
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    query = urlencode({"dcPath": datacenter, "dsName": path.datastore})
    return f"https://{netloc}/folder/{quote(path.path)}?{query}"


def parse_vsphere_vm_ref(text: str) -> tuple[str, str]:
    """``vsphere://SOURCE/VM`` -> (source, VM name); the VM's name may hold ``/`` (``%2F``
    decoded). :class:`BadInputError` for anything else."""
    from urllib.parse import unquote

    prefix = "vsphere://"
    if not text.startswith(prefix):
        raise BadInputError(f"{text!r} is not vsphere://SOURCE/VM")
    source, _, vm = text[len(prefix) :].partition("/")
    if not source or not vm or "@" in source:
        raise BadInputError(f"{text!r} is not vsphere://SOURCE/VM (SOURCE: a name from "
                            "`vmferry sources list`)")  # fmt: skip
    return source, unquote(vm)


def warm_blockers(vm_name: str, disks: tuple[RawDisk, ...] | list[RawDisk],
                  strategy: str = "warm") -> list[Finding]:  # fmt: skip
    """A blocker for every disk a warm import cannot read while the VM runs, or a live
    import cannot serve as its backing: only ESXi's flat disks (a descriptor and its
    ``-flat.vmdk``) keep their blocks where they are, raw."""
    found: list[Finding] = []
    for disk in disks:
        if disk.backing != "flat":
            found.append(Finding(
                f"import.vsphere.{'live' if strategy == 'live-import' else 'warm'}_disk",
                Severity.BLOCKER,
                f"{vm_name}: disk {disk.file_name or '(no file)'} has a {disk.backing} "
                f"backing; a {strategy} import reads flat disks only",
                "Import this VM cold (--strategy cold), or inflate the disk to flat in vSphere.",
            ))  # fmt: skip
    return found


def disk_blockers(vm_name: str, disks: tuple[RawDisk, ...] | list[RawDisk]) -> list[Finding]:
    """A blocker for every disk vmferry cannot read from the datastore as it is."""
    found: list[Finding] = []
    for disk in disks:
        where = disk.file_name or "(no file)"
        if disk.backing == "rdm":
            found.append(Finding(
                "import.vsphere.disk_rdm", Severity.BLOCKER,
                f"{vm_name}: disk {where} is a raw device map; its data is on a LUN, not in "
                "the datastore",
                "Migrate the RDM to a virtual disk (Storage vMotion, thick) first, or remove it.",
            ))  # fmt: skip
        elif disk.disk_mode.startswith("independent"):
            found.append(Finding(
                "import.vsphere.disk_independent", Severity.BLOCKER,
                f"{vm_name}: disk {where} is {disk.disk_mode.replace('_', '-')}",
                "Set the disk's mode to dependent (persistent) in vSphere first.",
            ))  # fmt: skip
        elif disk.backing not in _SUPPORTED_BACKINGS:
            found.append(Finding(
                "import.vsphere.disk_backing", Severity.BLOCKER,
                f"{vm_name}: disk {where} has a {disk.backing} backing vmferry cannot read",
                "Migrate the disk to a flat virtual disk in vSphere first.",
            ))  # fmt: skip
        elif disk.has_parent:
            found.append(Finding(
                "import.vsphere.disk_snapshot", Severity.BLOCKER,
                f"{vm_name}: disk {where} is a snapshot's delta disk",
                "Delete or consolidate the VM's snapshots first.",
            ))  # fmt: skip
    return found


def source_vm_from_vsphere(raw: RawVm, vm: VsphereVm) -> SourceVm:
    """The VM as a file import sees a VMX: hardware, firmware, guest OS, disks (datastore
    paths, sizes, controllers), NICs (MACs, models, port groups), placement settings."""
    cores = raw.properties.get("config.hardware.numCoresPerSocket")
    cores = cores if isinstance(cores, int) and cores > 0 and vm.vcpus % cores == 0 else 1
    disks = [
        SourceDisk(path=raw_disk.file_name, format=ImageFormat.VMDK,
                   capacity_bytes=disk.capacity_bytes, bus=raw_disk.bus,
                   controller=raw_disk.bus_number, unit=raw_disk.unit,
                   label=raw_disk.file_name)
        for raw_disk, disk in zip(raw.disks, vm.disks, strict=True)
    ]  # fmt: skip
    nics = tuple(
        SourceNic(nic.mac or None, raw_nic.model, nic.network, raw_nic.connected)
        for raw_nic, nic in zip(raw.nics, vm.nics, strict=True)
    )
    warnings = () if vm.guest_id else (f"{vm.name}: vSphere gives no guest OS (config.guestId)",)
    return SourceVm(
        name=vm.name,
        source_format=Format.VSPHERE,
        vcpus=max(vm.vcpus, 1),
        memory_mb=vm.memory_mb,
        sockets=max(vm.vcpus, 1) // cores,
        cores=cores,
        firmware=Firmware.EFI if vm.firmware == "efi" else Firmware.BIOS,
        guest_os=from_vmware_id(vm.guest_id or ""),
        disks=order_disks(disks),
        nics=nics,
        uuid=vm.uuid,
        warnings=warnings,
        placement=vm.placement,
        guest_network=guest_network(vm),
    )


def guest_network(vm: VsphereVm) -> GuestNetwork:
    """What VMware Tools report of the guest's network, as the import checks it."""
    return GuestNetwork(tuple((nic.mac, nic.addresses) for nic in vm.guest_addresses),
                        vm.guest_gateway, vm.guest_dns)  # fmt: skip
