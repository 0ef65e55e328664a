"""Render an ``ImportPlan`` as libvirt domain XML (pure; golden files in tests/data/import).

When the source names its guest OS precisely enough (a VMX ``guestOS``, an OVF
OperatingSystemSection), the domain carries it as libosinfo metadata, as virt-install
writes it: ``<metadata><libosinfo:libosinfo xmlns:libosinfo="..."><libosinfo:os
id="http://debian.org/debian/12"/>``. :func:`libosinfo_id` knows Debian, RHEL and Windows
ids; for any other guest, or one without a version, nothing is written rather than a guess.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from vmferry.imports.mapping import ImportPlan
from vmferry.model.source_vm import Firmware, GuestOs

LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
ET.register_namespace("libosinfo", LIBOSINFO_NS)

# GuestOs.version of a Windows guest (vmferry.sources.guest_os) -> the libosinfo id's tail.
_WINDOWS = {
    "2022": "2k22", "2019": "2k19", "2016": "2k16", "2012r2": "2k12r2", "2012": "2k12",
    "2008r2": "2k8r2", "2008": "2k8", "2003": "2k3", "2000": "2k", "11": "11", "10": "10",
    "8.1": "8.1", "8": "8", "7": "7", "vista": "vista", "xp": "xp", "98": "98", "95": "95",
}  # fmt: skip
_RHEL_MAJORS = ("6", "7", "8", "9")  # libosinfo's rhelN-unknown: RHEL N, minor release unknown


def libosinfo_id(guest: GuestOs) -> str | None:
    """The libosinfo id of ``guest``, or None when the source does not say enough."""
    version = guest.version.strip().lower()
    if guest.family == "windows":
        tail = _WINDOWS.get(version)
        return None if tail is None else f"http://microsoft.com/win/{tail}"
    if guest.family == "linux" and guest.distro == "debian" and version.isdigit():
        return f"http://debian.org/debian/{int(version)}"
    if guest.family == "linux" and guest.distro == "rhel" and version in _RHEL_MAJORS:
        return f"http://redhat.com/rhel/{version}-unknown"
    return None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def render_domain_xml(plan: ImportPlan) -> str:
    """The domain XML to define on the destination; disks are volumes of their pools."""
    dom = ET.Element("domain", {"type": plan.domain_type})
    _sub(dom, "name", plan.name)
    _sub(dom, "uuid", plan.uuid)
    osinfo = libosinfo_id(plan.guest_os)
    if osinfo is not None:
        libosinfo = _sub(_sub(dom, "metadata"), f"{{{LIBOSINFO_NS}}}libosinfo")
        _sub(libosinfo, f"{{{LIBOSINFO_NS}}}os", id=osinfo)
    _sub(dom, "memory", str(plan.memory_mb), unit="MiB")
    _sub(dom, "currentMemory", str(plan.memory_mb), unit="MiB")
    if plan.memory_locked:
        _sub(_sub(dom, "memoryBacking"), "locked")
    _sub(dom, "vcpu", str(plan.vcpus), placement="static")
    _os(dom, plan)
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if plan.secure_boot:
        _sub(features, "smm", state="on")
    cpu = _sub(dom, "cpu", **({"mode": "host-model"} if plan.domain_type == "kvm"
                             else {"mode": "custom", "match": "exact"}))  # fmt: skip
    if plan.domain_type != "kvm":
        _sub(cpu, "model", "qemu64", fallback="allow")
    _sub(cpu, "topology", sockets=str(plan.sockets), dies="1", cores=str(plan.cores), threads="1")
    _sub(dom, "clock", offset="localtime" if plan.guest_family == "windows" else "utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    _devices(dom, plan)
    ET.indent(dom, space="  ")
    return ET.tostring(dom, encoding="unicode") + "\n"


def _os(dom: ET.Element, plan: ImportPlan) -> None:
    os_el = _sub(dom, "os", **({"firmware": "efi"} if plan.firmware is Firmware.EFI else {}))
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if plan.firmware is Firmware.EFI:
        fw = _sub(os_el, "firmware")
        _sub(fw, "feature", enabled="yes" if plan.secure_boot else "no", name="secure-boot")
        if plan.secure_boot:
            _sub(fw, "feature", enabled="yes", name="enrolled-keys")


def _devices(dom: ET.Element, plan: ImportPlan) -> None:
    devices = _sub(dom, "devices")
    for disk in plan.disks:
        d = _sub(devices, "disk", type="volume", device="disk")
        _sub(d, "driver", name="qemu", type="qcow2", discard="unmap")
        _sub(d, "source", pool=disk.pool or plan.pool, volume=disk.volume)
        _sub(d, "target", dev=disk.target_dev, bus=disk.bus)
        if disk.boot_order is not None:
            _sub(d, "boot", order=str(disk.boot_order))
    used = sum(1 for d in plan.disks if d.bus == "sata")
    for i in range(plan.cdroms):
        cd = _sub(devices, "disk", type="file", device="cdrom")
        _sub(cd, "driver", name="qemu", type="raw")
        _sub(cd, "target", dev="sd" + chr(ord("a") + used + i), bus="sata")
        _sub(cd, "readonly")
    for nic in plan.nics:
        iface = _sub(devices, "interface", type="network")
        if nic.mac is not None:
            _sub(iface, "mac", address=nic.mac)
        _sub(iface, "source", network=nic.network or "")
        _sub(iface, "model", type=nic.model)
    _sub(devices, "controller", type="usb", model="qemu-xhci" if plan.usb else "none")
    if plan.console_log is not None:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=plan.console_log, append="on")
        _sub(serial, "target", port="0")
        console = _sub(devices, "console", type="file")
        _sub(console, "source", path=plan.console_log, append="on")
        _sub(console, "target", type="serial", port="0")
    else:
        _sub(_sub(devices, "serial", type="pty"), "target", port="0")
        _sub(_sub(devices, "console", type="pty"), "target", type="serial", port="0")
    if plan.usb:
        _sub(devices, "input", type="tablet", bus="usb")
    graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes")
    _sub(graphics, "listen", type="address", address="127.0.0.1")
    _sub(_sub(devices, "video"), "model", type="virtio" if plan.virtio else "vga")
    if plan.virtio:  # the QEMU guest agent's port (what vmferry verifies a guest through)
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
        _sub(devices, "memballoon", model="virtio")
    else:
        _sub(devices, "memballoon", model="none")
