"""``inspect_image``: a disk image's format, virtual size, allocation and files, from headers.

It reads only headers (never the whole image), detects the format from magic numbers, and
refuses what must not reach ``qemu-img convert``: backing files, external data files,
differencing disks, device-backed or escaping VMDK extents, unknown formats and virtual
sizes above the limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vmferry.model.source_vm import ImageFormat
from vmferry.sources import qcow2, vhd, vmdk
from vmferry.sources.limits import Limits
from vmferry.sources.refusal import (
    Refused,
    bad_input,
    printable,
    read_descriptor,
    regular_file_size,
)

_HEAD_BYTES = 4096

# Formats vmferry recognises only to refuse them by name.
_OTHER_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"QED\x00", "QED"),
    (0, b"LUKS\xba\xbe", "LUKS encrypted"),
    (0x40, b"\x7f\x10\xda\xbe", "VirtualBox VDI"),
    (0, b"WithoutFreeSpace", "Parallels"),
    (0, b"WithouFreSpacExt", "Parallels"),
    (0, b"Bochs Virtual HD Image", "Bochs"),
    (0, vmdk.COWD_MAGIC, "ESX COWD sparse VMDK"),
)


@dataclass(frozen=True)
class ImageFacts:
    """What the headers say. ``extents`` are the files that hold the data (the image itself
    for single-file formats; a VMDK descriptor's extent files otherwise). ``subformat`` is
    the VMDK createType, ``fixed``/``dynamic`` for VHD, or empty."""

    path: Path
    format: ImageFormat
    virtual_bytes: int
    allocated_bytes: int
    extents: tuple[Path, ...]
    subformat: str = ""

    @property
    def data_file(self) -> str | None:
        """The one file that holds the data, None when several do."""
        return str(self.extents[0]) if len(self.extents) == 1 else None


def _read_at(fh: BinaryIO, offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)


def _allocated(paths: tuple[Path, ...]) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in paths)


def sniff_format(head: bytes, tail: bytes) -> str:
    """The format the magic numbers name: an ``ImageFormat`` value, ``vmdk-descriptor``, a
    refused format's name, or ``raw`` when none matches."""
    if head.startswith(qcow2.MAGIC):
        return ImageFormat.QCOW2.value
    if head.startswith(vmdk.SPARSE_MAGIC):
        return ImageFormat.VMDK.value
    if head.startswith(vmdk.DESCRIPTOR_MAGIC):
        return "vmdk-descriptor"
    if head.startswith(vhd.VHDX_SIGNATURE):
        return ImageFormat.VHDX.value
    if head.startswith(vhd.VHD_COOKIE) or tail.startswith(vhd.VHD_COOKIE):
        return ImageFormat.VPC.value
    for offset, magic, name in _OTHER_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    return ImageFormat.RAW.value


FORMAT_NAMES = {
    ImageFormat.QCOW2.value: "qcow2",
    ImageFormat.VMDK.value: "VMDK",
    "vmdk-descriptor": "VMDK descriptor",
    ImageFormat.VHDX.value: "VHDX",
    ImageFormat.VPC.value: "VHD",
    ImageFormat.RAW.value: "raw",
}


def detect_format(path: Path) -> str:
    """``sniff_format`` of a file (reads its first 4 KiB and last 512 bytes)."""
    try:
        size = regular_file_size(path)
        if size == 0:
            raise Refused("file is empty; not a disk image")
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            tail = (
                _read_at(fh, size - vhd.VHD_FOOTER_BYTES, vhd.VHD_FOOTER_BYTES)
                if (size >= vhd.VHD_FOOTER_BYTES)
                else b""
            )
    except Refused as exc:
        raise bad_input(path, exc.reason) from None
    return sniff_format(head, tail)


def inspect_image(path: Path, limits: Limits) -> ImageFacts:
    """The facts of the image at ``path``, or ``BadInputError`` naming it and the reason."""
    try:
        return check_image(path, limits)
    except Refused as exc:
        raise bad_input(path, exc.reason) from None


def check_image(path: Path, limits: Limits) -> ImageFacts:
    """``inspect_image`` for callers that name the file themselves: raises ``Refused``."""
    facts = _inspect(path, limits)
    if facts.virtual_bytes > limits.max_virtual_bytes:
        raise Refused(
            f"declared virtual size {facts.virtual_bytes} bytes is above the limit of "
            f"{limits.max_virtual_bytes} bytes"
        )
    return facts


def _inspect(path: Path, limits: Limits) -> ImageFacts:
    size = regular_file_size(path)
    if size == 0:
        raise Refused("file is empty; not a disk image")
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
        tail = b""
        if size >= vhd.VHD_FOOTER_BYTES:
            tail = _read_at(fh, size - vhd.VHD_FOOTER_BYTES, vhd.VHD_FOOTER_BYTES)
        kind = sniff_format(head, tail)
        if kind == ImageFormat.QCOW2.value:
            return _qcow2(path, fh, head)
        if kind == ImageFormat.VMDK.value:
            return _vmdk_sparse(path, fh, head, limits)
        if kind == ImageFormat.VHDX.value:
            return _vhdx(path, fh, size)
        if kind == ImageFormat.VPC.value:
            return _vhd(path, head, tail)
    if kind == "vmdk-descriptor":
        return _vmdk_descriptor(path, limits)
    if kind != ImageFormat.RAW.value:
        raise Refused(f"{kind} image; vmferry does not import this format")
    return ImageFacts(path, ImageFormat.RAW, size, _allocated((path,)), (path,))


def _qcow2(path: Path, fh: BinaryIO, head: bytes) -> ImageFacts:
    header = qcow2.parse_header(head)
    backing = None
    if header.backing_file_offset:
        backing = _read_at(
            fh, header.backing_file_offset, min(header.backing_file_size, qcow2.MAX_BACKING_NAME)
        )
    qcow2.check_header(header, backing)
    return ImageFacts(path, ImageFormat.QCOW2, header.size, _allocated((path,)), (path,))


def _vmdk_sparse(path: Path, fh: BinaryIO, head: bytes, limits: Limits) -> ImageFacts:
    header = vmdk.parse_sparse_header(head)
    split_extent = Refused(
        "sparse VMDK without an embedded descriptor is one extent of a split disk; "
        "open its descriptor .vmdk instead"
    )
    if not (header.descriptor_offset and header.descriptor_sectors):
        raise split_extent
    want = header.descriptor_sectors * vmdk.SECTOR
    if want > limits.max_descriptor_bytes:
        raise Refused(
            f"embedded VMDK descriptor is {want} bytes, above the "
            f"{limits.max_descriptor_bytes}-byte limit"
        )
    raw = _read_at(fh, header.descriptor_offset * vmdk.SECTOR, want)
    if len(raw) < want:
        raise Refused("embedded VMDK descriptor is truncated")
    text = vmdk.embedded_descriptor_text(raw)
    if not text.strip():
        raise split_extent
    desc = vmdk.parse_descriptor(text, limits.max_vmdk_extents)
    vmdk.check_descriptor(desc, standalone=False)
    create_type = desc.create_type
    if create_type.lower() not in ("monolithicsparse", "streamoptimized"):
        raise Refused(f"sparse VMDK embeds a descriptor of type {printable(create_type)}; refused")
    virtual = header.capacity_sectors * vmdk.SECTOR
    return ImageFacts(path, ImageFormat.VMDK, virtual, _allocated((path,)), (path,), create_type)


def _vmdk_descriptor(path: Path, limits: Limits) -> ImageFacts:
    data = read_descriptor(path, limits.max_descriptor_bytes, "VMDK descriptor")
    desc = vmdk.parse_descriptor(data.decode("utf-8", "replace"), limits.max_vmdk_extents)
    vmdk.check_descriptor(desc, standalone=True)
    files: list[Path] = []
    virtual = desc.capacity_bytes
    if virtual > limits.max_virtual_bytes:
        raise Refused(
            f"declared virtual size {virtual} bytes is above the limit of "
            f"{limits.max_virtual_bytes} bytes"
        )
    for extent in desc.extents:
        if extent.kind == vmdk.ZERO_EXTENT or extent.filename is None:
            continue
        target = vmdk.resolve_extent(path.parent, extent.filename)
        if target == path.resolve():
            raise Refused("VMDK descriptor names itself as an extent")
        _check_extent_content(target, extent)
        if target not in files:
            files.append(target)
    return ImageFacts(
        path,
        ImageFormat.VMDK,
        virtual,
        _allocated((path, *files)),
        tuple(files),
        desc.create_type,
    )


def _check_extent_content(target: Path, extent: vmdk.Extent) -> None:
    with open(target, "rb") as fh:
        head = fh.read(vmdk.SECTOR)
    name = printable(extent.filename or "")
    if extent.kind == "SPARSE":
        if not head.startswith(vmdk.SPARSE_MAGIC):
            raise Refused(f"VMDK extent {name} is declared SPARSE but has no KDMV header")
        header = vmdk.parse_sparse_header(head)
        if header.descriptor_offset and header.descriptor_sectors:
            with open(target, "rb") as fh:
                raw = _read_at(
                    fh,
                    header.descriptor_offset * vmdk.SECTOR,
                    min(header.descriptor_sectors * vmdk.SECTOR, 1024 * 1024),
                )
            if b"parentFileNameHint" in raw:
                raise Refused(f"VMDK extent {name} is a delta disk with a parent; refused")
    elif extent.kind == "VMFSSPARSE" and not head.startswith(vmdk.COWD_MAGIC):
        raise Refused(f"VMDK extent {name} is declared VMFSSPARSE but has no COWD header")


def _vhd(path: Path, head: bytes, tail: bytes) -> ImageFacts:
    footer_bytes = tail if tail.startswith(vhd.VHD_COOKIE) else head[: vhd.VHD_FOOTER_BYTES]
    footer = vhd.parse_vhd_footer(footer_bytes)
    vhd.check_vhd_footer(footer)
    kind = "fixed" if footer.disk_type == vhd.VHD_FIXED else "dynamic"
    return ImageFacts(
        path, ImageFormat.VPC, footer.current_size, _allocated((path,)), (path,), kind
    )


def _vhdx(path: Path, fh: BinaryIO, size: int) -> ImageFacts:
    table = _read_at(fh, vhd.VHDX_REGION_TABLE_OFFSET, vhd.VHDX_REGION_TABLE_BYTES)
    if len(table) < 16:
        raise Refused("truncated VHDX: no region table at 192 KiB")
    region = vhd.vhdx_metadata_region(vhd.parse_vhdx_region_table(table))
    if region.offset + region.length > size:
        raise Refused("truncated VHDX: the metadata region lies beyond the end of the file")
    meta = _read_at(fh, region.offset, min(region.length, vhd.VHDX_METADATA_TABLE_BYTES))
    items = vhd.parse_vhdx_metadata_table(meta)
    vhd.check_vhdx_metadata(items)
    found: dict[str, bytes] = {}
    for item in items:
        if item.offset + item.length > region.length or item.length > 4096:
            raise Refused("VHDX metadata item lies outside the metadata region")
        found[str(item.guid)] = _read_at(fh, region.offset + item.offset, item.length)
    params = found.get(str(vhd.META_FILE_PARAMETERS))
    disk_size = found.get(str(vhd.META_VIRTUAL_DISK_SIZE))
    if params is None or disk_size is None:
        raise Refused("VHDX metadata lacks the file parameters or the virtual disk size")
    if vhd.vhdx_has_parent(params):
        raise Refused("VHDX is a differencing disk (HasParent is set); merge it first")
    virtual = vhd.vhdx_virtual_size(disk_size)
    return ImageFacts(path, ImageFormat.VHDX, virtual, _allocated((path,)), (path,))
