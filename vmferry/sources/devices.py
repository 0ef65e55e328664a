"""Helpers shared by the VMX and OVF parsers: MAC addresses, controller names, disk order."""

from __future__ import annotations

import dataclasses
import re

from vmferry.model.source_vm import SourceDisk

_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_MAC_BARE = re.compile(r"^[0-9a-f]{12}$")

# Default boot order across controller kinds: SCSI, SATA, IDE, NVMe, then the rest.
SCSI_BUSES = ("lsilogic", "lsisas1068", "pvscsi", "buslogic")
_BUS_RANK = {**dict.fromkeys(SCSI_BUSES, 0), "sata": 1, "ide": 2, "nvme": 3}


def normalize_mac(text: str) -> str | None:
    """``00-50-56-AB-CD-EF`` or ``005056abcdef`` -> ``00:50:56:ab:cd:ef``; ``None`` if
    ``text`` is not a MAC address."""
    value = text.strip().lower()
    if _MAC.match(value):
        return value.replace("-", ":")
    if _MAC_BARE.match(value):
        return ":".join(value[i : i + 2] for i in range(0, 12, 2))
    return None


def order_disks(
    disks: list[SourceDisk], boot_first: tuple[str, int, int] | None = None
) -> tuple[SourceDisk, ...]:
    """Disks sorted by controller kind, controller and unit, with ``boot_order`` 1..n.

    ``boot_first`` (bus, controller, unit) names the disk to boot from; by default it is the
    first disk in that order.
    """

    def key(disk: SourceDisk) -> tuple[int, int, int]:
        return (_BUS_RANK.get(disk.bus, 4), disk.controller, disk.unit)

    ordered = sorted(disks, key=key)
    if boot_first is not None:
        first = [d for d in ordered if (d.bus, d.controller, d.unit) == boot_first]
        ordered = first + [d for d in ordered if d not in first]
    return tuple(dataclasses.replace(d, boot_order=i) for i, d in enumerate(ordered, start=1))
