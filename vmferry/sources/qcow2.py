"""qcow2 header parsing: virtual size, and the features vmferry refuses.

Refused: a backing file, an external data file (incompatible feature bit 2), any
incompatible feature bit qemu may add later, encryption, the corrupt bit, and qcow version 1.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vmferry.sources.refusal import Refused, printable

MAGIC = b"QFI\xfb"
HEADER_V2_BYTES = 72
HEADER_V3_BYTES = 104
MAX_BACKING_NAME = 1023

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
_KNOWN_INCOMPAT = (
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
)


@dataclass(frozen=True)
class Qcow2Header:
    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    incompatible_features: int


def parse_header(data: bytes) -> Qcow2Header:
    """The header fields from the first bytes of the file (at least 104 for version 3)."""
    if len(data) < HEADER_V2_BYTES or data[:4] != MAGIC:
        raise Refused("truncated qcow2 header")
    (version, backing_off, backing_size, cluster_bits, size, crypt) = struct.unpack_from(
        ">IQIIQI", data, 4
    )
    if version == 1:
        raise Refused("qcow version 1 image; convert it to qcow2 first")
    if version not in (2, 3):
        raise Refused(f"unknown qcow2 version {version}")
    incompatible = 0
    if version == 3:
        if len(data) < HEADER_V3_BYTES:
            raise Refused("truncated qcow2 version 3 header")
        (incompatible,) = struct.unpack_from(">Q", data, 72)
    return Qcow2Header(version, backing_off, backing_size, cluster_bits, size, crypt, incompatible)


def check_header(header: Qcow2Header, backing_name: bytes | None = None) -> None:
    """Refuse what ``qemu-img convert`` must not be given; ``backing_name`` for the message."""
    if header.backing_file_offset != 0:
        name = printable((backing_name or b"").decode("utf-8", "replace")) or "unnamed"
        raise Refused(
            f"qcow2 image has a backing file ({name}); vmferry imports only self-contained "
            "images (qemu-img convert -O qcow2 it first)"
        )
    if header.incompatible_features & INCOMPAT_DATA_FILE:
        raise Refused("qcow2 image keeps its data in an external data file; refused")
    unknown = header.incompatible_features & ~_KNOWN_INCOMPAT
    if unknown:
        raise Refused(f"qcow2 image has unknown incompatible features (0x{unknown:x}); refused")
    if header.incompatible_features & INCOMPAT_CORRUPT:
        raise Refused("qcow2 image is marked corrupt; run qemu-img check -r all on it first")
    if header.crypt_method != 0:
        raise Refused("qcow2 image is encrypted; decrypt it first")
    if not 9 <= header.cluster_bits <= 21:
        raise Refused(f"qcow2 cluster_bits {header.cluster_bits} is out of range")
