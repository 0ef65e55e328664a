"""A disk image read where QEMU maps its data (``vmferry.model.disk_map``).

``open_mapped`` runs ``qemu-img map`` on the image (its format stated, under the same limits
as every qemu-img run) and, when the map allows it, yields a ``MappedReader``: the reading
interface of ``verified_copy._pump`` over ``pread`` of the file that holds the data, one
thread reading ahead and, for ``verified_copy._pump``, hashing each leaf (``ReadQueue``)
while the caller writes. When
the image must be read through ``qemu-nbd`` instead, it yields the reason.

Why: serving the benchmark's 1 GiB of data through ``qemu-nbd`` cost 0.7-1.2 s of system
time in qemu-nbd alone (its reads, its socket), and the copy ran at qemu-nbd's pace; reading
the same ranges from the file took a third of the time (docs/performance.md, Import).

``direct``: a source read once (the user's disk, not a file this import wrote) is read with
``O_DIRECT`` where its filesystem is on a block device, four reads in flight in four
threads: its bytes go from the disk into the copy's buffers, not into the page cache, so
the copy neither evicts the machine's cache for data used once nor waits for the kernel
to find pages for it (on this machine, a VM whose host takes back the memory the guest
frees, that wait was most of the copy's spread: docs/performance.md). A read the device
cannot take directly (not ``DIRECT_ALIGN``-aligned in the file, in its length or in the
buffer) is read through the page cache, as is everything when the filesystem refuses
``O_DIRECT``. A file the import has just written stays read through the page cache, where
it still is (``O_DIRECT`` would write it out first and read it back from the disk).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vmferry.drivers.nbd_client import STATE_ZERO, ReadResult
from vmferry.drivers.qemu_img import DEFAULT_LIMITS, ToolLimits, kill_group, limited
from vmferry.drivers.read_queue import ReadQueue
from vmferry.errors import ToolError
from vmferry.model.disk_map import MapRange, in_place_refusal, parse_map

# about 120 000 ranges (a qemu-img map entry is about 140 bytes): the map and its ranges
# stay within some tens of MiB of memory
MAX_MAP_BYTES = 16 * 2**20
DIRECT_ALIGN = 4096  # a file offset, length and buffer address any block device takes
DIRECT_WORKERS = 4  # verified_copy.DEPTH: each read in flight at the device


def image_map(
    image: Path, fmt: str, limits: ToolLimits = DEFAULT_LIMITS, max_bytes: int = MAX_MAP_BYTES
) -> list[MapRange] | None:
    """``qemu-img map --output=json -f fmt image`` under ``limits``; None when its answer
    is longer than ``max_bytes`` (an image in that many pieces is read through qemu-nbd,
    whose block status comes a piece at a time)."""
    argv = ["qemu-img", "map", "--output=json", "-f", fmt, str(image)]
    with tempfile.TemporaryFile() as errors:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=errors, preexec_fn=limited(limits))  # fmt: skip
        except FileNotFoundError as exc:
            raise ToolError("qemu-img is not installed; run `make install`") from exc
        assert proc.stdout is not None
        try:
            out = _read_at_most(proc, proc.stdout.fileno(), max_bytes, limits.timeout_s)
        finally:
            kill_group(proc)  # done, or given up on: it is waited for either way
        if out is None:
            return None
        if proc.returncode != 0:
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()
            raise ToolError(f"qemu-img map of {image.name} failed: {said[-1] if said else ''}")
    try:
        return parse_map(out.decode())
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"qemu-img map of {image.name} answered what vmferry cannot read") from exc


def _read_at_most(
    proc: subprocess.Popen[bytes], fd: int, max_bytes: int, timeout_s: float
) -> bytes | None:
    """All of ``fd`` until ``proc`` closes it; None past ``max_bytes``."""
    deadline = time.monotonic() + timeout_s
    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ToolError(f"qemu-img map did not finish within {timeout_s:g} s")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            proc.wait()
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            return None
        chunks.append(chunk)


class MappedReader(ReadQueue):
    """``size`` guest bytes read from ``fd`` where ``ranges`` place them (checked by
    ``in_place_refusal``): reads are queued to one thread, answered in order. With
    ``direct_fd`` (the same file opened ``O_DIRECT``), to ``DIRECT_WORKERS`` threads, and
    the aligned parts of each read are read from it."""

    def __init__(
        self, fd: int, ranges: list[MapRange], size: int, name: str, direct_fd: int | None = None
    ) -> None:
        super().__init__(1 if direct_fd is None else DIRECT_WORKERS, "vmferry-pread")
        self.size = size
        self._fd = fd
        self._direct = direct_fd
        self._name = name
        self._ranges = ranges
        self._starts = [r.start for r in ranges]

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The map's ranges from ``offset`` on: zeros, or data."""
        index = bisect.bisect_right(self._starts, offset) - 1
        found = []
        for r in self._ranges[index:]:
            found.append((r.end - max(offset, r.start), STATE_ZERO if r.zero else 0))
        return found

    def close(self) -> None:
        self._stop_reads()

    def _read(self, offset: int, buffer: memoryview) -> ReadResult:
        """``buffer`` filled from the guest's ``offset``: stored ranges read, zeros written."""
        done = 0
        index = bisect.bisect_right(self._starts, offset) - 1
        while done < len(buffer):
            r = self._ranges[index]
            at = offset + done
            take = min(r.end - at, len(buffer) - done)
            part = buffer[done : done + take]
            if r.zero or r.offset is None:
                part[:] = bytes(take)
            else:
                self._pread(part, r.offset + at - r.start, done)
            done += take
            index += 1
        return ReadResult(offset, len(buffer), buffer)

    def _pread(self, part: memoryview, position: int, in_buffer: int) -> None:
        """``part`` (at ``in_buffer`` in the caller's buffer) from the file's ``position``."""
        got = 0
        while got < len(part):
            direct = self._direct
            if direct is not None and _aligned(position + got, len(part) - got, in_buffer + got):
                try:
                    n = os.preadv(direct, [part[got:]], position + got)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: the buffer's address (a caller's
                        raise  # own bytearray) or the device's alignment: the page cache then
                    self._direct = None
                    continue
            else:
                n = os.preadv(self._fd, [part[got:]], position + got)
            if n <= 0:
                raise ToolError(f"{self._name} ended early: it changed while it was read")
            got += n


def _aligned(*values: int) -> bool:
    return all(value % DIRECT_ALIGN == 0 for value in values)


def open_direct(path: Path, fd: int) -> int | None:
    """``path`` (open as ``fd``) opened again with ``O_DIRECT``; None where its filesystem
    is not on a block device of its own (NFS, tmpfs, FUSE, and btrfs, whose devices are
    anonymous: the page cache stays theirs to manage) or refuses ``O_DIRECT``."""
    if os.major(os.fstat(fd).st_dev) == 0:
        return None
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
    except OSError:
        return None


@contextlib.contextmanager
def open_mapped(
    image: Path,
    fmt: str,
    data_file: Path,
    *,
    limits: ToolLimits = DEFAULT_LIMITS,
    direct: bool = False,
) -> Iterator[MappedReader | str]:
    """A ``MappedReader`` over ``data_file`` (the one file holding ``image``'s data; the
    image itself for a one-file format), or the reason it cannot be read that way;
    ``direct``: read with ``O_DIRECT`` where it can (the module says when)."""
    ranges = image_map(image, fmt, limits, max_bytes=MAX_MAP_BYTES)
    if ranges is None:
        yield f"QEMU maps it in more pieces than {MAX_MAP_BYTES} bytes of map describe"
        return
    size = ranges[-1].end if ranges else 0
    try:
        fd = os.open(data_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ToolError(f"cannot read {data_file.name}: {exc.strerror or exc}") from exc
    try:
        refusal = in_place_refusal(ranges, size, os.fstat(fd).st_size)
        if refusal is not None:
            yield refusal
            return
        direct_fd = open_direct(data_file, fd) if direct else None
        try:
            reader = MappedReader(fd, ranges, size, data_file.name, direct_fd)
            try:
                yield reader
            finally:
                reader.close()
        finally:
            if direct_fd is not None:
                os.close(direct_fd)
    finally:
        os.close(fd)
