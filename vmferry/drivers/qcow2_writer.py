"""Write a new qcow2 image (version 3, 64 KiB clusters, 16-bit refcounts) from data given in
guest-offset order, with no other process in the way.

Why vmferry writes qcow2 itself: the import digests every byte it copies, so the bytes pass
through vmferry anyway; handing them to a ``qemu-nbd`` that writes the qcow2 cost this
machine more CPU than the whole ``qemu-img convert`` (docs/performance.md). Writing the
clusters with ``pwrite`` costs one copy. What makes that safe is what comes after: the image
is read back through QEMU's own qcow2 driver and digested (the guest sees what QEMU reads),
and ``qemu-img check`` must find no error and no leak in its metadata.

The layout is the simplest that qcow2 allows (docs/interop/qcow2.rst in QEMU): the header in
cluster 0; the data clusters appended in the order they come, each 512 MiB region's L2 table
appended when the data has moved past that region; at the end the L1 table, the refcount
blocks and the refcount table. Every cluster of the file is used exactly once, so every
refcount is 1 and every L1 and L2 entry carries the COPIED flag. Clusters that read as zeros
are not written and stay unallocated.
"""

from __future__ import annotations

import math
import os
import struct
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
L2_ENTRIES = CLUSTER // 8
REGION = CLUSTER * L2_ENTRIES  # the guest bytes one L2 table maps: 512 MiB
REFCOUNT_ORDER = 4  # 16-bit refcounts
REFCOUNTS_PER_BLOCK = CLUSTER * 8 // (1 << REFCOUNT_ORDER)
COPIED = 1 << 63
MAGIC = b"QFI\xfb"
HEADER_LENGTH = 104


@dataclass(frozen=True)
class Tail:
    """Where the metadata written at the end goes (in clusters), given ``used`` clusters so
    far: the L1 table, then the refcount blocks, then the refcount table."""

    l1_start: int
    l1_clusters: int
    refblocks_start: int
    refblocks: int
    reftable_start: int
    reftable_clusters: int

    @property
    def total(self) -> int:
        return self.reftable_start + self.reftable_clusters


def l1_entries(size: int) -> int:
    return math.ceil(size / REGION)


def plan_tail(used: int, l1_size: int) -> Tail:
    """The smallest refcount structures that cover every cluster, themselves included."""
    l1_clusters = max(1, math.ceil(l1_size * 8 / CLUSTER))
    before = used + l1_clusters
    refblocks = reftable = 1
    while True:
        total = before + refblocks + reftable
        need_blocks = math.ceil(total / REFCOUNTS_PER_BLOCK)
        need_table = math.ceil(need_blocks * 8 / CLUSTER)
        if need_blocks <= refblocks and need_table <= reftable:
            break
        refblocks, reftable = max(refblocks, need_blocks), max(reftable, need_table)
    return Tail(used, l1_clusters, before, refblocks, before + refblocks, reftable)


def header(size: int, l1_size: int, tail: Tail) -> bytes:
    """Cluster 0's content: the version 3 header and the end of its (no) extensions."""
    fields = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        MAGIC,
        3,  # version
        0,  # backing file offset
        0,  # backing file name length
        CLUSTER_BITS,
        size,
        0,  # no encryption
        l1_size,
        tail.l1_start * CLUSTER,
        tail.reftable_start * CLUSTER,
        tail.reftable_clusters,
        0,  # snapshots
        0,  # snapshots offset
        0,  # incompatible features
        0,  # compatible features
        0,  # autoclear features
        REFCOUNT_ORDER,
        HEADER_LENGTH,
    )
    assert len(fields) == HEADER_LENGTH
    return fields + struct.pack(">II", 0, 0)  # end of header extensions


class Qcow2Writer:
    """A new qcow2 file of guest ``size`` bytes at ``path``, written in one pass.

    ``write`` takes cluster-aligned data in increasing guest offsets (the last cluster may be
    short at the end of the disk); ``finish`` writes the metadata. Nothing is fsynced here.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self.l1_size = l1_entries(size)
        self._l1 = array("Q", bytes(8 * self.l1_size))
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._next = 1  # the next free host cluster (0 is the header)
        self._region = -1
        self._l2 = array("Q")
        self._end = 0  # the guest offset the next write may start at
        self.data_bytes = 0

    def write(self, offset: int, data: memoryview) -> None:
        if offset % CLUSTER or offset < self._end:
            raise ValueError(f"write at {offset}: not cluster-aligned or not in order")
        end = offset + len(data)
        if end > self.size or (len(data) % CLUSTER and end != self.size):
            raise ValueError(f"write of {len(data)} bytes at {offset}: not whole clusters")
        position = 0
        while position < len(data):
            guest = offset + position
            region = guest // REGION
            if region != self._region:
                self._close_region()
                self._region = region
                self._l2 = array("Q", bytes(CLUSTER))
            piece = min(len(data) - position, (region + 1) * REGION - guest)
            host = self._next
            os.pwrite(self._fd, data[position : position + piece], host * CLUSTER)
            first = (guest % REGION) // CLUSTER
            for index in range(math.ceil(piece / CLUSTER)):
                self._l2[first + index] = ((host + index) * CLUSTER) | COPIED
            self._next += math.ceil(piece / CLUSTER)
            position += piece
        self._end = end
        self.data_bytes += len(data)

    def finish(self) -> None:
        """Write the last L2 table, the L1 table, the refcounts and the header; close."""
        self._close_region()
        tail = plan_tail(self._next, self.l1_size)
        _big_endian_write(self._fd, self._l1, tail.l1_start * CLUSTER)
        ones = b"\x00\x01" * REFCOUNTS_PER_BLOCK  # one refcount block of 1s (big-endian)
        for block in range(math.ceil(tail.total / REFCOUNTS_PER_BLOCK)):  # a block at a time
            count = min(REFCOUNTS_PER_BLOCK, tail.total - block * REFCOUNTS_PER_BLOCK)
            os.pwrite(self._fd, ones[: 2 * count], (tail.refblocks_start + block) * CLUSTER)
        blocks = [(tail.refblocks_start + i) * CLUSTER for i in range(tail.refblocks)]
        _big_endian_write(self._fd, array("Q", blocks), tail.reftable_start * CLUSTER)
        os.ftruncate(self._fd, tail.total * CLUSTER)
        os.pwrite(self._fd, header(self.size, self.l1_size, tail), 0)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    def _close_region(self) -> None:
        if self._region < 0:
            return
        _big_endian_write(self._fd, self._l2, self._next * CLUSTER)
        self._l1[self._region] = (self._next * CLUSTER) | COPIED
        self._next += 1
        self._region = -1


def _big_endian_write(fd: int, values: array[int], offset: int) -> None:
    if sys.byteorder == "little":
        values = array(values.typecode, values)
        values.byteswap()
    if values:
        os.pwrite(fd, values.tobytes(), offset)
