"""Where QEMU says a disk image keeps each byte the guest sees, and whether vmferry may read
the bytes there itself (pure).

``qemu-img map --output=json`` walks an image with QEMU's own driver for its format and
answers, per range of the guest's disk: whether it reads as zeros, whether it holds data,
and for data stored as is (neither compressed nor encrypted) the offset in the file that
holds it. For an image with no backing file whose data lives in one file (a raw file, a
qcow2 without a data file, a monolithicSparse VMDK, a VHD or VHDX, a VMDK descriptor with a
single extent file), reading those offsets of that file gives exactly the bytes QEMU's
driver would return to a guest: the driver's decisions (which cluster, which grain, which
block) are QEMU's, only the reading is vmferry's.

``in_place_refusal`` says why a map cannot be read that way (a compressed or encrypted
range, a range from a backing file, a range that is neither data nor zeros, data past the
end of the file, a map that does not cover the disk); the caller then reads the image
through ``qemu-nbd`` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class MapRange:
    """One entry of ``qemu-img map --output=json``: ``length`` bytes of the guest's disk
    from ``start``; ``offset`` is where the file holds them, when it does as they are."""

    start: int
    length: int
    zero: bool
    data: bool
    offset: int | None
    compressed: bool = False
    depth: int = 0

    @property
    def end(self) -> int:
        return self.start + self.length


def parse_map(text: str) -> list[MapRange]:
    """The entries of ``qemu-img map --output=json``; ValueError when it is not that."""
    entries = json.loads(text)
    if not isinstance(entries, list):
        raise ValueError("qemu-img map did not answer with a list")
    ranges = []
    for entry in entries:
        offset = entry.get("offset")
        ranges.append(
            MapRange(
                start=int(entry["start"]),
                length=int(entry["length"]),
                zero=bool(entry["zero"]),
                data=bool(entry["data"]),
                offset=None if offset is None else int(offset),
                compressed=bool(entry.get("compressed", False)),
                depth=int(entry.get("depth", 0)),
            )
        )
    return ranges


def in_place_refusal(ranges: list[MapRange], size: int, file_size: int) -> str | None:
    """Why the guest's ``size`` bytes cannot be read from the file of ``file_size`` bytes
    where ``ranges`` place them; None when every range reads as zeros or is stored there."""
    position = 0
    for r in ranges:
        if r.start != position or r.length <= 0:
            return f"the map does not continue at byte {position}"
        if r.depth != 0:
            return f"bytes at {r.start} come from a backing file"
        if not r.zero:
            if not r.data:
                return f"bytes at {r.start} are neither data nor zeros"
            if r.compressed or r.offset is None:
                return f"bytes at {r.start} are not stored as they are (compressed or encrypted)"
            if r.offset < 0 or r.offset + r.length > file_size:
                return f"bytes at {r.start} are mapped past the end of the file"
        position = r.end
    if position != size:
        return f"the map covers {position} bytes of {size}"
    return None
