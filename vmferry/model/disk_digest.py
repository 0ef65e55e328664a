"""The canonical digest of what a guest sees on a disk, and the reads that compute it (pure).

The disk's virtual content, zeros included, is cut into 64 KiB leaves (the last one may be
shorter). A leaf's digest is the BLAKE3 hash of its bytes; a leaf that reads as zeros has
the digest of that many zero bytes, whether its zeros were read or a block status said so,
so the digest does not depend on how an image stores its content (allocated zeros, holes,
clusters of another size). The leaf digests of each GiB are hashed together into a span
digest; the disk's digest is the hash of its size and its span digests. Two images with the
same digest show a guest the same bytes; where they differ, the first differing span says
in which GiB.

BLAKE3 rather than SHA-256: both are cryptographic (no one can make two contents with one
digest), and BLAKE3 hashed 64 KiB leaves at 2.3 GB/s on this machine's CPU against 1.3 GB/s
for SHA-256 (with SHA-NI); the import hashes every byte twice. Zero leaves cost nothing:
their digest is a constant, so an 8 GiB disk holding 1 GiB of data hashes 1 GiB.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from blake3 import blake3

LEAF = 64 * 1024
SPAN = 2**30
_LEAVES_PER_SPAN = SPAN // LEAF
_ZERO_LEAF = blake3(bytes(LEAF)).digest()


def zero_digest(length: int) -> bytes:
    """The digest of a leaf of ``length`` zero bytes."""
    return _ZERO_LEAF if length == LEAF else blake3(bytes(length)).digest()


def leaf_digests(data: memoryview | bytes | bytearray) -> list[bytes]:
    """The digest of each leaf of ``data`` (whole leaves; the last may be short). BLAKE3
    lets go of Python's lock while it hashes: a reader's thread can do this."""
    view = memoryview(data)
    return [blake3(view[start : start + LEAF]).digest() for start in range(0, len(view), LEAF)]


def _zero_flags(digests: Sequence[bytes], length: int) -> list[bool]:
    """For leaves of ``length`` bytes in all with these digests: which are all zeros."""
    last = length - (len(digests) - 1) * LEAF
    flags = [digest == _ZERO_LEAF for digest in digests]
    if digests and last != LEAF:
        flags[-1] = digests[-1] == zero_digest(last)
    return flags


@dataclass(frozen=True)
class Extent:
    """A range of the disk and whether it reads as zeros (a block status answer)."""

    offset: int
    length: int
    zero: bool


@dataclass(frozen=True)
class Run:
    """Leaves to treat alike: ``zero`` runs are not read; others are read whole."""

    offset: int
    length: int
    zero: bool


def plan_runs(extents: Iterable[Extent], size: int, max_read: int) -> Iterator[Run]:
    """The leaf-aligned runs that cover ``size`` bytes: a leaf is zero when the extents say
    all of it reads as zeros, else it is read (with whatever zeros it holds). Read runs are
    at most ``max_read`` bytes (a multiple of ``LEAF``); zero runs are merged whole.

    ``extents`` must cover ``[0, size)`` in order without gaps.
    """
    if max_read <= 0 or max_read % LEAF:
        raise ValueError(f"max_read {max_read} is not a positive multiple of {LEAF}")
    pending: Run | None = None
    for run in _leaf_runs(extents, size):
        if pending is not None and pending.zero == run.zero:
            pending = Run(pending.offset, pending.length + run.length, run.zero)
        else:
            if pending is not None:
                yield from _split(pending, max_read)
            pending = run
    if pending is not None:
        yield from _split(pending, max_read)


def _leaf_runs(extents: Iterable[Extent], size: int) -> Iterator[Run]:
    """Runs of leaves, each wholly zero or not, from extents of any alignment."""
    position = 0  # where the next extent must start
    leaf_start = 0  # the first leaf not yet classified
    leaf_has_data = False  # whether an extent that is not zero touched it
    for extent in extents:
        if position >= size:
            break
        if extent.offset != position or extent.length <= 0:
            raise ValueError(f"the extents are not contiguous at {position}")
        end = min(extent.offset + extent.length, size)
        leaf_has_data = leaf_has_data or not extent.zero
        leaf_end = min(leaf_start + LEAF, size)
        if leaf_end <= end:  # the leaf in progress ends within this extent
            yield Run(leaf_start, leaf_end - leaf_start, not leaf_has_data)
            leaf_start = leaf_end
            whole_end = size if end == size else leaf_start + (end - leaf_start) // LEAF * LEAF
            if whole_end > leaf_start:  # the leaves wholly inside this extent
                yield Run(leaf_start, whole_end - leaf_start, extent.zero)
                leaf_start = whole_end
            leaf_has_data = not extent.zero and leaf_start < end
        position = end
    if position < size:
        raise ValueError(f"the extents end at {position} of {size}")


def _split(run: Run, max_read: int) -> Iterator[Run]:
    if run.zero:
        yield run
        return
    offset, end = run.offset, run.offset + run.length
    while offset < end:
        length = min(max_read, end - offset)
        yield Run(offset, length, False)
        offset += length


def nonzero_ranges(zero: list[bool], length: int) -> Iterator[tuple[int, int]]:
    """(start, end) byte ranges of the consecutive leaves that are not all zeros, in a piece
    of ``length`` bytes whose leaves' zero-ness is ``zero`` (``DiskDigester.add_data``)."""
    start: int | None = None
    for index, is_zero in enumerate(zero):
        if not is_zero and start is None:
            start = index * LEAF
        elif is_zero and start is not None:
            yield start, index * LEAF
            start = None
    if start is not None:
        yield start, length


@dataclass(frozen=True)
class Digest:
    """A disk's digest: its size, one digest per GiB, and their hash."""

    size: int
    spans: tuple[bytes, ...]

    @property
    def hexdigest(self) -> str:
        h = blake3(struct.pack(">Q", self.size))
        for span in self.spans:
            h.update(span)
        return h.hexdigest()

    def first_difference(self, other: Digest) -> int | None:
        """The offset of the first GiB whose content differs, None when equal (a size
        difference is at the smaller size)."""
        for index, (mine, theirs) in enumerate(zip(self.spans, other.spans, strict=False)):
            if mine != theirs:
                return index * SPAN
        if self.size != other.size:
            return min(self.size, other.size)
        return None


class DiskDigester:
    """Builds a disk's Digest from its leaves, fed in order from offset 0."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self._spans: list[bytes] = []
        self._span = blake3()
        self._leaves_in_span = 0

    def add_zeros(self, length: int) -> None:
        """``length`` bytes that read as zeros (whole leaves, or up to the disk's end)."""
        self._check(length)
        full, rest = divmod(length, LEAF)
        while full:
            take = min(full, _LEAVES_PER_SPAN - self._leaves_in_span)
            self._span.update(_ZERO_LEAF * take)
            self._advance(take, take * LEAF)
            full -= take
        if rest:
            self._span.update(zero_digest(rest))
            self._advance(1, rest)

    def add_data(self, data: memoryview) -> list[bool]:
        """Bytes read from the disk (whole leaves, or up to the disk's end); for each leaf,
        whether it is all zeros (then a sparse copy need not write it)."""
        return self.add_digests(leaf_digests(data), len(data))

    def add_digests(self, digests: Sequence[bytes], length: int) -> list[bool]:
        """``add_data`` for ``length`` bytes whose ``leaf_digests`` are known already."""
        self._check(length)
        if len(digests) != -(-length // LEAF):
            raise ValueError(f"{len(digests)} leaf digests for {length} bytes")
        for index, digest in enumerate(digests):
            self._span.update(digest)
            self._advance(1, min(LEAF, length - index * LEAF))
        return _zero_flags(digests, length)

    def finish(self) -> Digest:
        if self.position != self.size:
            raise ValueError(f"digest of {self.size} bytes finished at {self.position}")
        if self._leaves_in_span or not self._spans:
            self._spans.append(self._span.digest())
        return Digest(self.size, tuple(self._spans))

    def _check(self, length: int) -> None:
        end = self.position + length
        if length <= 0 or end > self.size or (length % LEAF and end != self.size):
            raise ValueError(f"{length} bytes at {self.position} are not whole leaves")

    def _advance(self, leaves: int, length: int) -> None:
        self.position += length
        self._leaves_in_span += leaves
        if self._leaves_in_span == _LEAVES_PER_SPAN:
            self._spans.append(self._span.digest())
            self._span = blake3()
            self._leaves_in_span = 0


def copy_failure(source: Digest, copy: Digest, metadata_problem: str | None) -> str | None:
    """Why a copy is not a proof of its source (digests from the source's one read and the
    copy's read-back, and what ``qemu-img check`` found), None when it is."""
    if metadata_problem is not None:
        return f"has faulty metadata ({metadata_problem})"
    if copy.size != source.size:
        return f"has {copy.size} bytes for {source.size}"
    where = source.first_difference(copy)
    if where is not None:
        return f"differs from it in the GiB at offset {where}"
    return None


class LeafDigests:
    """A disk's leaf digests kept one by one, so a copy updated in place (a warm import's
    changed areas, read again) still gives the disk's ``Digest`` without reading it all
    again: the same leaves, spans and hash as ``DiskDigester``. Zero leaves until set."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"a disk of {size} bytes")
        self.size = size
        count = -(-size // LEAF)
        self._leaves = [_ZERO_LEAF] * count
        if size % LEAF:
            self._leaves[-1] = zero_digest(size % LEAF)

    def set_data(self, offset: int, data: memoryview | bytes | bytearray) -> list[bool]:
        """The bytes now at ``offset`` (whole leaves, or up to the disk's end); for each
        leaf, whether it is all zeros."""
        return self.set_digests(offset, leaf_digests(data), len(data))

    def set_digests(self, offset: int, digests: Sequence[bytes], length: int) -> list[bool]:
        """``set_data`` for ``length`` bytes whose ``leaf_digests`` are known already."""
        self._check(offset, length)
        if len(digests) != -(-length // LEAF):
            raise ValueError(f"{len(digests)} leaf digests for {length} bytes")
        first = offset // LEAF
        self._leaves[first : first + len(digests)] = digests
        return _zero_flags(digests, length)

    def digest(self) -> Digest:
        spans = tuple(
            blake3(b"".join(self._leaves[i : i + _LEAVES_PER_SPAN])).digest()
            for i in range(0, len(self._leaves), _LEAVES_PER_SPAN)
        )
        return Digest(self.size, spans)

    def _check(self, offset: int, length: int) -> None:
        end = offset + length
        if offset % LEAF or length <= 0 or end > self.size or (length % LEAF and end != self.size):
            raise ValueError(f"{length} bytes at {offset} are not whole leaves")


def changed_runs(areas: Iterable[tuple[int, int]], size: int, max_read: int) -> list[Run]:
    """The leaf-aligned reads (at most ``max_read`` bytes each, a multiple of ``LEAF``) that
    cover the changed ``areas`` (start, length) of a disk of ``size`` bytes: each area
    rounded out to whole leaves, overlapping and touching ones merged, in order."""
    if max_read <= 0 or max_read % LEAF:
        raise ValueError(f"max_read {max_read} is not a positive multiple of {LEAF}")
    spans: list[tuple[int, int]] = []
    for start, length in sorted(areas):
        if start < 0 or length < 0 or start + length > size:
            raise ValueError(f"the area {start}+{length} is outside the disk's {size} bytes")
        if length == 0:
            continue
        first, end = start // LEAF * LEAF, min(-(-(start + length) // LEAF) * LEAF, size)
        if spans and first <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((first, end))
    runs: list[Run] = []
    for first, end in spans:
        runs.extend(_split(Run(first, end - first, False), max_read))
    return runs
