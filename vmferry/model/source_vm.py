"""A VM as described by a foreign source (VMX, OVF/OVA, a bare disk image), before import.

The parsers in ``vmferry.sources`` fill these in; ``vmferry.convert`` turns them into libvirt
domain XML. Names and models are the source's own (``pvscsi``, ``vmxnet3``); the mapping
decides what they become. Every key a parser could not map is kept as a warning, never
dropped in silence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vmferry.model.placement_settings import PlacementSettings


class SourceFormat(enum.StrEnum):
    VMX = "vmx"
    OVF = "ovf"
    OVA = "ova"
    VHDX = "vhdx"
    IMAGE = "image"
    VSPHERE = "vsphere"  # a VM of a vSphere source, read through its API


class ImageFormat(enum.StrEnum):
    """Disk image formats vmferry reads (qemu-img's names)."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VHDX = "vhdx"
    VPC = "vpc"  # VHD


class Firmware(enum.StrEnum):
    BIOS = "bios"
    EFI = "efi"


@dataclass(frozen=True)
class SourceDisk:
    """One disk of the source VM.

    ``path`` is the file to convert: the descriptor for a VMDK with separate extents, an
    OVA member is first copied to a private temporary directory. ``bus`` is the source's
    controller (``pvscsi``, ``lsilogic``, ``buslogic``, ``sata``, ``ide``, ``nvme``,
    ``virtio``, ``unknown``); ``controller``/``unit`` give the order the guest saw.
    ``capacity_bytes`` is the guest-visible size, ``allocated_bytes`` what the file holds.
    ``data_file`` is the one file that holds the disk's data (the image itself for a
    one-file format, a VMDK descriptor's only extent file), None when several do or the
    disk is not a local file: the import reads its data there, where QEMU maps it.
    """

    path: str
    format: ImageFormat
    capacity_bytes: int
    bus: str = "unknown"
    controller: int = 0
    unit: int = 0
    boot_order: int | None = None
    allocated_bytes: int | None = None
    label: str = ""
    data_file: str | None = None


@dataclass(frozen=True)
class SourceNic:
    """``mac`` is lowercase ``aa:bb:cc:dd:ee:ff`` or ``None`` when the source gave none;
    ``network`` is the source's network (port group) name."""

    mac: str | None
    model: str  # vmxnet3 | e1000 | e1000e | vlance | virtio | netvsc | unknown
    network: str | None
    connected: bool = True


@dataclass(frozen=True)
class SourceMedia:
    """A CD-ROM or floppy; ``image`` is the ISO/IMG path when one is attached."""

    kind: str  # cdrom | floppy
    image: str | None = None
    bus: str = "ide"


@dataclass(frozen=True)
class GuestOs:
    """``family`` is ``linux``, ``windows``, ``other`` or ``unknown``; ``id`` is the source's
    identifier (``debian12-64``, ``windows2019srv-64``, an OVF OperatingSystemSection id);
    ``distro`` names the distribution or system within the family (``debian``, ``rhel``,
    ``freebsd``; empty for Windows and when unknown); ``version`` is its version (``12``,
    ``2019``)."""

    family: str = "unknown"
    id: str = ""
    version: str = ""
    bits: int = 64
    distro: str = ""


@dataclass(frozen=True)
class GuestNetwork:
    """What the source's guest tools said of its network (vSphere's VMware Tools):
    addresses by NIC (MAC -> ``IP/PREFIX`` each), the default gateway and the DNS servers.
    An import started on KVM checks through the guest agent that the addresses came back."""

    addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()
    gateway: str | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceVm:
    """Everything the import needs from the source, in the source's own terms."""

    name: str
    source_format: SourceFormat
    vcpus: int
    memory_mb: int
    sockets: int = 1
    cores: int = 1
    firmware: Firmware = Firmware.BIOS
    secure_boot: bool = False
    guest_os: GuestOs = field(default_factory=GuestOs)
    disks: tuple[SourceDisk, ...] = ()
    nics: tuple[SourceNic, ...] = ()
    media: tuple[SourceMedia, ...] = ()
    usb: bool = False
    serial_ports: int = 0
    passthrough: tuple[str, ...] = ()  # pciPassthru0, a USB device by id, ...
    uuid: str | None = None
    warnings: tuple[str, ...] = ()
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    guest_network: GuestNetwork = field(default_factory=GuestNetwork)
