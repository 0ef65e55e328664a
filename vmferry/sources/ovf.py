"""OVF 1.x / 2.0 descriptor parsing (with defusedxml) -> ``OvfDescription`` -> ``SourceVm``.

``parse_ovf`` is pure: bytes in, a description out, in which disks and media still name
files by their ``References`` href (a plain file name in the package's directory).
``build_vm`` joins it with the inspected disk files. ``read_ovf`` does both for an OVF
beside its files, and checks a ``.mf`` manifest there when there is one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as StdET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml.common import DefusedXmlException, DTDForbidden, EntitiesForbidden

from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.model.source_vm import (
    Firmware,
    GuestOs,
    SourceDisk,
    SourceFormat,
    SourceMedia,
    SourceNic,
    SourceVm,
)
from vmferry.sources import guest_os, manifest
from vmferry.sources.devices import normalize_mac, order_disks
from vmferry.sources.image import ImageFacts, check_image
from vmferry.sources.limits import Limits
from vmferry.sources.placement_keys import (
    OVF_CONFIG_KEYS,
    VMX_KEYS,
    merge,
    read_placement,
    settle,
)
from vmferry.sources.refusal import Refused, bad_input, printable, read_descriptor

OVF1_NS = "http://schemas.dmtf.org/ovf/envelope/1"
OVF2_NS = "http://schemas.dmtf.org/ovf/envelope/2"

RT_OTHER = 1
RT_CPU = 3
RT_MEMORY = 4
RT_IDE = 5
RT_SCSI = 6
RT_FC = 7
RT_ISCSI = 8
RT_ETHERNET = 10
RT_OTHER_NET = 11
RT_FLOPPY = 14
RT_CD = 15
RT_DVD = 16
RT_DISK = 17
RT_OTHER_STORAGE = 20
RT_SERIAL = 21
RT_PARALLEL = 22
RT_USB = 23
RT_GRAPHICS = 24
RT_SOUND = 35

SCSI_SUBTYPES = {
    "lsilogic": "lsilogic",
    "lsilogicsas": "lsisas1068",
    "virtualscsi": "pvscsi",
    "buslogic": "buslogic",
}
STORAGE_SUBTYPES = {
    "vmware.sata.ahci": "sata",
    "ahci": "sata",
    "vmware.nvme.controller": "nvme",
    "nvme": "nvme",
}
NIC_SUBTYPES = {
    "vmxnet3": "vmxnet3",
    "vmxnet2": "vmxnet2",
    "vmxnet": "vmxnet",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "pcnet32": "vlance",
    "virtio": "virtio",
    "netvsc": "netvsc",
}
# vmw:Config keys that carry nothing the import needs.
_HARMLESS_CONFIG = re.compile(
    r"^(?:tools\..*|powerOpInfo\..*|cpuHotRemoveEnabled"
    r"|virtualICH7MPresent|virtualSMCPresent|bootOptions\.bootDelay|bootOptions\.efiSecureBootEnabled"
    r"|nestedHVEnabled|simultaneousThreads|vmxStats\..*|svga\..*|vmware\.tools\..*"
    r"|flags\..*|hpet0\.present|firmware|uefi\.secureBoot\.enabled"
    r"|virtualHW\..*|numa\.autosize.*|monitor\.phys_bits_used|pciBridge\d+\..*|sched\.swap\..*"
    r"|vmotion\..*|migrate\..*|guestOS\.detailed\.data|ctkEnabled|disk\.EnableUUID)$"
)
_UNITS = re.compile(r"^byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?$", re.IGNORECASE)
_NAMED_UNITS = {
    "byte": 1,
    "bytes": 1,
    "kilobytes": 1024,
    "kb": 1024,
    "megabytes": 1024**2,
    "mb": 1024**2,
    "gigabytes": 1024**3,
    "gb": 1024**3,
}


@dataclass(frozen=True)
class OvfFile:
    """A ``References/File``: ``href`` is a plain file name beside the descriptor."""

    id: str
    href: str
    size: int | None = None


@dataclass(frozen=True)
class OvfDiskSlot:
    """A disk drive of the VM and the file (href) that holds its contents."""

    href: str
    declared_capacity: int
    bus: str
    controller: int
    unit: int
    label: str = ""


@dataclass(frozen=True)
class OvfDescription:
    name: str
    vcpus: int
    sockets: int
    cores: int
    memory_mb: int
    firmware: Firmware = Firmware.BIOS
    secure_boot: bool = False
    guest_os: GuestOs = field(default_factory=GuestOs)
    disks: tuple[OvfDiskSlot, ...] = ()
    nics: tuple[SourceNic, ...] = ()
    media: tuple[SourceMedia, ...] = ()  # ``image`` holds an href here
    usb: bool = False
    serial_ports: int = 0
    passthrough: tuple[str, ...] = ()
    uuid: str | None = None
    files: tuple[OvfFile, ...] = ()
    warnings: tuple[str, ...] = ()
    placement: PlacementSettings = field(default_factory=PlacementSettings)


def local(tag: str) -> str:
    """An element's or attribute's name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def _attr(element: Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if local(key) == name:
            return value
    return None


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if local(child.tag) == name]


def _child(element: Element, name: str) -> Element | None:
    found = _children(element, name)
    return found[0] if found else None


def _text(element: Element, name: str) -> str | None:
    child = _child(element, name)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def check_href(href: str) -> None:
    """A References href must be a plain file name in the descriptor's directory."""
    shown = printable(href)
    if not href or href in (".", ".."):
        raise Refused(f"OVF file reference {shown!r} is not a file name")
    if "/" in href or "\\" in href or ".." in href.split("/") or ":" in href:
        raise Refused(
            f"OVF file reference {shown} is not a plain file name in the package "
            "(no /, no .., no URL)"
        )
    if "\x00" in href or href.startswith("."):
        raise Refused(f"OVF file reference {shown} is not a plain file name")


def _units(text: str | None) -> int:
    if text is None:
        return 1
    value = text.strip()
    match = _UNITS.match(value)
    if match:
        base, power = match.group(1), match.group(2)
        return int(base) ** int(power) if base else 1
    named = _NAMED_UNITS.get(value.lower())
    if named is None:
        raise Refused(f"OVF allocation units {printable(value, 40)!r} are not understood")
    return named


def _integer(text: str | None, what: str) -> int:
    if text is None or not text.strip().isdigit():
        raise Refused(f"OVF {what} is not a whole number: {printable(text or 'missing', 40)}")
    return int(text.strip())


def parse_xml(data: bytes) -> Element:
    """The root element, parsed with DTDs, entities and external references forbidden."""
    try:
        root: Element = SafeET.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DTDForbidden:
        raise Refused("OVF has a DTD (<!DOCTYPE>); refused") from None
    except EntitiesForbidden:
        raise Refused("OVF declares XML entities; refused") from None
    except DefusedXmlException as exc:
        raise Refused(f"OVF uses a forbidden XML construct ({type(exc).__name__})") from None
    except StdET.ParseError as exc:
        raise Refused(f"OVF is not well-formed XML ({printable(str(exc), 80)})") from None
    return root


@dataclass
class _Hardware:
    warnings: list[str]
    vcpus: int = 1
    cores: int = 1
    memory_mb: int = 0
    controllers: dict[str, tuple[str, int]] = field(default_factory=dict)
    disks: list[OvfDiskSlot] = field(default_factory=list)
    nics: list[SourceNic] = field(default_factory=list)
    media: list[SourceMedia] = field(default_factory=list)
    usb: bool = False
    serial_ports: int = 0
    passthrough: list[str] = field(default_factory=list)
    firmware: Firmware = Firmware.BIOS
    secure_boot: bool = False
    # placement keys by lowercase key: vmw:ExtraConfig (VMX keys), vmw:Config (API names)
    extra_config: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)
    cpu_item: dict[str, str] = field(default_factory=dict)
    memory_item: dict[str, str] = field(default_factory=dict)


def parse_ovf(data: bytes) -> OvfDescription:
    """The one VM an OVF descriptor describes."""
    root = parse_xml(data)
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if local(root.tag) != "Envelope" or namespace not in (OVF1_NS, OVF2_NS):
        raise Refused(f"not an OVF 1.x/2.0 envelope (root element {printable(root.tag, 80)})")
    warnings: list[str] = []
    files = _references(root)
    disks = _disk_section(root, files)
    system = _virtual_system(root)
    hardware_sections = _children(system, "VirtualHardwareSection")
    if not hardware_sections:
        raise Refused("OVF VirtualSystem has no VirtualHardwareSection")
    if len(hardware_sections) > 1:
        warnings.append("OVF has several VirtualHardwareSections; the first is used")
    hw = _Hardware(warnings)
    _hardware(hardware_sections[0], _default_configuration(root), disks, files, hw)
    _vbox_machine(system, hw)
    if hw.memory_mb <= 0:
        raise Refused("OVF declares no memory (ResourceType 4)")
    cores = hw.cores
    if hw.vcpus % cores:
        warnings.append(
            f"{hw.vcpus} vCPUs are not a multiple of {cores} cores per socket; one core "
            "per socket is used"
        )
        cores = 1
    os_section = _child(system, "OperatingSystemSection")
    guest = GuestOs()
    if os_section is not None:
        guest = guest_os.from_ovf(
            _attr(os_section, "id"), _attr(os_section, "osType"), _attr(os_section, "version")
        )
    name = _text(system, "Name") or _attr(system, "id") or ""
    vssd = _child(hardware_sections[0], "System")
    vm_uuid = None
    if vssd is not None:
        name = name or _text(vssd, "ElementName") or ""
        ident = _text(vssd, "VirtualSystemIdentifier") or ""
        if re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", ident):
            vm_uuid = ident.lower()
    return OvfDescription(
        name=name.strip(),
        vcpus=hw.vcpus,
        sockets=hw.vcpus // cores,
        cores=cores,
        memory_mb=hw.memory_mb,
        firmware=hw.firmware,
        secure_boot=hw.secure_boot,
        guest_os=guest,
        disks=tuple(hw.disks),
        nics=tuple(hw.nics),
        media=tuple(hw.media),
        usb=hw.usb,
        serial_ports=hw.serial_ports,
        passthrough=tuple(hw.passthrough),
        uuid=vm_uuid,
        files=tuple(files.values()),
        warnings=tuple(warnings),
        placement=settle(
            merge(
                read_placement(hw.extra_config, VMX_KEYS)[0],
                read_placement(hw.config, OVF_CONFIG_KEYS)[0],
                _allocations(hw),
            ),
            hw.memory_mb,
        ),
    )


def _references(root: Element) -> dict[str, OvfFile]:
    files: dict[str, OvfFile] = {}
    section = _child(root, "References")
    for element in _children(section, "File") if section is not None else []:
        file_id = _attr(element, "id") or ""
        href = _attr(element, "href") or ""
        check_href(href)
        if _attr(element, "compression") not in (None, "", "identity"):
            raise Refused(f"OVF file {printable(href)} is compressed; vmferry does not unpack it")
        if _attr(element, "chunkSize"):
            raise Refused(f"OVF file {printable(href)} is split in chunks; not supported")
        size_text = _attr(element, "size")
        size = int(size_text) if size_text and size_text.isdigit() else None
        files[file_id] = OvfFile(file_id, href, size)
    return files


@dataclass(frozen=True)
class _Disk:
    file_ref: str | None
    capacity: int


def _disk_section(root: Element, files: dict[str, OvfFile]) -> dict[str, _Disk]:
    disks: dict[str, _Disk] = {}
    section = _child(root, "DiskSection")
    for element in _children(section, "Disk") if section is not None else []:
        disk_id = _attr(element, "diskId") or ""
        file_ref = _attr(element, "fileRef")
        if file_ref is not None and file_ref not in files:
            raise Refused(
                f"OVF disk {printable(disk_id)} names an unknown file {printable(file_ref)}"
            )
        capacity = _integer(_attr(element, "capacity"), f"capacity of disk {printable(disk_id)}")
        capacity *= _units(_attr(element, "capacityAllocationUnits"))
        disks[disk_id] = _Disk(file_ref, capacity)
    return disks


def _virtual_system(root: Element) -> Element:
    systems = _children(root, "VirtualSystem")
    for collection in _children(root, "VirtualSystemCollection"):
        systems.extend(_children(collection, "VirtualSystem"))
    if len(systems) != 1:
        raise Refused(
            f"OVF holds {len(systems)} virtual systems; vmferry imports one VM per package"
        )
    return systems[0]


def _default_configuration(root: Element) -> str | None:
    section = _child(root, "DeploymentOptionSection")
    if section is None:
        return None
    configs = _children(section, "Configuration")
    for config in configs:
        if (_attr(config, "default") or "").lower() == "true":
            return _attr(config, "id")
    return _attr(configs[0], "id") if configs else None


def _item_fields(item: Element) -> dict[str, str]:
    fields: dict[str, str] = {}
    for child in item:
        if child.text is not None and local(child.tag) not in fields:
            fields[local(child.tag)] = child.text.strip()
    return fields


def _hardware(
    section: Element,
    config: str | None,
    disks: dict[str, _Disk],
    files: dict[str, OvfFile],
    hw: _Hardware,
) -> None:
    items: list[dict[str, str]] = []
    for element in section:
        kind = local(element.tag)
        if kind in ("Item", "StorageItem", "EthernetPortItem"):
            wanted = _attr(element, "configuration")
            if wanted and config and config not in wanted.split():
                continue
            fields = _item_fields(element)
            items.append(fields)
            for child in element:
                if local(child.tag) == "Config":
                    hw.warnings.append(
                        f"vmw:Config {printable(_attr(child, 'key') or '', 60)} of item "
                        f"{printable(fields.get('ElementName', ''), 40)} is not imported"
                    )
        elif kind in ("Config", "ExtraConfig"):
            _vmw_config(element, kind, hw)
        elif kind not in ("System", "Info"):
            hw.warnings.append(f"OVF hardware element {printable(kind, 40)} is not imported")
    counts: dict[str, int] = {}
    for fields in items:  # controllers first: disks refer to them by InstanceID
        rtype = _resource_type(fields)
        bus = None
        if rtype == RT_IDE:
            bus = "ide"
        elif rtype == RT_SCSI:
            sub = fields.get("ResourceSubType", "").lower()
            bus = SCSI_SUBTYPES.get(sub, "unknown")
            if bus == "unknown":
                hw.warnings.append(f"SCSI controller subtype {printable(sub, 40)!r} is unknown")
        elif rtype == RT_OTHER_STORAGE:
            sub = fields.get("ResourceSubType", "").lower()
            bus = STORAGE_SUBTYPES.get(sub, "unknown")
            if bus == "unknown":
                hw.warnings.append(f"storage controller subtype {printable(sub, 40)!r} is unknown")
        if bus is not None:
            address = fields.get("Address", "")
            index = int(address) if address.isdigit() else counts.get(bus, 0)
            counts[bus] = max(counts.get(bus, 0), index + 1)
            hw.controllers[fields.get("InstanceID", "")] = (bus, index)
    for fields in items:
        _item(fields, disks, files, hw)


def _resource_type(fields: dict[str, str]) -> int:
    text = fields.get("ResourceType", "")
    if not text.isdigit():
        raise Refused(f"OVF item has ResourceType {printable(text or 'missing', 20)!r}")
    return int(text)


def _item(
    fields: dict[str, str], disks: dict[str, _Disk], files: dict[str, OvfFile], hw: _Hardware
) -> None:
    rtype = _resource_type(fields)
    label = fields.get("ElementName") or fields.get("Caption") or f"item {fields.get('InstanceID')}"
    label = printable(label, 60)
    if rtype == RT_CPU:
        hw.cpu_item = fields
        hw.vcpus = max(1, _integer(fields.get("VirtualQuantity"), "CPU VirtualQuantity"))
        cores = fields.get("CoresPerSocket")
        hw.cores = max(1, _integer(cores, "CoresPerSocket")) if cores else 1
    elif rtype == RT_MEMORY:
        hw.memory_item = fields
        quantity = _integer(fields.get("VirtualQuantity"), "memory VirtualQuantity")
        units = _units(fields.get("AllocationUnits") or "byte * 2^20")
        hw.memory_mb = quantity * units // (1024 * 1024)
    elif rtype in (RT_IDE, RT_SCSI, RT_OTHER_STORAGE):
        return
    elif rtype == RT_DISK:
        _disk_item(fields, label, disks, files, hw)
    elif rtype in (RT_CD, RT_DVD, RT_FLOPPY):
        image = None
        resource = fields.get("HostResource", "")
        if resource:
            file_id = re.sub(r"^(ovf:)?/file/", "", resource)
            ref = files.get(file_id)
            if ref is None:
                hw.warnings.append(f"{label} names {printable(resource, 60)}, not a packaged file")
            else:
                image = ref.href
        parent = hw.controllers.get(fields.get("Parent", ""), ("ide", 0))[0]
        if rtype == RT_FLOPPY:
            hw.media.append(SourceMedia("floppy", image, "fdc"))
        else:
            bus = parent if parent in ("ide", "sata") else "scsi"
            hw.media.append(SourceMedia("cdrom", image, bus))
    elif rtype in (RT_ETHERNET, RT_OTHER_NET):
        sub = fields.get("ResourceSubType", "").lower()
        model = NIC_SUBTYPES.get(sub, "unknown")
        if model == "unknown":
            hw.warnings.append(f"{label} adapter type {printable(sub, 30)!r} is unknown")
        raw_mac = fields.get("Address")
        mac = normalize_mac(raw_mac) if raw_mac else None
        if raw_mac and mac is None:
            hw.warnings.append(f"{label} Address {printable(raw_mac, 30)!r} is not a MAC")
        connected = fields.get("AutomaticAllocation", "true").lower() != "false"
        hw.nics.append(SourceNic(mac, model, fields.get("Connection") or None, connected))
    elif rtype == RT_USB:
        hw.usb = True
    elif rtype == RT_SERIAL:
        hw.serial_ports += 1
    elif rtype == RT_GRAPHICS:
        return  # the KVM side gets its own video device
    elif rtype == RT_OTHER and fields.get("ResourceSubType", "").lower() == "vmware.vmci":
        return
    elif rtype == RT_OTHER and "passthrough" in fields.get("ResourceSubType", "").lower():
        hw.passthrough.append(f"{label} {printable(fields.get('ResourceSubType', ''), 40)}")
    else:
        sub = fields.get("ResourceSubType", "")
        hw.warnings.append(
            f"OVF item {label} (ResourceType {rtype}{' ' + printable(sub, 40) if sub else ''}) "
            "is not imported"
        )


def _disk_item(
    fields: dict[str, str],
    label: str,
    disks: dict[str, _Disk],
    files: dict[str, OvfFile],
    hw: _Hardware,
) -> None:
    resource = fields.get("HostResource", "")
    match = re.match(r"^(?:ovf:)?/(disk|file)/(.+)$", resource)
    if match is None:
        raise Refused(f"OVF disk {label} has HostResource {printable(resource, 60)!r}")
    if match.group(1) == "disk":
        disk = disks.get(match.group(2))
        if disk is None:
            raise Refused(f"OVF disk {label} names an unknown disk {printable(resource, 60)}")
        if disk.file_ref is None:
            hw.warnings.append(f"OVF disk {label} has no file (a blank disk); not imported")
            return
        href, capacity = files[disk.file_ref].href, disk.capacity
    else:
        ref = files.get(match.group(2))
        if ref is None:
            raise Refused(f"OVF disk {label} names an unknown file {printable(resource, 60)}")
        href, capacity = ref.href, 0
    parent = fields.get("Parent", "")
    bus, controller = hw.controllers.get(parent, ("unknown", 0))
    if parent not in hw.controllers:
        hw.warnings.append(f"OVF disk {label} has no known controller (Parent {parent!r})")
    unit_text = fields.get("AddressOnParent", "0")
    unit = int(unit_text) if unit_text.isdigit() else 0
    hw.disks.append(OvfDiskSlot(href, capacity, bus, controller, unit, label))


def _vmw_config(element: Element, kind: str, hw: _Hardware) -> None:
    key = _attr(element, "key") or ""
    raw_value = _attr(element, "value") or ""
    value = raw_value.strip().lower()
    if kind == "ExtraConfig" and key.lower() in VMX_KEYS:
        hw.extra_config[key.lower()] = raw_value
    elif kind == "Config" and key.lower() in OVF_CONFIG_KEYS:
        hw.config[key.lower()] = raw_value
    elif key == "firmware":
        if value in ("efi", "bios"):
            hw.firmware = Firmware(value)
        else:
            hw.warnings.append(f"firmware {printable(value, 20)!r} is unknown; BIOS is assumed")
    elif key in ("uefi.secureBoot.enabled", "bootOptions.efiSecureBootEnabled"):
        hw.secure_boot = value == "true"
    elif not _HARMLESS_CONFIG.match(key):
        hw.warnings.append(
            f"vmw:Config {printable(key, 60)} = {printable(value, 40)!r} is not imported"
        )


def _allocations(hw: _Hardware) -> PlacementSettings:
    """The CPU and memory items' ``rasd:Reservation``, ``Limit`` and ``Weight`` (in the
    item's units: MHz, and the memory's AllocationUnits), when not VMware's defaults: no
    reservation, no limit (absent or -1), normal shares (1000 per vCPU, 10 per MB)."""
    found: dict[str, SourceSetting] = {}
    normal_weights = {"cpu": 1000 * hw.vcpus, "memory": 10 * hw.memory_mb}
    for item, fields in (("cpu", hw.cpu_item), ("memory", hw.memory_item)):
        for rasd, name, default in (
            ("Reservation", f"{item}_reservation", {"0"}),
            ("Limit", f"{item}_limit", {"-1"}),
            ("Weight", f"{item}_shares", {str(normal_weights[item])}),
        ):
            value = fields.get(rasd, "").strip()
            if value and value not in default:
                found[name] = SourceSetting(
                    f"rasd:{rasd} of the {'CPU' if item == 'cpu' else 'memory'} item",
                    printable(value, 40),
                )
    return PlacementSettings(**found)


def _vbox_machine(system: Element, hw: _Hardware) -> None:
    """VirtualBox keeps its firmware type in its own ``vbox:Machine`` section."""
    machine = _child(system, "Machine")
    if machine is None:
        return
    for element in machine.iter():
        if local(element.tag) == "Firmware":
            kind = (_attr(element, "type") or "").upper()
            if kind.startswith("EFI"):
                hw.firmware = Firmware.EFI


def build_vm(
    desc: OvfDescription,
    *,
    source_format: SourceFormat,
    default_name: str,
    disk_facts: Mapping[str, ImageFacts],
    media_path: Callable[[str], str | None],
) -> SourceVm:
    """The ``SourceVm``: ``disk_facts`` maps each disk href to its inspected file;
    ``media_path`` maps a CD/floppy href to the file to keep (or ``None``)."""
    warnings = list(desc.warnings)
    disks = []
    for slot in desc.disks:
        facts = disk_facts[slot.href]
        if slot.declared_capacity and slot.declared_capacity != facts.virtual_bytes:
            warnings.append(
                f"disk {printable(slot.href)}: the OVF declares {slot.declared_capacity} bytes, "
                f"the image holds {facts.virtual_bytes}; the image's size is used"
            )
        disks.append(
            SourceDisk(
                path=str(facts.path),
                format=facts.format,
                capacity_bytes=facts.virtual_bytes,
                bus=slot.bus,
                controller=slot.controller,
                unit=slot.unit,
                allocated_bytes=facts.allocated_bytes,
                data_file=facts.data_file,
                label=slot.label,
            )
        )
    media = []
    for item in desc.media:
        image = media_path(item.image) if item.image else None
        if item.image and image is None:
            warnings.append(f"{item.kind} image {printable(item.image)} is not kept; drive empty")
        media.append(SourceMedia(item.kind, image, item.bus))
    return SourceVm(
        name=desc.name or default_name,
        source_format=source_format,
        vcpus=desc.vcpus,
        memory_mb=desc.memory_mb,
        sockets=desc.sockets,
        cores=desc.cores,
        firmware=desc.firmware,
        secure_boot=desc.secure_boot,
        guest_os=desc.guest_os,
        disks=order_disks(disks),
        nics=desc.nics,
        media=tuple(media),
        usb=desc.usb,
        serial_ports=desc.serial_ports,
        passthrough=desc.passthrough,
        uuid=desc.uuid,
        warnings=tuple(warnings),
        placement=desc.placement,
    )


def packaged_file(directory: Path, href: str) -> Path:
    """``href`` in ``directory``: a regular file that stays there after symlinks."""
    check_href(href)
    base = directory.resolve()
    target = (base / href).resolve()
    if not target.is_relative_to(base):
        raise Refused(f"OVF file {printable(href)} resolves outside the package's directory")
    if not target.exists():
        raise Refused(f"OVF file {printable(href)} is missing from the package")
    if not target.is_file():
        raise Refused(f"OVF file {printable(href)} is not a regular file")
    return target


def read_ovf(path: Path, limits: Limits) -> SourceVm:
    """The VM an ``.ovf`` beside its files describes; disks inspected, manifest checked."""
    try:
        data = read_descriptor(path, limits.max_descriptor_bytes, "OVF descriptor")
        desc = parse_ovf(data)
        base = path.parent
        disk_paths = {slot.href: packaged_file(base, slot.href) for slot in desc.disks}
        mf = path.with_suffix(".mf")
        if mf.is_file():
            _check_manifest_dir(mf, path, disk_paths, limits)
        facts = {href: _check_disk(href, p, limits) for href, p in disk_paths.items()}
    except Refused as exc:
        raise bad_input(path, exc.reason) from None

    def media_path(href: str) -> str | None:
        try:
            return str(packaged_file(base, href))
        except Refused:
            return None

    try:
        return build_vm(
            desc,
            source_format=SourceFormat.OVF,
            default_name=path.stem,
            disk_facts=facts,
            media_path=media_path,
        )
    except Refused as exc:
        raise bad_input(path, exc.reason) from None


def _check_disk(href: str, path: Path, limits: Limits) -> ImageFacts:
    try:
        return check_image(path, limits)
    except Refused as exc:
        raise Refused(f"disk {printable(href)}: {exc.reason}") from None


def _check_manifest_dir(mf: Path, ovf: Path, disks: dict[str, Path], limits: Limits) -> None:
    text = read_descriptor(mf, limits.max_descriptor_bytes, "manifest").decode("utf-8", "replace")
    entries = manifest.parse_manifest(text)
    for name, entry in entries.items():
        target = packaged_file(ovf.parent, name)
        digest = manifest.new_hash(entry)
        with open(target, "rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
        manifest.check_digest(entry, digest.hexdigest())
    for href in disks:
        if href not in entries:
            raise Refused(f"manifest {mf.name} does not list disk {printable(href)}")
