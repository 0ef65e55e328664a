"""What a libvirt host reports about itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HostInfo:
    """A snapshot of one host's identity and capacity.

    ``name`` is the name vmferry knows the host by; ``hostname`` is what the host calls
    itself. ``hypervisor`` is libvirt's driver type (``QEMU``, ``TEST``...);
    ``libvirt_version`` is ``major.minor.micro``; ``hypervisor_version`` is the
    hypervisor's own (QEMU's), also ``major.minor.micro``, ``None`` when libvirt does not
    say. ``cpu_model`` is the host CPU model from the capabilities (``None`` when libvirt
    does not report one); ``cpus`` counts logical CPUs. Memory sizes are in bytes.
    """

    name: str
    hostname: str
    uri: str
    hypervisor: str
    libvirt_version: str
    cpu_model: str | None
    cpu_arch: str
    cpus: int
    memory_bytes: int
    free_memory_bytes: int
    hypervisor_version: str | None = None
