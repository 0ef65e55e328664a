"""What vmferry knows of a virtual machine, independent of where it was read from."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class VmState(enum.StrEnum):
    """Lifecycle state of a defined VM, as libvirt reports it."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUT_OFF = "shut-off"
    SHUTTING_DOWN = "shutting-down"
    CRASHED = "crashed"
    SUSPENDED = "suspended"
    BLOCKED = "blocked"
    NO_STATE = "no-state"


class DiskDevice(enum.StrEnum):
    DISK = "disk"
    CDROM = "cdrom"
    FLOPPY = "floppy"
    LUN = "lun"


@dataclass(frozen=True)
class Disk:
    """One block device of a VM.

    ``source`` is a file path, a volume ``pool/volume`` or a network URL; ``None`` means
    empty removable media. Sizes are in bytes and ``None`` when unknown (e.g. not readable
    from the host, or empty media).
    """

    target: str
    bus: str
    device: DiskDevice = DiskDevice.DISK
    format: str | None = None
    source: str | None = None
    source_kind: str = "file"  # file | block | volume | network | none
    pool: str | None = None
    capacity_bytes: int | None = None
    allocation_bytes: int | None = None
    readonly: bool = False
    shareable: bool = False

    @property
    def removable(self) -> bool:
        return self.device in (DiskDevice.CDROM, DiskDevice.FLOPPY)


@dataclass(frozen=True)
class Nic:
    """One network interface; ``kind`` is libvirt's interface type (network, bridge, direct...)."""

    mac: str
    kind: str
    model: str | None = None
    network: str | None = None
    bridge: str | None = None
    portgroup: str | None = None
    target_dev: str | None = None


@dataclass(frozen=True)
class HostDevice:
    """A host device passed through to the guest (blocks live migration)."""

    kind: str  # pci | usb | scsi | mdev
    address: str


@dataclass(frozen=True)
class VcpuPin:
    vcpu: int
    cpuset: str


@dataclass(frozen=True)
class CpuTopology:
    sockets: int = 1
    cores: int = 1
    threads: int = 1


@dataclass(frozen=True)
class VmSpec:
    """The hardware of a VM: what must exist wherever it runs."""

    name: str
    uuid: str
    vcpus: int
    memory_bytes: int
    topology: CpuTopology = field(default_factory=CpuTopology)
    cpu_mode: str | None = None  # host-model | host-passthrough | custom | maximum
    cpu_model: str | None = None
    domain_type: str = "kvm"
    machine: str | None = None
    arch: str | None = None
    firmware: str = "bios"  # bios | efi
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    host_devices: tuple[HostDevice, ...] = ()
    vcpu_pins: tuple[VcpuPin, ...] = ()
    # The guest's OS as the domain's libosinfo metadata names it (virt-install, virt-manager,
    # virt-v2v, vmferry import write it): the full id, e.g. http://debian.org/debian/12.
    guest_os: str | None = None

    @property
    def removable_media(self) -> tuple[Disk, ...]:
        return tuple(d for d in self.disks if d.removable)


@dataclass(frozen=True)
class VmRecord:
    """A VM as found on one host at one moment. ``devices_read`` False: libvirt held the VM
    for a migration job (a post-copy running or broken off), so only its name, UUID, state,
    vCPUs and memory were read; ``spec`` lists no disks and no NICs."""

    host: str
    state: VmState
    persistent: bool
    spec: VmSpec
    devices_read: bool = True
