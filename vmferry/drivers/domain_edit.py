"""Edit a libvirt domain XML document: point disks at other files (pure, no libvirt).

Used for the destination's definition of a ``--copy-storage --to-pool`` move (each copied
disk at its path in the chosen pool), for a VM's definition after `move-storage`, and for a
live import's first definition (each disk a local overlay over an NBD backing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml.ElementTree import fromstring

from vmferry.errors import VmferryError

__all__ = ["with_disk_files", "with_nbd_backing"]

T = TypeVar("T")


def with_disk_files(xml: str, files: Mapping[str, tuple[str, str | None]]) -> str:
    """``xml`` with each disk whose target is a key of ``files`` made a file disk at the
    path given (and of the format given, when not None), whatever its source was (a file,
    a pool's volume); ``VmferryError`` naming a target the document has no disk for."""
    root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    for disk, (path, fmt) in _disks(root, files):
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
    return tostring(root, encoding="unicode")


def with_nbd_backing(xml: str, backings: Mapping[str, tuple[str, int, str]]) -> str:
    """``xml`` with each disk whose target is a key of ``backings`` given a raw backing read
    over NBD from the (address, port, export name) given, and made to pause the guest on a
    read or write error (``error_policy='stop'``, ``rerror_policy='stop'``: a broken
    backing pauses it instead of failing its I/O); ``VmferryError`` naming a target the
    document lacks."""
    root = fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    for disk, (address, port, export) in _disks(root, backings):
        driver = disk.find("driver")
        if driver is None:
            driver = SubElement(disk, "driver", {"name": "qemu", "type": "qcow2"})
        driver.set("error_policy", "stop")
        driver.set("rerror_policy", "stop")
        for old in disk.findall("backingStore"):
            disk.remove(old)
        backing = SubElement(disk, "backingStore", {"type": "network"})
        SubElement(backing, "format", {"type": "raw"})
        source = SubElement(backing, "source", {"protocol": "nbd", "name": export})
        SubElement(source, "host", {"name": address, "port": str(port)})
    return tostring(root, encoding="unicode")


def _disks(root: Element, wanted: Mapping[str, T]) -> Iterator[tuple[Element, T]]:
    """Each disk of ``root`` whose target is a key of ``wanted``, with its value; then
    ``VmferryError`` naming the targets the document has no disk for."""
    left = dict(wanted)
    for disk in root.iter("disk"):
        dev = disk.find("target")
        target = None if dev is None else dev.get("dev")
        if target in left:
            yield disk, left.pop(target)
    if left:
        raise VmferryError(f"the domain has no disk {', '.join(sorted(left))}")
