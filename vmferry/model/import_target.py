"""What a destination host offers to an import (filled in by drivers, read by imports/)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PoolFacts:
    """A storage pool on the destination. ``reachable`` says whether vmferry, where it runs,
    writes into the same directory the host reads (``None``: not checked)."""

    name: str
    path: str | None
    available_bytes: int
    active: bool = True
    reachable: bool | None = None


@dataclass(frozen=True)
class DestinationFacts:
    """What the destination host offers to an import."""

    host: str
    networks: frozenset[str]
    pools: Mapping[str, PoolFacts]
    domain_names: frozenset[str]
    domain_uuids: frozenset[str] = frozenset()
    domain_type: str = "kvm"  # kvm when /dev/kvm works there, else qemu (TCG)
    efi_loader: bool = True
    secure_boot_loader: bool = True
