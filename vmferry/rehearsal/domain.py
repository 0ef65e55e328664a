"""The rehearsal copy's domain XML, from the VM's own (pure).

The copy must not touch anything of the VM: another name and no UUID (libvirt gives it a
new one), each backed-up disk replaced by its overlay, removable media emptied, disks that
were not backed up (shareable, read-only) left out, every NIC moved to the isolated
rehearsal network (MAC and model kept: alone on that network it is unique), file consoles
turned into ptys (the VM's console log is the VM's), sockets and ports left for libvirt to
choose, and runtime-only elements (seclabels, aliases, tap names) dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml.ElementTree import fromstring

__all__ = ["REHEARSAL_NETWORK", "rehearsal_name", "rehearsal_xml"]

REHEARSAL_NETWORK = "vmferry-rehearsal"


def rehearsal_name(vm: str, job_id: str) -> str:
    return f"{vm}-rehearsal-{job_id[:8]}"


def rehearsal_xml(vm_xml: str, name: str, overlays: Mapping[str, str],
                  network: str = REHEARSAL_NETWORK) -> str:  # fmt: skip
    """``vm_xml`` rewritten as the rehearsal copy ``name`` whose disks are ``overlays``
    (disk target -> qcow2 overlay path); raises ValueError when a disk to keep has none."""
    root: Element = fromstring(vm_xml, forbid_dtd=True, forbid_entities=True,
                               forbid_external=True)  # fmt: skip
    root.attrib.pop("id", None)
    for tag in ("uuid", "seclabel", "resource"):
        for found in root.findall(tag):
            root.remove(found)
    root.find("name").text = name  # type: ignore[union-attr]
    devices = root.find("devices")
    if devices is None:
        raise ValueError("the VM's XML has no <devices>")
    for disk in list(devices.findall("disk")):
        _rewrite_disk(devices, disk, overlays)
    for iface in devices.findall("interface"):
        _rewrite_interface(iface, network)
    for tag in ("serial", "console"):
        for port in devices.findall(tag):
            if port.get("type") == "file":
                port.set("type", "pty")
                for source in port.findall("source"):
                    port.remove(source)
    for channel in devices.findall("channel"):
        for source in channel.findall("source"):
            source.attrib.pop("path", None)  # libvirt picks a socket of the copy's own
    for graphics in devices.findall("graphics"):
        graphics.set("autoport", "yes")
        graphics.attrib.pop("port", None)
    for parent in root.iter():
        for alias in parent.findall("alias"):
            parent.remove(alias)
    return tostring(root, encoding="unicode")


def _rewrite_disk(devices: Element, disk: Element, overlays: Mapping[str, str]) -> None:
    target = disk.find("target")
    dev = target.get("dev") if target is not None else None
    if disk.get("device") in ("cdrom", "floppy"):
        for source in disk.findall("source"):
            disk.remove(source)  # emptied: the media stays the VM's
        return
    if dev not in overlays:
        if disk.find("shareable") is not None or disk.find("readonly") is not None:
            devices.remove(disk)  # not backed up, so not in the copy
            return
        raise ValueError(f"disk {dev} has no overlay")
    disk.set("type", "file")
    for source in disk.findall("source"):
        disk.remove(source)
    for backing in disk.findall("backingStore"):
        disk.remove(backing)
    source = Element("source", {"file": overlays[str(dev)]})
    disk.insert(0, source)
    driver = disk.find("driver")
    if driver is None:
        driver = SubElement(disk, "driver", {"name": "qemu"})
    driver.set("type", "qcow2")


def _rewrite_interface(iface: Element, network: str) -> None:
    keep = {"mac", "model", "address", "rom", "driver"}
    for child in list(iface):
        if child.tag not in keep:
            iface.remove(child)
    for attr in list(iface.attrib):
        if attr != "type":
            iface.attrib.pop(attr)
    iface.set("type", "network")
    iface.insert(1, Element("source", {"network": network}))
