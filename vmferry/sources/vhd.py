"""VHD (Virtual PC) and VHDX header parsing: virtual size, and differencing disks refused.

VHD: the 512-byte footer (``conectix``) at the end of the file, copied at the start of
dynamic disks; disk type 4 is a differencing disk. VHDX: the file type identifier
(``vhdxfile``), the region table at 192 KiB, and in the metadata region the Virtual Disk
Size, File Parameters (the HasParent flag) and a Parent Locator.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from vmferry.sources.refusal import Refused

VHD_COOKIE = b"conectix"
VHD_FOOTER_BYTES = 512
VHD_FIXED = 2
VHD_DYNAMIC = 3
VHD_DIFFERENCING = 4

VHDX_SIGNATURE = b"vhdxfile"
VHDX_REGION_TABLE_OFFSET = 192 * 1024
VHDX_REGION_TABLE_BYTES = 64 * 1024
VHDX_METADATA_TABLE_BYTES = 64 * 1024

REGION_METADATA = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
REGION_BAT = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
META_FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
META_VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
META_PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
META_LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
META_PHYSICAL_SECTOR = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
META_PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
_KNOWN_METADATA = {
    META_FILE_PARAMETERS,
    META_VIRTUAL_DISK_SIZE,
    META_PAGE83,
    META_LOGICAL_SECTOR,
    META_PHYSICAL_SECTOR,
    META_PARENT_LOCATOR,
}
FILE_PARAMETERS_HAS_PARENT = 1 << 1
META_FLAG_REQUIRED = 1 << 2


@dataclass(frozen=True)
class VhdFooter:
    current_size: int
    disk_type: int


def parse_vhd_footer(footer: bytes) -> VhdFooter:
    """Fields of a 512-byte VHD footer (big-endian)."""
    if len(footer) < VHD_FOOTER_BYTES or footer[:8] != VHD_COOKIE:
        raise Refused("truncated VHD footer")
    (current_size,) = struct.unpack_from(">Q", footer, 48)
    (disk_type,) = struct.unpack_from(">I", footer, 60)
    return VhdFooter(current_size, disk_type)


def check_vhd_footer(footer: VhdFooter) -> None:
    if footer.disk_type == VHD_DIFFERENCING:
        raise Refused(
            "VHD is a differencing disk (it needs its parent); merge it into its parent first"
        )
    if footer.disk_type not in (VHD_FIXED, VHD_DYNAMIC):
        raise Refused(f"VHD has unknown disk type {footer.disk_type}")


@dataclass(frozen=True)
class VhdxRegion:
    guid: uuid.UUID
    offset: int
    length: int
    required: bool


def parse_vhdx_region_table(data: bytes) -> list[VhdxRegion]:
    """Entries of a VHDX region table (little-endian, 16-byte header, 32-byte entries)."""
    if len(data) < 16 or data[:4] != b"regi":
        raise Refused("VHDX region table is missing or truncated")
    (count,) = struct.unpack_from("<I", data, 8)
    if count > 2047 or 16 + 32 * count > len(data):
        raise Refused(f"VHDX region table claims {count} entries")
    regions = []
    for i in range(count):
        base = 16 + 32 * i
        guid = uuid.UUID(bytes_le=data[base : base + 16])
        offset, length, required = struct.unpack_from("<QII", data, base + 16)
        regions.append(VhdxRegion(guid, offset, length, bool(required & 1)))
    return regions


@dataclass(frozen=True)
class VhdxMetadataItem:
    guid: uuid.UUID
    offset: int
    length: int
    required: bool


def parse_vhdx_metadata_table(data: bytes) -> list[VhdxMetadataItem]:
    """Entries of a VHDX metadata table (``metadata`` signature, 32-byte entries)."""
    if len(data) < 32 or data[:8] != b"metadata":
        raise Refused("VHDX metadata table is missing or truncated")
    (count,) = struct.unpack_from("<H", data, 10)
    if count > 2047 or 32 + 32 * count > len(data):
        raise Refused(f"VHDX metadata table claims {count} entries")
    items = []
    for i in range(count):
        base = 32 + 32 * i
        guid = uuid.UUID(bytes_le=data[base : base + 16])
        offset, length, flags = struct.unpack_from("<III", data, base + 16)
        items.append(VhdxMetadataItem(guid, offset, length, bool(flags & META_FLAG_REQUIRED)))
    return items


def vhdx_metadata_region(regions: list[VhdxRegion]) -> VhdxRegion:
    """The metadata region; unknown required regions are refused."""
    metadata = None
    for region in regions:
        if region.guid == REGION_METADATA:
            metadata = region
        elif region.guid != REGION_BAT and region.required:
            raise Refused(f"VHDX has an unknown required region {region.guid}")
    if metadata is None:
        raise Refused("VHDX has no metadata region")
    return metadata


def check_vhdx_metadata(items: list[VhdxMetadataItem]) -> None:
    """Refuse a parent locator or an unknown required metadata item."""
    for item in items:
        if item.guid == META_PARENT_LOCATOR:
            raise Refused("VHDX is a differencing disk (it has a parent locator); merge it first")
        if item.guid not in _KNOWN_METADATA and item.required:
            raise Refused(f"VHDX has an unknown required metadata item {item.guid}")


def vhdx_has_parent(file_parameters: bytes) -> bool:
    """The HasParent flag of the File Parameters item (8 bytes: block size, flags)."""
    if len(file_parameters) < 8:
        raise Refused("VHDX file parameters are truncated")
    (flags,) = struct.unpack_from("<I", file_parameters, 4)
    return bool(flags & FILE_PARAMETERS_HAS_PARENT)


def vhdx_virtual_size(item: bytes) -> int:
    if len(item) < 8:
        raise Refused("VHDX virtual disk size is truncated")
    (size,) = struct.unpack_from("<Q", item, 0)
    return int(size)
