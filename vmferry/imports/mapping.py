"""Pure decisions of an import: what a foreign VM becomes on a libvirt host.

``plan_import`` takes the source VM (``model.source_vm``), the user's options and what the
destination offers, and returns an ``ImportPlan``: names, buses, NIC models and networks,
volumes. Nothing here reads a file or talks to a host.

The rules for ``auto``:

- Guest conversion (virt-v2v) is needed when the guest has no virtio drivers: Windows guests
  (stock Windows has none). Linux guests have had virtio drivers since 2.6.25 and boot as
  they are. ``always``/``never`` override.
- Disk bus and NIC model: virtio where the guest has drivers (Linux, or after conversion);
  otherwise SATA and e1000e, which every guest since 2010 can boot from, so the first boot
  works and drivers can be added afterwards.
"""

from __future__ import annotations

import enum
import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from vmferry.imports.placement_settings import locks_memory
from vmferry.model.import_target import DestinationFacts
from vmferry.model.source_vm import Firmware, GuestOs, SourceVm


class Choice(enum.StrEnum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


DISK_BUSES = ("auto", "virtio", "sata")
NIC_MODELS = ("auto", "virtio", "e1000e")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


@dataclass(frozen=True)
class ImportOptions:
    """What the user asked for on the command line."""

    name: str | None = None
    network_map: Mapping[str, str] = field(default_factory=dict)
    storage_pool: str = "default"
    disk_bus: str = "auto"
    nic_model: str = "auto"
    convert_guest: Choice = Choice.AUTO
    console_log: str | None = None
    # vSphere: datastore -> pool ('*': every datastore); empty: every disk to storage_pool
    storage_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedDisk:
    index: int
    source_path: str
    source_format: str
    capacity_bytes: int
    allocated_bytes: int | None
    target_dev: str
    bus: str  # virtio | sata
    volume: str  # final volume name in the pool
    boot_order: int | None
    pool: str | None = None  # its pool (None: its datastore is not in --storage-map)
    source_datastore: str | None = None  # vSphere: the datastore it is on
    source_data_file: str | None = None  # the one file holding its data (SourceDisk.data_file)
    # the source is a file this import wrote (a staged vSphere disk, virt-v2v's output): in
    # the page cache still, read through it (the user's own disk is read past it)
    source_written_here: bool = False


@dataclass(frozen=True)
class PlannedNic:
    mac: str | None
    model: str
    network: str | None  # None: unmapped (a blocker)
    source_network: str | None


@dataclass(frozen=True)
class ImportPlan:
    """Everything needed to write the domain XML and the volumes."""

    name: str
    uuid: str
    domain_type: str
    vcpus: int
    sockets: int
    cores: int
    memory_mb: int
    firmware: Firmware
    secure_boot: bool
    guest_family: str
    pool: str
    disks: tuple[PlannedDisk, ...]
    nics: tuple[PlannedNic, ...]
    cdroms: int
    usb: bool
    console_log: str | None
    convert_guest: bool
    virtio: bool
    guest_os: GuestOs = field(default_factory=GuestOs)  # the source's (for the libosinfo id)
    memory_locked: bool = False  # <memoryBacking><locked/>: the source locked all its memory


def valid_name(name: str) -> bool:
    """A domain and volume name vmferry accepts: letters, digits, ``.``, ``_``, ``-``."""
    return bool(_NAME.match(name))


def sanitized_name(name: str) -> str:
    """A source name made acceptable (spaces and other characters become ``-``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:63]
    return cleaned or "imported-vm"


def parse_network_map(pairs: list[str], option: str = "--network-map") -> dict[str, str]:
    """``["VM Network=vmnet", ...]`` -> mapping; raises ValueError naming the bad pair."""
    result: dict[str, str] = {}
    for pair in pairs:
        src, sep, dst = pair.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"{option} {pair!r}: expected SOURCE=DESTINATION")
        result[src.strip()] = dst.strip()
    return result


def needs_guest_conversion(vm: SourceVm, choice: Choice) -> bool:
    if choice is Choice.ALWAYS:
        return True
    if choice is Choice.NEVER:
        return False
    return vm.guest_os.family == "windows"


def _has_virtio(vm: SourceVm, converted: bool) -> bool:
    return converted or vm.guest_os.family == "linux"


def _target_devs(bus: str, count: int) -> list[str]:
    prefix = "vd" if bus == "virtio" else "sd"
    return [prefix + _letters(i) for i in range(count)]


def _letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (the kernel's disk naming)."""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(ord("a") + rem) + out
    return out


_DATASTORE = re.compile(r"^\[([^\]]+)\]")


def datastore_of(path: str) -> str | None:
    """``[datastore] dir/file.vmdk`` -> ``datastore``; None for a path without one."""
    found = _DATASTORE.match(path)
    return found[1] if found else None


def _map_storage(path: str, options: ImportOptions) -> str | None:
    """The pool of a disk: ``storage_pool`` without a storage map, else its datastore's
    pool in the map (or ``*``'s); None when the map has neither."""
    if not options.storage_map:
        return options.storage_pool
    datastore = datastore_of(path)
    if datastore is not None and datastore in options.storage_map:
        return options.storage_map[datastore]
    return options.storage_map.get("*")


def _map_network(source: str | None, options: ImportOptions, dest: DestinationFacts) -> str | None:
    if source is not None and source in options.network_map:
        return options.network_map[source]
    if "*" in options.network_map:
        return options.network_map["*"]
    if source is not None and source in dest.networks:
        return source
    return None


def plan_import(vm: SourceVm, options: ImportOptions, dest: DestinationFacts) -> ImportPlan:
    """Decide names, buses, models and networks for ``vm`` on ``dest``."""
    name = options.name or sanitized_name(vm.name)
    converted = needs_guest_conversion(vm, options.convert_guest)
    virtio = _has_virtio(vm, converted)
    bus = options.disk_bus if options.disk_bus != "auto" else ("virtio" if virtio else "sata")
    model = options.nic_model if options.nic_model != "auto" else ("virtio" if virtio else "e1000e")
    ordered = sorted(
        vm.disks,
        key=lambda d: (d.boot_order is None, d.boot_order or 0, d.controller, d.unit),
    )
    devs = _target_devs(bus, len(ordered))
    disks = tuple(
        PlannedDisk(
            index=i,
            source_path=d.path,
            source_format=str(d.format),
            capacity_bytes=d.capacity_bytes,
            allocated_bytes=d.allocated_bytes,
            target_dev=devs[i],
            bus=bus,
            volume=f"{name}-disk{i}.qcow2",
            boot_order=i + 1 if i == 0 else None,
            pool=_map_storage(d.path, options),
            source_datastore=datastore_of(d.path),
            source_data_file=d.data_file,
        )
        for i, d in enumerate(ordered)
    )
    nics = tuple(
        PlannedNic(n.mac, model, _map_network(n.network, options, dest), n.network) for n in vm.nics
    )
    sockets, cores = topology(vm.vcpus, vm.sockets, vm.cores)
    source_uuid = _normalized_uuid(vm.uuid)
    keep_uuid = source_uuid is not None and source_uuid not in dest.domain_uuids
    return ImportPlan(
        name=name,
        uuid=source_uuid if keep_uuid and source_uuid else str(uuidlib.uuid4()),
        domain_type=dest.domain_type,
        vcpus=max(1, vm.vcpus),
        sockets=sockets,
        cores=cores,
        memory_mb=vm.memory_mb,
        firmware=vm.firmware,
        secure_boot=vm.secure_boot,
        guest_family=vm.guest_os.family,
        pool=options.storage_pool,
        disks=disks,
        nics=nics,
        cdroms=sum(1 for m in vm.media if m.kind == "cdrom"),
        usb=vm.usb,
        console_log=options.console_log,
        convert_guest=converted,
        virtio=virtio,
        guest_os=vm.guest_os,
        memory_locked=locks_memory(vm.placement),
    )


def topology(vcpus: int, sockets: int, cores: int) -> tuple[int, int]:
    """(sockets, cores per socket) multiplying to ``vcpus``: the source's cores per socket when
    they divide the vCPUs, else one core per socket (libvirt refuses a product that differs)."""
    vcpus = max(1, vcpus)
    cores = max(1, cores)
    if sockets * cores == vcpus:
        return max(1, sockets), cores
    if vcpus % cores == 0:
        return vcpus // cores, cores
    return vcpus, 1


def _normalized_uuid(value: str | None) -> str | None:
    """VMware writes ``uuid.bios = "56 4d 12 ... -ab cd ..."``; libvirt wants the usual form."""
    if not value:
        return None
    hexdigits = re.sub(r"[^0-9a-fA-F]", "", value)
    if len(hexdigits) != 32:
        return None
    return str(uuidlib.UUID(hexdigits))
