"""VMX (VMware configuration) parsing: ``key = "value"`` lines -> ``SourceVm``.

Keys are case-insensitive (kept lowercase here), values are quoted with VMware's ``|XX``
hex escapes, ``#`` starts a comment. ``parse_vmx_text`` is pure; ``build_vm`` is pure too
apart from the two callables it is given, which look at disk and media files. Every key it
neither maps nor knows to be harmless becomes a warning.
"""

from __future__ import annotations

import codecs
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vmferry.model.source_vm import (
    Firmware,
    GuestOs,
    ImageFormat,
    SourceDisk,
    SourceFormat,
    SourceMedia,
    SourceNic,
    SourceVm,
)
from vmferry.sources import guest_os
from vmferry.sources.devices import normalize_mac, order_disks
from vmferry.sources.image import FORMAT_NAMES, ImageFacts, check_image
from vmferry.sources.limits import Limits
from vmferry.sources.placement_keys import VMX_KEYS, read_placement, settle
from vmferry.sources.refusal import Refused, bad_input, printable, read_descriptor

_LINE = re.compile(r"^([A-Za-z0-9_.:\-\[\]]+)\s*=\s*(.*?)\s*$")
_ESCAPE = re.compile(r"\|([0-9A-Fa-f]{2})")
_DEVICE = re.compile(r"^(scsi|sata|ide|nvme)(\d+):(\d+)\.(.+)$")
_CONTROLLER = re.compile(r"^(scsi|sata|nvme)(\d+)\.(.+)$")
_NUMBERED = re.compile(r"^(ethernet|serial|floppy|pcipassthru|parallel)(\d+)\.(.+)$")

SCSI_MODELS = {
    "lsilogic": "lsilogic",
    "lsisas1068": "lsisas1068",
    "pvscsi": "pvscsi",
    "buslogic": "buslogic",
}
NIC_MODELS = {
    "vmxnet3": "vmxnet3",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "vlance": "vlance",
    "vmxnet": "vmxnet",
    "vmxnet2": "vmxnet2",
}
DISK_TYPES = {"disk", "scsi-harddisk", "ata-harddisk", "plaindisk", "sata-harddisk"}
CDROM_TYPES = {"cdrom-image", "atapi-cdrom", "cdrom-raw", "scsi-cdrom"}
PASSTHROUGH_TYPES = {"rawdisk", "scsi-passthru"}

# Keys (regular expressions over the lowercase key) that carry nothing the import needs.
_HARMLESS = re.compile(
    r"^(?:"
    r"\.encoding|config\.version|virtualhw\.version|virtualhw\.productcompatibility"
    r"|displayname|tools\..*|toolsinstallmanager\..*|uuid\..*|vc\.uuid|nvram"
    r"|extendedconfigfile|vmci0\..*|vmci\..*|hpet0\.present|pcibridge\d+\..*"
    r"|.*\.pcislotnumber|svga\..*|mks\..*|migrate\..*|vmotion\..*|checkpoint\..*"
    r"|cleanshutdown|softpoweroff|replay\..*|monitor\.phys_bits_used|numa\.autosize.*"
    r"|vmxstats\.filename|powertype\..*|guestos\.detailed\.data|sched\.swap\..*"
    r"|annotation|msg\..*|gui\..*|vm\.genid.*|ctkenabled|disk\.enableuuid|bios\.bootdelay"
    r"|rtc\.difffromutc|time\.synchronize\..*|featmask\..*|vmware\.tools\..*|log\..*"
    r"|usb:\d+\..*|usb\.vbluetooth\..*|ehci:\d+\..*|usb_xhci:\d+\..*|keyboardandmouseprofile"
    r"|policy\..*|isolation\.tools\..*|svga\.present|vmx\.buildtype|cpuid\.corespersocket\.cfg"
    r"|numvcpus\.cfg|sched\.cpu\.units"
    r"|sched\.scsi\d+:\d+\..*|ide\d+:\d+\.redo|scsi\d+:\d+\.redo"
    r"|floppy\d+\.clientdevice|ethernet\d+\.pcislotnumber"
    r")$"
)


@dataclass(frozen=True)
class VmxFile:
    """The keys of a VMX file (lowercase, last value wins) and the parse's warnings."""

    entries: dict[str, str]
    warnings: tuple[str, ...] = ()


def decode_vmx(data: bytes) -> str:
    """VMX bytes as text: UTF-8, or the codec ``.encoding`` names; binary data is refused."""
    if b"\x00" in data:
        raise Refused("VMX holds binary data (NUL bytes); not a VMX file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        match = re.search(rb'^\.encoding\s*=\s*"([A-Za-z0-9_\-]+)"', data, re.MULTILINE)
        if match is None:
            raise Refused("VMX is not UTF-8 text and names no .encoding") from None
        try:
            codec = codecs.lookup(match.group(1).decode("ascii"))
            text = data.decode(codec.name)
        except (LookupError, UnicodeDecodeError):
            raise Refused("VMX text does not decode with its .encoding") from None
    if any(ord(ch) < 32 and ch not in "\t\r\n" for ch in text):
        raise Refused("VMX holds control characters; not a VMX file")
    return text


def _unquote(raw: str, number: int) -> str:
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise Refused(f"VMX line {number} has an unterminated quoted value")
        raw = raw[1:-1]
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)


def parse_vmx_text(text: str) -> VmxFile:
    """``key = "value"`` lines; keys lowercased; a line of anything else is refused."""
    entries: dict[str, str] = {}
    warnings: list[str] = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise Refused(f"VMX line {number} is not key = value: {printable(line, 60)}")
        key = match.group(1).lower()
        value = _unquote(match.group(2), number)
        if key in entries and entries[key] != value:
            warnings.append(f"VMX key {key} is set twice; the last value ({value!r}) is used")
        entries[key] = value
    if not entries:
        raise Refused("VMX holds no keys")
    return VmxFile(entries, tuple(warnings))


def _true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "yes", "1", "on")


@dataclass
class _Reader:
    entries: dict[str, str]
    used: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        if key in self.entries:
            self.used.add(key)
            return self.entries[key]
        return None

    def use_prefix(self, prefix: str) -> None:
        self.used.update(k for k in self.entries if k.startswith(prefix))

    def integer(self, key: str, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        try:
            number = int(value.strip(), 0)
        except ValueError:
            raise Refused(f"VMX key {key} is not a number: {printable(value, 40)}") from None
        if number < 1:
            raise Refused(f"VMX key {key} must be positive, not {number}")
        return number


DiskResolver = Callable[[str], ImageFacts]
MediaResolver = Callable[[str], str | None]


def build_vm(
    vmx: VmxFile,
    *,
    default_name: str,
    resolve_disk: DiskResolver,
    resolve_media: MediaResolver,
) -> SourceVm:
    """The ``SourceVm`` a parsed VMX describes.

    ``resolve_disk(fileName)`` inspects a disk (and refuses it if unsafe);
    ``resolve_media(fileName)`` returns the ISO/floppy image path to keep, or ``None``.
    """
    r = _Reader(vmx.entries)
    r.warnings.extend(vmx.warnings)
    memory = r.get("memsize")
    if memory is None:
        raise Refused("VMX has no memsize key; not a VM configuration")
    memory_mb = r.integer("memsize", 1)
    vcpus = r.integer("numvcpus", 1)
    cores = r.integer("cpuid.corespersocket", 1)
    if vcpus % cores:
        r.warnings.append(
            f"numvcpus {vcpus} is not a multiple of cpuid.coresPerSocket {cores}; "
            "one core per socket is used"
        )
        cores = 1
    name = (r.get("displayname") or "").strip() or default_name
    firmware, secure_boot = _firmware(r)
    guest_id = r.get("guestos")
    guest = guest_os.from_vmware_id(guest_id) if guest_id else GuestOs()
    disks, media, passthrough, boot_first = _storage(r, resolve_disk, resolve_media)
    nics = _nics(r)
    serial_ports = _serial(r)
    usb = any(_true(r.get(k)) for k in ("usb.present", "ehci.present", "usb_xhci.present"))
    r.use_prefix("usb.")
    r.use_prefix("ehci.")
    r.use_prefix("usb_xhci.")
    for key in sorted(k for k in vmx.entries if k.startswith("usb.autoconnect.device")):
        passthrough.append(f"usb:{vmx.entries[key]}")
    passthrough.extend(_pci_passthrough(r))
    media.extend(_floppies(r, resolve_media))
    vm_uuid = _uuid(r)
    placement, placement_keys = read_placement(vmx.entries, VMX_KEYS)
    r.used.update(placement_keys)
    for key in sorted(vmx.entries):
        if key not in r.used and not _HARMLESS.match(key):
            r.warnings.append(
                f"VMX key {printable(key, 60)} = {printable(vmx.entries[key], 60)!r} "
                "is not imported"
            )
    return SourceVm(
        name=name,
        source_format=SourceFormat.VMX,
        vcpus=vcpus,
        memory_mb=memory_mb,
        sockets=vcpus // cores,
        cores=cores,
        firmware=firmware,
        secure_boot=secure_boot,
        guest_os=guest,
        disks=order_disks(disks, boot_first),
        nics=tuple(nics),
        media=tuple(media),
        usb=usb,
        serial_ports=serial_ports,
        passthrough=tuple(passthrough),
        uuid=vm_uuid,
        warnings=tuple(r.warnings),
        placement=settle(placement, memory_mb),
    )


def _firmware(r: _Reader) -> tuple[Firmware, bool]:
    value = (r.get("firmware") or "bios").strip().lower()
    if value not in ("bios", "efi"):
        r.warnings.append(f"firmware {printable(value, 20)!r} is unknown; BIOS is assumed")
        value = "bios"
    firmware = Firmware(value)
    secure = _true(r.get("uefi.secureboot.enabled"))
    if secure and firmware is not Firmware.EFI:
        r.warnings.append("uefi.secureBoot.enabled is set on a BIOS VM; ignored")
        secure = False
    return firmware, secure


def _controllers(r: _Reader) -> dict[tuple[str, int], str]:
    """(kind, number) -> bus name for SCSI/SATA/NVMe controllers that are present."""
    buses: dict[tuple[str, int], str] = {}
    for key in list(r.entries):
        match = _CONTROLLER.match(key)
        if match is None or match.group(3) != "present":
            continue
        kind, number = match.group(1), int(match.group(2))
        if not _true(r.get(key)):
            continue
        if kind == "scsi":
            dev = (r.get(f"scsi{number}.virtualdev") or "").strip().lower()
            bus = SCSI_MODELS.get(dev)
            if bus is None:
                r.warnings.append(
                    f"scsi{number}.virtualDev {printable(dev, 30)!r} is unknown; "
                    "lsilogic is assumed"
                )
                bus = "lsilogic"
            buses[(kind, number)] = bus
        else:
            r.get(f"{kind}{number}.virtualdev")
            buses[(kind, number)] = kind
    return buses


def _storage(
    r: _Reader, resolve_disk: DiskResolver, resolve_media: MediaResolver
) -> tuple[list[SourceDisk], list[SourceMedia], list[str], tuple[str, int, int] | None]:
    buses = _controllers(r)
    devices: dict[tuple[str, int, int], dict[str, str]] = {}
    for key, value in r.entries.items():
        match = _DEVICE.match(key)
        if match:
            kind, ctl, unit, attr = match.groups()
            devices.setdefault((kind, int(ctl), int(unit)), {})[attr] = value
    disks: list[SourceDisk] = []
    media: list[SourceMedia] = []
    passthrough: list[str] = []
    for (kind, ctl, unit), attrs in sorted(devices.items()):
        label = f"{kind}{ctl}:{unit}"
        r.use_prefix(f"{label}.")
        if not _true(attrs.get("present")):
            if "present" not in attrs:
                r.warnings.append(f"{label} has keys but no present = TRUE; ignored")
            continue
        bus = "ide" if kind == "ide" else buses.get((kind, ctl))
        if bus is None:
            r.warnings.append(f"{label} is on controller {kind}{ctl}, which is not present")
            continue
        dev_type = attrs.get("devicetype", "disk").strip().lower()
        file_name = attrs.get("filename", "")
        if dev_type in CDROM_TYPES:
            image = None
            if dev_type == "cdrom-image" and file_name:
                image = resolve_media(file_name)
                if image is None:
                    r.warnings.append(
                        f"{label} CD image {printable(file_name, 60)} is not a readable "
                        "file; the drive is kept empty"
                    )
            media.append(SourceMedia("cdrom", image, "ide" if kind == "ide" else kind))
        elif dev_type in PASSTHROUGH_TYPES:
            passthrough.append(f"{label} {dev_type} {printable(file_name, 60)}".strip())
            r.warnings.append(f"{label} is a {dev_type} device; it is not imported as a disk")
        elif dev_type in DISK_TYPES:
            if not file_name:
                raise Refused(f"{label} is a disk without a fileName")
            facts = resolve_disk(file_name)
            if facts.format is not ImageFormat.VMDK:
                raise Refused(
                    f"{label} disk {printable(file_name, 60)} is not a VMDK (it is "
                    f"{FORMAT_NAMES.get(facts.format.value, facts.format.value)})"
                )
            disks.append(
                SourceDisk(
                    path=str(facts.path),
                    format=facts.format,
                    capacity_bytes=facts.virtual_bytes,
                    bus=bus,
                    controller=ctl,
                    unit=unit,
                    allocated_bytes=facts.allocated_bytes,
                    data_file=facts.data_file,
                    label=label,
                )
            )
        else:
            r.warnings.append(f"{label} deviceType {printable(dev_type, 30)!r} is not imported")
    return disks, media, passthrough, _boot_first(r, buses)


def _boot_first(r: _Reader, buses: dict[tuple[str, int], str]) -> tuple[str, int, int] | None:
    order = (r.get("bios.bootorder") or "").strip().lower()
    if order and not order.startswith("hdd"):
        r.warnings.append(
            f"bios.bootOrder {printable(order, 40)!r} does not start with hdd; the disks "
            "keep their order"
        )
    hdd = (r.get("bios.hddorder") or "").split(",")[0].strip().lower()
    match = re.match(r"^(scsi|sata|ide|nvme)(\d+):(\d+)$", hdd)
    if not match:
        return None
    kind, ctl, unit = match.group(1), int(match.group(2)), int(match.group(3))
    bus = "ide" if kind == "ide" else buses.get((kind, ctl), kind)
    return (bus, ctl, unit)


def _nics(r: _Reader) -> list[SourceNic]:
    numbers = sorted(
        {
            int(m.group(2))
            for k in r.entries
            if (m := _NUMBERED.match(k)) and m.group(1) == "ethernet"
        }
    )
    nics = []
    for n in numbers:
        prefix = f"ethernet{n}."
        present = _true(r.get(prefix + "present"))
        r.use_prefix(prefix)
        if not present:
            continue
        raw_model = (r.entries.get(prefix + "virtualdev") or "vlance").strip().lower()
        model = NIC_MODELS.get(raw_model, "unknown")
        if model == "unknown":
            r.warnings.append(f"ethernet{n}.virtualDev {printable(raw_model, 30)!r} is unknown")
        address_type = (r.entries.get(prefix + "addresstype") or "generated").strip().lower()
        key = "address" if address_type == "static" else "generatedaddress"
        raw_mac = r.entries.get(prefix + key)
        mac = normalize_mac(raw_mac) if raw_mac else None
        if raw_mac and mac is None:
            r.warnings.append(f"ethernet{n}.{key} {printable(raw_mac, 30)!r} is not a MAC")
        network = r.entries.get(prefix + "networkname")
        if not network:
            connection = (r.entries.get(prefix + "connectiontype") or "").strip()
            vnet = (r.entries.get(prefix + "vnet") or "").strip()
            network = vnet if connection.lower() == "custom" and vnet else connection or None
        connected = (r.entries.get(prefix + "startconnected") or "true").lower() != "false"
        nics.append(SourceNic(mac=mac, model=model, network=network, connected=connected))
    return nics


def _serial(r: _Reader) -> int:
    count = 0
    for key in sorted(r.entries):
        match = _NUMBERED.match(key)
        if match and match.group(1) == "serial" and match.group(3) == "present":
            r.use_prefix(f"serial{match.group(2)}.")
            count += _true(r.entries[key])
    return count


def _pci_passthrough(r: _Reader) -> list[str]:
    found = []
    for key in sorted(r.entries):
        match = _NUMBERED.match(key)
        if match and match.group(1) == "pcipassthru" and match.group(3) == "present":
            prefix = f"pcipassthru{match.group(2)}."
            r.use_prefix(prefix)
            if _true(r.entries[key]):
                device = r.entries.get(prefix + "id") or r.entries.get(prefix + "deviceid") or ""
                label = f"pciPassthru{match.group(2)}"
                found.append(f"{label} {printable(device, 40)}".strip())
    return found


def _floppies(r: _Reader, resolve_media: MediaResolver) -> list[SourceMedia]:
    found = []
    for key in sorted(r.entries):
        match = _NUMBERED.match(key)
        if match and match.group(1) == "floppy" and match.group(3) == "present":
            prefix = f"floppy{match.group(2)}."
            r.use_prefix(prefix)
            if not _true(r.entries[key]):
                continue
            image = None
            file_name = r.entries.get(prefix + "filename", "")
            if (r.entries.get(prefix + "filetype") or "").lower() == "file" and file_name:
                image = resolve_media(file_name)
                if image is None:
                    r.warnings.append(
                        f"floppy{match.group(2)} image {printable(file_name, 60)} is not a "
                        "readable file; the drive is kept empty"
                    )
            found.append(SourceMedia("floppy", image, "fdc"))
    return found


def _uuid(r: _Reader) -> str | None:
    raw = r.get("uuid.bios")
    if raw is None:
        return None
    digits = re.sub(r"[\s\-]", "", raw)
    try:
        return str(uuid.UUID(hex=digits))
    except ValueError:
        r.warnings.append(f"uuid.bios {printable(raw, 60)!r} is not a UUID; dropped")
        return None


def read_vmx(path: Path, limits: Limits) -> SourceVm:
    """The VM a ``.vmx`` file describes; its disks are inspected and must be safe VMDKs."""
    base = path.parent

    def resolve_disk(file_name: str) -> ImageFacts:
        try:
            return check_image(base / file_name, limits)
        except Refused as exc:
            raise Refused(f"disk {printable(file_name)}: {exc.reason}") from None

    def resolve_media(file_name: str) -> str | None:
        candidate = base / file_name
        return str(candidate) if candidate.is_file() else None

    try:
        data = read_descriptor(path, limits.max_descriptor_bytes, "VMX file")
        vmx = parse_vmx_text(decode_vmx(data))
        return build_vm(
            vmx, default_name=path.stem, resolve_disk=resolve_disk, resolve_media=resolve_media
        )
    except Refused as exc:
        raise bad_input(path, exc.reason) from None
