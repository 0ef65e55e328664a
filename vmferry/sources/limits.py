"""Limits on untrusted import input (sizes, counts); the defaults are the documented ones."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


@dataclass(frozen=True)
class Limits:
    """What vmferry accepts from a source before it refuses it.

    ``max_virtual_bytes``: the largest guest-visible disk size. ``max_descriptor_bytes``: the
    largest VMX, OVF, VMDK descriptor or OVA manifest. ``max_ova_members`` and
    ``max_ova_bytes``: how many members an OVA may hold and how many bytes they may add up
    to. ``max_vmdk_extents``: extent lines in one VMDK descriptor (a 16 TiB
    twoGbMaxExtentSparse disk has 8192).
    """

    max_virtual_bytes: int = 16 * TiB
    max_descriptor_bytes: int = 1 * MiB
    max_ova_members: int = 64
    max_ova_bytes: int = 2 * TiB
    max_vmdk_extents: int = 10_000


DEFAULT_LIMITS = Limits()
