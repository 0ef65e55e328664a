"""Edit a libvirt domain XML document: point disks at other files (pure, no libvirt).

Used for the destination's definition of a ``--copy-storage --to-pool`` move (each copied
disk at its path in the chosen pool) and for a VM's definition after `move-storage`.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree.ElementTree import SubElement, tostring

from defusedxml.ElementTree import fromstring

from vmferry.errors import VmferryError

__all__ = ["with_disk_files"]


def with_disk_files(xml: str, files: Mapping[str, tuple[str, str | None]]) -> str:
    """``xml`` with each disk whose target is a key of ``files`` made a file disk at the
    path given (and of the format given, when not None), whatever its source was (a file,
    a pool's volume); ``VmferryError`` naming a target the document has no disk for."""
    root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    left = dict(files)
    for disk in root.iter("disk"):
        dev = disk.find("target")
        target = None if dev is None else dev.get("dev")
        if target not in left:
            continue
        path, fmt = left.pop(target)
        source = disk.find("source")
        kept = {} if source is None else {k: v for k, v in source.attrib.items()
                                          if k == "startupPolicy"}  # fmt: skip
        children = [] if source is None else list(source)
        if source is not None:
            disk.remove(source)
        disk.set("type", "file")
        placed = SubElement(disk, "source", {"file": path, **kept})
        placed.extend(children)  # e.g. <seclabel>, <reservations>
        driver = disk.find("driver")
        if driver is not None and fmt is not None:
            driver.set("type", fmt)
    if left:
        raise VmferryError(f"the domain has no disk {', '.join(sorted(left))}")
    return tostring(root, encoding="unicode")
