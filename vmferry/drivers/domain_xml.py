"""Read a libvirt domain XML document into a :class:`~vmferry.model.VmSpec`.

Pure: no libvirt, no I/O. The XML may come from a host (``virsh dumpxml``) or from a user,
so it is parsed with defusedxml with DTDs, entities and external references forbidden.
Elements libvirt would fill in with defaults (disk bus, vCPU topology, CPU mode) are
completed the way libvirt does it, so a hand-written document and the same domain read back
from a host give the same spec.

The guest OS is the id of the libosinfo metadata that virt-install, virt-manager, virt-v2v
and vmferry's own import write (``<metadata><libosinfo:libosinfo ...><libosinfo:os
id="http://debian.org/debian/12"/>``), kept whole: the short name (``debian12``) is not part
of the id and only the osinfo database knows it.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from vmferry.errors import BadInputError
from vmferry.model import (
    CpuTopology,
    Disk,
    DiskDevice,
    HostDevice,
    Nic,
    VcpuPin,
    VmSpec,
)

__all__ = ["LIBOSINFO_NS", "MAX_DOMAIN_XML_CHARS", "memory_to_bytes", "parse_domain_xml"]

LIBOSINFO_NS = "http://libosinfo.org/xmlns/libvirt/domain/1.0"
_MAX_GUEST_OS_CHARS = 255

# Real domain XML is a few KiB; anything this big is a mistake or an attack.
MAX_DOMAIN_XML_CHARS = 4 * 1024 * 1024

# libvirt's scaled-integer units (docs: formatdomain.html#memory-allocation).
_UNIT_FACTORS: dict[str, int] = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
    "pb": 1000**5,
    "p": 1024**5,
    "pib": 1024**5,
    "eb": 1000**6,
    "e": 1024**6,
    "eib": 1024**6,
}

# What libvirt assumes for a disk target without a bus attribute.
_BUS_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("xvd", "xen"),
    ("ubd", "uml"),
    ("vd", "virtio"),
    ("sd", "scsi"),
    ("hd", "ide"),
    ("fd", "fdc"),
)

_SOURCE_KIND_BY_TYPE: dict[str, str] = {
    "file": "file",
    "block": "block",
    "volume": "volume",
    "network": "network",
}


def memory_to_bytes(value: str, unit: str | None = None) -> int:
    """Convert a libvirt scaled integer (``value`` in ``unit``, default KiB) to bytes."""
    factor = _UNIT_FACTORS.get((unit or "KiB").strip().lower())
    if factor is None:
        raise BadInputError(
            f"unknown memory unit {unit!r}; libvirt accepts b, KiB, MiB, GiB, TiB, KB, MB, ..."
        )
    return _int(value, "memory size") * factor


def parse_domain_xml(xml: str) -> VmSpec:
    """Parse a libvirt ``<domain>`` document.

    Raises :class:`BadInputError` when the text is not well-formed XML, uses a DTD or
    entities, is not a ``<domain>``, or lacks what every domain must have (name, memory).
    """
    root = _parse(xml)
    if root.tag != "domain":
        raise BadInputError(f"expected a libvirt <domain> document, got <{root.tag}>")

    name = _text(root, "name")
    if not name:
        raise BadInputError("the domain XML has no <name>; every libvirt domain needs one")

    vcpus, max_vcpus = _vcpus(root)
    cpu = root.find("cpu")
    os_el = root.find("os")
    devices = root.find("devices")
    device_list: list[Element] = list(devices) if devices is not None else []

    nics = tuple(_nic(el) for el in device_list if el.tag == "interface")
    host_devices = tuple(hd for hd in (_host_device(el) for el in device_list) if hd is not None)
    return VmSpec(
        name=name,
        uuid=(_text(root, "uuid") or "").lower(),
        vcpus=vcpus,
        memory_bytes=_memory(root),
        topology=_topology(cpu, max_vcpus),
        cpu_mode=_cpu_mode(cpu),
        cpu_model=(_text(cpu, "model") or None) if cpu is not None else None,
        domain_type=root.get("type", "kvm"),
        machine=_os_type_attr(os_el, "machine"),
        arch=_os_type_attr(os_el, "arch"),
        firmware=_firmware(os_el),
        disks=tuple(_disk(el) for el in device_list if el.tag == "disk"),
        nics=nics,
        host_devices=host_devices,
        vcpu_pins=_vcpu_pins(root),
        guest_os=_guest_os(root),
    )


# -- document ---------------------------------------------------------------------------


def _parse(xml: str) -> Element:
    if not xml.strip():
        raise BadInputError("the domain XML is empty")
    if len(xml) > MAX_DOMAIN_XML_CHARS:
        raise BadInputError(
            f"the domain XML is {len(xml)} characters long, more than the "
            f"{MAX_DOMAIN_XML_CHARS} a libvirt domain could plausibly need"
        )
    try:
        return fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise BadInputError(
            f"refusing domain XML with a DTD, entity or external reference ({exc}); "
            "libvirt domain XML never needs them",
            cause=exc,
        ) from exc
    except ParseError as exc:
        raise BadInputError(f"the domain XML is not well-formed: {exc}", cause=exc) from exc


def _text(parent: Element | None, path: str) -> str | None:
    if parent is None:
        return None
    el = parent.find(path)
    if el is None or el.text is None:
        return None
    return el.text.strip()


def _int(value: str | None, what: str) -> int:
    if value is None:
        raise BadInputError(f"missing {what} in the domain XML")
    try:
        return int(value.strip(), 0)
    except ValueError:
        try:
            return int(value.strip(), 10)  # int("010", 0) refuses leading zeros
        except ValueError as exc:
            raise BadInputError(f"{what} {value!r} is not an integer", cause=exc) from exc


def _opt_int(value: str | None, what: str) -> int | None:
    return None if value is None else _int(value, what)


# -- CPU and memory ---------------------------------------------------------------------


def _vcpus(root: Element) -> tuple[int, int]:
    """Return (current, maximum) vCPUs; libvirt's default is one."""
    el = root.find("vcpu")
    if el is None or not (el.text or "").strip():
        return 1, 1
    maximum = _int(el.text, "<vcpu> count")
    current = _opt_int(el.get("current"), "<vcpu current=...>")
    if maximum < 1 or (current is not None and not 1 <= current <= maximum):
        raise BadInputError(f"invalid vCPU count: current={current}, maximum={maximum}")
    return (current if current is not None else maximum), maximum


def _topology(cpu: Element | None, max_vcpus: int) -> CpuTopology:
    # Without <topology>, libvirt gives the guest one single-core socket per (maximum) vCPU.
    topo = cpu.find("topology") if cpu is not None else None
    if topo is None:
        return CpuTopology(sockets=max_vcpus, cores=1, threads=1)
    return CpuTopology(
        sockets=_int(topo.get("sockets", "1"), "topology sockets"),
        cores=_int(topo.get("cores", "1"), "topology cores"),
        threads=_int(topo.get("threads", "1"), "topology threads"),
    )


def _cpu_mode(cpu: Element | None) -> str | None:
    if cpu is None:
        return None
    mode = cpu.get("mode")
    if mode is not None:
        return mode
    # libvirt's default mode is "custom", but only meaningful when a model is given.
    return "custom" if cpu.find("model") is not None else None


def _memory(root: Element) -> int:
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is not None and (el.text or "").strip():
            return memory_to_bytes(el.text or "", el.get("unit"))
    raise BadInputError("the domain XML has no <memory>; every libvirt domain needs one")


def _vcpu_pins(root: Element) -> tuple[VcpuPin, ...]:
    return tuple(
        VcpuPin(vcpu=_int(pin.get("vcpu"), "vcpupin vcpu"), cpuset=pin.get("cpuset", ""))
        for pin in root.findall("cputune/vcpupin")
    )


# -- OS and firmware --------------------------------------------------------------------


def _os_type_attr(os_el: Element | None, attr: str) -> str | None:
    type_el = os_el.find("type") if os_el is not None else None
    return type_el.get(attr) if type_el is not None else None


def _guest_os(root: Element) -> str | None:
    """The libosinfo id in the domain's metadata; None without one (or an empty one)."""
    os_el = root.find(f"metadata/{{{LIBOSINFO_NS}}}libosinfo/{{{LIBOSINFO_NS}}}os")
    found = (os_el.get("id") or "").strip() if os_el is not None else ""
    if len(found) > _MAX_GUEST_OS_CHARS:
        raise BadInputError(
            f"the domain's libosinfo os id is {len(found)} characters long; "
            f"ids are URLs of at most {_MAX_GUEST_OS_CHARS}"
        )
    return found or None


def _firmware(os_el: Element | None) -> str:
    if os_el is None:
        return "bios"
    if os_el.get("firmware") == "efi":
        return "efi"
    loader = os_el.find("loader")
    if loader is not None and loader.get("type") == "pflash":
        return "efi"
    return "bios"


# -- disks ------------------------------------------------------------------------------


def _disk(el: Element) -> Disk:
    target_el = el.find("target")
    target = target_el.get("dev") if target_el is not None else None
    if not target:
        raise BadInputError("a <disk> in the domain XML has no <target dev=...>")
    bus = target_el.get("bus") if target_el is not None else None
    if not bus:
        bus = next((b for prefix, b in _BUS_BY_PREFIX if target.startswith(prefix)), "unknown")

    device_name = el.get("device", "disk")
    try:
        device = DiskDevice(device_name)
    except ValueError as exc:
        raise BadInputError(
            f"disk {target}: unknown device kind {device_name!r} "
            f"(expected one of {', '.join(d.value for d in DiskDevice)})",
            cause=exc,
        ) from exc

    driver = el.find("driver")
    source, source_kind, pool = _disk_source(el.get("type", "file"), el.find("source"))
    return Disk(
        target=target,
        bus=bus,
        device=device,
        format=driver.get("type") if driver is not None else None,
        source=source,
        source_kind=source_kind,
        pool=pool,
        readonly=el.find("readonly") is not None,
        shareable=el.find("shareable") is not None,
    )


def _disk_source(disk_type: str, src: Element | None) -> tuple[str | None, str, str | None]:
    """Return (source, source_kind, pool) for a disk's ``<source>``."""
    if src is None:
        return None, "none", None
    kind = _SOURCE_KIND_BY_TYPE.get(disk_type, disk_type)
    if disk_type == "volume":
        pool, volume = src.get("pool"), src.get("volume")
        if not pool or not volume:
            return None, "none", None
        return f"{pool}/{volume}", kind, pool
    if disk_type == "network":
        protocol, name = src.get("protocol"), src.get("name")
        if not protocol:
            return None, "none", None
        host = src.find("host")
        host_part = ""
        if host is not None and host.get("name"):
            host_part = host.get("name", "")
            if host.get("port"):
                host_part += f":{host.get('port')}"
        return f"{protocol}://{host_part}/{name or ''}", kind, None
    # file, block, dir and the rarer types keep their path in one of these attributes.
    for attr in ("file", "dev", "dir", "path"):
        value = src.get(attr)
        if value:
            return value, kind, None
    return None, "none", None


# -- network interfaces -----------------------------------------------------------------


def _nic(el: Element) -> Nic:
    kind = el.get("type", "")
    mac_el = el.find("mac")
    model_el = el.find("model")
    target_el = el.find("target")
    src = el.find("source")
    network = bridge = portgroup = None
    if src is not None:
        network = src.get("network")
        bridge = src.get("bridge")
        portgroup = src.get("portgroup")
        if kind == "direct":
            bridge = None
    return Nic(
        mac=(mac_el.get("address", "") if mac_el is not None else "").lower(),
        kind=kind,
        model=model_el.get("type") if model_el is not None else None,
        network=network,
        bridge=bridge,
        portgroup=portgroup,
        target_dev=target_el.get("dev") if target_el is not None else None,
    )


# -- passed-through host devices --------------------------------------------------------


def _host_device(el: Element) -> HostDevice | None:
    """A ``<hostdev>``, or an ``<interface type='hostdev'>`` (SR-IOV VF), as a HostDevice."""
    if el.tag == "interface" and el.get("type") == "hostdev":
        kind = "pci"
    elif el.tag == "hostdev":
        kind = el.get("type", "")
    else:
        return None
    src = el.find("source")
    if src is None:
        raise BadInputError(f"a <{el.tag} type='{kind}'> in the domain XML has no <source>")
    if kind == "pci":
        return HostDevice(kind="pci", address=_pci_address(src.find("address")))
    if kind == "usb":
        return HostDevice(kind="usb", address=_usb_address(src))
    if kind == "scsi":
        return HostDevice(kind="scsi", address=_scsi_address(src))
    if kind == "mdev":
        addr = src.find("address")
        return HostDevice(kind="mdev", address=addr.get("uuid", "") if addr is not None else "")
    return HostDevice(kind=kind or "unknown", address="")


def _scsi_address(src: Element) -> str:
    adapter, addr = src.find("adapter"), src.find("address")
    if adapter is not None and addr is not None:
        numbers = [_int(addr.get(k, "0"), "SCSI address") for k in ("bus", "target", "unit")]
        return ":".join([adapter.get("name", ""), *map(str, numbers)])
    # iSCSI passthrough: <source protocol='iscsi' name='iqn...'>
    return src.get("name") or ""


def _pci_address(addr: Element | None) -> str:
    if addr is None:
        raise BadInputError("a PCI host device in the domain XML has no source <address>")
    domain = _int(addr.get("domain", "0"), "PCI domain")
    bus = _int(addr.get("bus"), "PCI bus")
    slot = _int(addr.get("slot"), "PCI slot")
    function = _int(addr.get("function", "0"), "PCI function")
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


def _usb_address(src: Element) -> str:
    vendor, product = src.find("vendor"), src.find("product")
    if vendor is not None and product is not None:
        vendor_id = _int(vendor.get("id"), "USB vendor id")
        product_id = _int(product.get("id"), "USB product id")
        return f"{vendor_id:04x}:{product_id:04x}"
    addr = src.find("address")
    if addr is not None:
        bus = _int(addr.get("bus"), "USB bus")
        device = _int(addr.get("device"), "USB device")
        return f"bus={bus},device={device}"
    raise BadInputError("a USB host device has neither <vendor>/<product> nor <address>")
