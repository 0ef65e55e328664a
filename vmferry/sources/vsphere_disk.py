"""Pure: what a datastore's ``.vmdk`` is, from its first bytes, and so how to read it.

- a hosted sparse file (``KDMV``: monolithicSparse, streamOptimized): one file, whose grains
  only QEMU's vmdk driver decodes; it is fetched whole into the private directory, its
  headers checked like a file import's, then read through qemu-nbd;
- a text descriptor (ESXi's shape: ``name.vmdk`` plus ``name-flat.vmdk``): it must name one
  FLAT or VMFS extent at offset 0, beside it; that extent is raw and is read straight from
  the datastore (range requests) into the pool.

Anything else (delta disks, several extents, device maps) is refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from vmferry.errors import BadInputError
from vmferry.sources.refusal import Refused
from vmferry.sources.vmdk import (
    DESCRIPTOR_MAGIC,
    SECTOR,
    SPARSE_MAGIC,
    check_descriptor,
    parse_descriptor,
)

__all__ = ["HEAD_BYTES", "MAX_DESCRIPTOR_BYTES", "RemoteVmdk", "remote_vmdk"]

HEAD_BYTES = 512
MAX_DESCRIPTOR_BYTES = 64 * 1024


@dataclass(frozen=True)
class RemoteVmdk:
    """``sparse``: the file itself is the disk (format vmdk). ``flat``: ``extent`` (a name
    beside the descriptor) holds ``capacity_bytes`` of raw disk."""

    kind: str  # sparse | flat
    extent: str | None = None
    capacity_bytes: int = 0


def remote_vmdk(label: str, data: bytes, file_size: int) -> RemoteVmdk:
    """Decide from ``data`` (the file's first bytes: at least :data:`HEAD_BYTES`, the whole
    file when it is a descriptor) and ``file_size``; :class:`BadInputError` otherwise."""
    if data[:4] == SPARSE_MAGIC:
        return RemoteVmdk("sparse")
    if not data.startswith(DESCRIPTOR_MAGIC):
        raise BadInputError(f"{label} is neither a sparse VMDK nor a VMDK descriptor")
    if file_size > MAX_DESCRIPTOR_BYTES:
        raise BadInputError(f"{label}: a VMDK descriptor of {file_size} bytes is too large")
    try:
        desc = parse_descriptor(data.decode("utf-8", errors="replace"))
        check_descriptor(desc, standalone=True)
    except Refused as exc:
        raise BadInputError(f"{label}: {exc.reason}") from None
    files = [e for e in desc.extents if e.kind != "ZERO"]
    if len(desc.extents) != 1 or files[0].kind not in ("FLAT", "VMFS") or files[0].offset:
        kinds = ", ".join(f"{e.kind} {e.filename or ''}".strip() for e in desc.extents)
        raise BadInputError(f"{label}: vmferry reads one flat extent at offset 0 from a "
                            f"datastore; this descriptor has {kinds}")  # fmt: skip
    return RemoteVmdk("flat", files[0].filename, files[0].sectors * SECTOR)
