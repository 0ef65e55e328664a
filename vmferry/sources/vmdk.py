"""VMDK parsing: the sparse extent header (``KDMV``), text descriptors and their extents.

A descriptor is embedded in monolithicSparse/streamOptimized files or stands alone next to
its extents (monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs). ``parse_descriptor`` is pure;
``check_extents`` looks at the files: every extent must be a plain relative name that stays
in the descriptor's directory (after symlinks) and is a regular file. Device-backed disks
(fullDevice, partitionedDevice, raw device maps) and delta disks with a parent are refused.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from vmferry.sources.refusal import Refused, file_kind, printable

SPARSE_MAGIC = b"KDMV"
COWD_MAGIC = b"COWD"
DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"
SECTOR = 512
NO_PARENT_CID = "ffffffff"

ALLOWED_CREATE_TYPES = {
    "monolithicsparse": "monolithicSparse",
    "monolithicflat": "monolithicFlat",
    "twogbmaxextentsparse": "twoGbMaxExtentSparse",
    "twogbmaxextentflat": "twoGbMaxExtentFlat",
    "streamoptimized": "streamOptimized",
    "vmfs": "vmfs",
    "vmfssparse": "vmfsSparse",
}
DEVICE_CREATE_TYPES = {
    "fulldevice",
    "partitioneddevice",
    "vmfsraw",
    "vmfsrawdevicemap",
    "vmfspassthroughrawdevicemap",
}
FILE_EXTENT_TYPES = {"FLAT", "SPARSE", "VMFS", "VMFSSPARSE"}
DEVICE_EXTENT_TYPES = {"VMFSRAW", "VMFSRDM"}
ZERO_EXTENT = "ZERO"

_EXTENT_LINE = re.compile(
    r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$'
)
_KEY_LINE = re.compile(r"^([A-Za-z0-9_.]+)\s*=\s*(.*)$")


@dataclass(frozen=True)
class SparseHeader:
    version: int
    flags: int
    capacity_sectors: int
    grain_sectors: int
    descriptor_offset: int
    descriptor_sectors: int


def parse_sparse_header(data: bytes) -> SparseHeader:
    """The hosted sparse extent header (little-endian, 512 bytes)."""
    if len(data) < SECTOR or data[:4] != SPARSE_MAGIC:
        raise Refused("truncated VMDK sparse header")
    version, flags, capacity, grain, desc_off, desc_size = struct.unpack_from("<IIQQQQ", data, 4)
    if version not in (1, 2, 3):
        raise Refused(f"unknown VMDK sparse version {version}")
    return SparseHeader(version, flags, capacity, grain, desc_off, desc_size)


@dataclass(frozen=True)
class Extent:
    access: str
    sectors: int
    kind: str
    filename: str | None
    offset: int = 0


@dataclass(frozen=True)
class VmdkDescriptor:
    create_type: str
    extents: tuple[Extent, ...]
    parent_cid: str = NO_PARENT_CID
    parent_hint: str | None = None
    ddb: dict[str, str] = field(default_factory=dict)

    @property
    def capacity_bytes(self) -> int:
        return sum(e.sectors for e in self.extents) * SECTOR


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_descriptor(text: str, max_extents: int = 10_000) -> VmdkDescriptor:
    """A VMDK text descriptor: createType, parent, extents and ``ddb.*`` keys.

    The text ends at its first NUL, as QEMU reads it. An embedded descriptor is NUL-padded,
    and so is a standalone one qemu-img wrote: on the image's first write it prints a new
    CID, without leading zeros, over the old text and writes the whole sector back, so a
    CID two digits shorter leaves the old text's last byte after the NUL (8 of 1,200
    conversions; tests/data/import/vmdk/short-cid.vmdk)."""
    keys: dict[str, str] = {}
    ddb: dict[str, str] = {}
    extents: list[Extent] = []
    for number, raw in enumerate(text.split("\x00", 1)[0].splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _EXTENT_LINE.match(line)
        if match:
            access, sectors, kind, filename, offset = match.groups()
            extents.append(Extent(access, int(sectors), kind.upper(), filename, int(offset or 0)))
            if len(extents) > max_extents:
                raise Refused(f"VMDK descriptor has more than {max_extents} extents")
            continue
        key_match = _KEY_LINE.match(line)
        if key_match is None:
            raise Refused(f"VMDK descriptor line {number} is not understood: {printable(line)}")
        key, value = key_match.group(1), _unquote(key_match.group(2))
        if key.lower().startswith("ddb."):
            ddb[key] = value
        else:
            keys[key.lower()] = value
    create_type = keys.get("createtype")
    if create_type is None:
        raise Refused("VMDK descriptor has no createType")
    return VmdkDescriptor(
        create_type=create_type,
        extents=tuple(extents),
        parent_cid=keys.get("parentcid", NO_PARENT_CID).lower(),
        parent_hint=keys.get("parentfilenamehint"),
        ddb=ddb,
    )


def check_descriptor(desc: VmdkDescriptor, *, standalone: bool) -> None:
    """Refuse device-backed disks, delta disks and unknown types (no file access).

    ``standalone``: a separate descriptor file, which must list at least one extent.
    """
    kind = desc.create_type.lower()
    if kind in DEVICE_CREATE_TYPES:
        raise Refused(f"VMDK createType {printable(desc.create_type)} maps a host device; refused")
    if kind not in ALLOWED_CREATE_TYPES:
        raise Refused(f"VMDK createType {printable(desc.create_type)} is not supported")
    if desc.parent_hint is not None or desc.parent_cid != NO_PARENT_CID:
        hint = printable(desc.parent_hint or "unnamed")
        raise Refused(
            f"VMDK is a delta disk with a parent ({hint}); consolidate the snapshots first"
        )
    for extent in desc.extents:
        if extent.kind in DEVICE_EXTENT_TYPES:
            raise Refused(f"VMDK extent of type {extent.kind} maps a host device; refused")
        if extent.kind != ZERO_EXTENT and extent.kind not in FILE_EXTENT_TYPES:
            raise Refused(f"VMDK extent type {printable(extent.kind)} is not supported")
        if extent.kind != ZERO_EXTENT:
            check_extent_name(extent.filename)
    if standalone and not any(e.kind != ZERO_EXTENT for e in desc.extents):
        raise Refused("VMDK descriptor lists no extent file")


def check_extent_name(name: str | None) -> None:
    """An extent must be a plain relative name (no device, no absolute path, no ``..``)."""
    if not name:
        raise Refused("VMDK extent has no file name")
    shown = printable(name)
    if name.startswith("/dev/") or name.startswith("\\\\.\\"):
        raise Refused(f"VMDK extent {shown} names a device; refused")
    if name.startswith("/") or name.startswith("\\") or re.match(r"^[A-Za-z]:", name):
        raise Refused(f"VMDK extent {shown} is an absolute path; extents must be beside it")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise Refused(f"VMDK extent {shown} points outside the descriptor's directory (..)")
    if "\x00" in name:
        raise Refused(f"VMDK extent {shown} has a NUL in its name")


def resolve_extent(directory: Path, name: str) -> Path:
    """The extent's file, which must stay in ``directory`` after symlinks and be regular."""
    check_extent_name(name)
    base = directory.resolve()
    target = (base / name).resolve()
    if not target.is_relative_to(base):
        raise Refused(
            f"VMDK extent {printable(name)} resolves outside the descriptor's directory; refused"
        )
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise Refused(f"VMDK extent {printable(name)} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused(
            f"VMDK extent {printable(name)} is not a regular file ({file_kind(st.st_mode)})"
        )
    return target


def embedded_descriptor_text(data: bytes) -> str:
    """Descriptor text embedded in a sparse file (NUL padded)."""
    return data.split(b"\x00", 1)[0].decode("utf-8", "replace")
