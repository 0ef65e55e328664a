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
"""

from __future__ import annotations

import bisect
import contextlib
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
    ``in_place_refusal``): reads are queued to one thread, answered in order."""

    def __init__(self, fd: int, ranges: list[MapRange], size: int, name: str) -> None:
        super().__init__(1, "vmferry-pread")
        self.size = size
        self._fd = fd
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
                self._pread(part, r.offset + at - r.start)
            done += take
            index += 1
        return ReadResult(offset, len(buffer), buffer)

    def _pread(self, part: memoryview, position: int) -> None:
        got = 0
        while got < len(part):
            n = os.preadv(self._fd, [part[got:]], position + got)
            if n <= 0:
                raise ToolError(f"{self._name} ended early: it changed while it was read")
            got += n


@contextlib.contextmanager
def open_mapped(
    image: Path, fmt: str, data_file: Path, *, limits: ToolLimits = DEFAULT_LIMITS
) -> Iterator[MappedReader | str]:
    """A ``MappedReader`` over ``data_file`` (the one file holding ``image``'s data; the
    image itself for a one-file format), or the reason it cannot be read that way."""
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
        reader = MappedReader(fd, ranges, size, data_file.name)
        try:
            yield reader
        finally:
            reader.close()
    finally:
        os.close(fd)
