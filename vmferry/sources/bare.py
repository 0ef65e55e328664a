"""A bare disk image (raw, qcow2, VMDK, VHD, VHDX) as a one-disk ``SourceVm``; the rest of
the VM comes from the command line (``ImageOverrides``)."""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.errors import BadInputError
from vmferry.model.source_vm import (
    Firmware,
    GuestOs,
    SourceDisk,
    SourceFormat,
    SourceNic,
    SourceVm,
)
from vmferry.sources.devices import normalize_mac
from vmferry.sources.image import ImageFacts


@dataclass(frozen=True)
class ImageOverrides:
    """What a bare image cannot say about its VM. ``name`` defaults to the file's stem;
    one NIC per entry of the longer of ``nic_macs`` and ``nic_networks`` (none by default),
    a missing MAC is left for libvirt to generate. ``cores`` is per socket."""

    name: str | None = None
    vcpus: int = 2
    cores: int = 1
    memory_mb: int = 2048
    firmware: Firmware = Firmware.BIOS
    secure_boot: bool = False
    guest_family: str = "unknown"
    guest_distro: str = ""
    guest_version: str = ""
    nic_macs: tuple[str, ...] = ()
    nic_networks: tuple[str, ...] = ()
    nic_model: str = "virtio"
    disk_bus: str = "virtio"


def _nics(overrides: ImageOverrides) -> tuple[SourceNic, ...]:
    count = max(len(overrides.nic_macs), len(overrides.nic_networks))
    nics = []
    for i in range(count):
        mac = None
        if i < len(overrides.nic_macs):
            mac = normalize_mac(overrides.nic_macs[i])
            if mac is None:
                raise BadInputError(f"{overrides.nic_macs[i]!r} is not a MAC address")
        network = overrides.nic_networks[i] if i < len(overrides.nic_networks) else None
        nics.append(SourceNic(mac=mac, model=overrides.nic_model, network=network))
    return tuple(nics)


def bare_image_vm(
    facts: ImageFacts, overrides: ImageOverrides, source_format: SourceFormat
) -> SourceVm:
    """The one-disk VM for an inspected image."""
    if overrides.vcpus < 1 or overrides.cores < 1 or overrides.memory_mb < 1:
        raise BadInputError("vCPUs, cores and memory must be positive")
    if overrides.vcpus % overrides.cores:
        raise BadInputError(
            f"{overrides.vcpus} vCPUs are not a multiple of {overrides.cores} cores per socket"
        )
    if overrides.secure_boot and overrides.firmware is not Firmware.EFI:
        raise BadInputError("secure boot needs EFI firmware")
    disk = SourceDisk(
        path=str(facts.path),
        format=facts.format,
        capacity_bytes=facts.virtual_bytes,
        bus=overrides.disk_bus,
        boot_order=1,
        allocated_bytes=facts.allocated_bytes,
        data_file=facts.data_file,
        label=facts.path.name,
    )
    guest = GuestOs(
        family=overrides.guest_family,
        version=overrides.guest_version,
        distro=overrides.guest_distro,
    )
    return SourceVm(
        name=overrides.name or facts.path.stem,
        source_format=source_format,
        vcpus=overrides.vcpus,
        memory_mb=overrides.memory_mb,
        sockets=overrides.vcpus // overrides.cores,
        cores=overrides.cores,
        firmware=overrides.firmware,
        secure_boot=overrides.secure_boot,
        guest_os=guest,
        disks=(disk,),
        nics=_nics(overrides),
    )
