"""A disk copy that proves itself, reading the source once.

``copy_with_digest`` serves the source with ``qemu-nbd`` (read-only, its format stated, under
the same limits as qemu-img), asks its block status, reads every range that does not read as
zeros, digests what it read (``vmferry.model.disk_digest``) and writes the clusters that are
not zeros into a new qcow2 (``qcow2_writer``): one read of the source, a sparse write.

``digest_image`` reads the written image back (QEMU's own qcow2 driver decides what the
guest will see) and computes the same digest, and ``check_image`` has ``qemu-img check``
look at its metadata. Equal digests and a clean check prove that a guest sees the same bytes
in the copy as in the source.

Given ``data_file`` (the one file that holds an image's data), both read it in place: QEMU's
driver maps the image (``qemu-img map``: which range is zeros, where each stored range is in
the file) and vmferry reads those ranges itself (``mapped_image``); an image the map cannot
describe that way (compressed or encrypted data) is read through ``qemu-nbd`` as before.
``copy_with_digest(direct=True)`` reads a source in place with ``O_DIRECT`` where it can
(``mapped_image`` says when); the read-back goes through the page cache, where the copy is.

The copy reaches the disk while it is read back: ``durable`` fsyncs it (and its directory)
in a thread meanwhile. (An fdatasync every 256 MiB during the copy, tried, made the copy
of the benchmark's disk slower, 3.6-4.0 s against 1.9-2.8 s, and the whole no faster.)

Reads are 512 KiB, four in flight: larger requests made qemu-nbd slower here (1 GiB of a
raw file from the page cache in 1.0-1.3 s with 2-4 MiB requests, 0.5 s with 512 KiB). The
reader works on the next reads while this thread writes: qemu-nbd in its own process (this
thread then hashes), or the in-place reader's thread (four when it reads past the page
cache, one read each), which hashes what it read too.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vmferry.drivers import mapped_image, qemu_img, qemu_nbd
from vmferry.drivers.nbd_client import STATE_ZERO, ReadResult
from vmferry.drivers.qcow2_writer import CLUSTER, Qcow2Writer
from vmferry.errors import ToolError
from vmferry.model.disk_digest import (
    LEAF,
    Digest,
    DiskDigester,
    Extent,
    LeafDigests,
    leaf_digests,
    nonzero_ranges,
    plan_runs,
)

ProgressFn = Callable[[float], None]

READ_SIZE = 512 * 1024
DEPTH = 4
PROGRESS_EVERY_S = 0.2

assert LEAF == CLUSTER  # a leaf that is zeros is a cluster not written


class BlockReader(Protocol):
    """What ``_pump`` reads from: an ``NbdClient``, or a datastore's ``RangeReader``."""

    size: int

    def block_status(self, offset: int, length: int) -> list[tuple[int, int]]: ...

    def submit_read(
        self, offset: int, buffer: memoryview, *, whole: bool = False, digest: bool = False
    ) -> int: ...

    def wait(self, cookie: int) -> ReadResult | None: ...


@dataclass(frozen=True)
class CopyResult:
    digest: Digest  # of the source, from the bytes read
    bytes_sent: int  # guest bytes written into the copy (its zero clusters are not)


def copy_with_digest(
    source: Path,
    source_format: str,
    target: Path,
    *,
    data_file: Path | None = None,
    direct: bool = False,
    limits: qemu_img.ToolLimits = qemu_img.DEFAULT_LIMITS,
    on_progress: ProgressFn | None = None,
) -> CopyResult:
    """Copy ``source`` into a new sparse qcow2 ``target`` and digest the source on the way;
    ``data_file``: the one file holding its data, read in place where QEMU maps it (with
    ``direct``, past the page cache where it can: a file read once that is not in it).

    ``target`` must not exist. When this returns it is complete and closed, and in the page
    cache; part of it may not be on disk yet (see ``durable``).
    """
    with open_image(source, source_format, data_file, limits=limits, direct=direct) as reader:
        return copy_reader(reader, target, timeout_s=limits.timeout_s, on_progress=on_progress)


@contextlib.contextmanager
def open_image(
    image: Path,
    fmt: str,
    data_file: Path | None,
    *,
    limits: qemu_img.ToolLimits = qemu_img.DEFAULT_LIMITS,
    direct: bool = False,
) -> Iterator[BlockReader]:
    """``image`` to read: in place from ``data_file`` where QEMU's map allows (``direct``:
    with ``O_DIRECT`` where it can), else (or with no ``data_file``) served by ``qemu-nbd``."""
    if data_file is not None:
        with mapped_image.open_mapped(image, fmt, data_file, limits=limits,
                                      direct=direct) as mapped:  # fmt: skip
            if not isinstance(mapped, str):
                yield mapped
                return
    with qemu_nbd.serve(image, fmt, limits=limits) as served:
        yield served


def copy_reader(
    reader: BlockReader,
    target: Path,
    *,
    timeout_s: float,
    on_progress: ProgressFn | None = None,
    read_size: int = READ_SIZE,
    depth: int = DEPTH,
    leaves: LeafDigests | None = None,
) -> CopyResult:
    """``copy_with_digest`` from any ``reader``: ``depth`` reads of ``read_size`` in flight
    (a datastore's ``RangeReader`` reads raw extents this way, several connections at once);
    ``leaves``, when given, keeps each leaf's digest too (a warm import updates them)."""
    try:
        writer = Qcow2Writer(target, reader.size)
    except OSError as exc:
        raise ToolError(f"cannot create {target}: {exc.strerror or exc}") from exc
    try:
        result = _pump(reader, writer, on_progress, timeout_s, read_size, depth, leaves)
        writer.finish()
    except OSError as exc:  # a full disk, an I/O error
        raise ToolError(f"writing {target.name} failed: {exc.strerror or exc}") from exc
    finally:
        writer.close()
    return result


def digest_image(
    path: Path,
    fmt: str,
    *,
    data_file: Path | None = None,
    limits: qemu_img.ToolLimits = qemu_img.DEFAULT_LIMITS,
    on_progress: ProgressFn | None = None,
) -> Digest:
    """The digest of what a guest sees in ``path``, read once (``open_image``)."""
    with open_image(path, fmt, data_file, limits=limits) as reader:
        return _pump(reader, None, on_progress, limits.timeout_s).digest


def check_image(path: Path, *, limits: qemu_img.ToolLimits = qemu_img.DEFAULT_LIMITS) -> str | None:
    """What ``qemu-img check`` finds wrong in a qcow2's metadata, None when nothing."""
    code, out = qemu_img.run_limited(
        ["qemu-img", "check", "-f", "qcow2", "--output=json", str(path)],
        limits,
        ok_codes=(0, 1, 2, 3),
    )
    try:
        report = json.loads(out[out.index("{") :])
    except ValueError:
        return f"qemu-img check exited {code} without a report"
    problems = {
        key: int(report.get(key, 0))
        for key in ("check-errors", "corruptions", "leaks", "corruptions-fixed", "leaks-fixed")
    }
    found = {key: value for key, value in problems.items() if value}
    if code != 0 or found:
        return ", ".join(f"{k} {v}" for k, v in found.items()) or f"exit {code}"
    return None


@contextlib.contextmanager
def durable(path: Path) -> Iterator[None]:
    """fsync ``path`` and its directory in a thread while the block runs; wait for it at the
    end and raise if it failed."""
    failure: list[OSError | ToolError] = []

    def sync() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            sync_directory(path.parent)
        except (OSError, ToolError) as exc:
            failure.append(exc)

    thread = threading.Thread(target=sync, name="vmferry-fsync", daemon=True)
    thread.start()
    yield
    thread.join()
    if failure:
        problem = failure[0]
        if isinstance(problem, ToolError):
            raise problem
        raise ToolError(f"could not write {path.name} to disk: {problem.strerror or problem}")


def sync_directory(path: Path) -> None:
    """fsync a directory (after renames in it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ToolError(f"could not write {path} to disk: {exc.strerror or exc}") from exc


def _extents(client: BlockReader) -> Iterator[Extent]:
    offset = 0
    while offset < client.size:
        for length, flags in client.block_status(offset, client.size - offset):
            length = min(length, client.size - offset)
            yield Extent(offset, length, bool(flags & STATE_ZERO))
            offset += length
            if offset >= client.size:
                break


def _pump(
    reader: BlockReader,
    writer: Qcow2Writer | None,
    on_progress: ProgressFn | None,
    timeout_s: float,
    read_size: int = READ_SIZE,
    depth: int = DEPTH,
    leaves: LeafDigests | None = None,
) -> CopyResult:
    """Read ``reader`` once (what its block status does not call zeros), digest it, and
    write what is not zeros to ``writer`` when there is one; give up after ``timeout_s``
    (the wall clock qemu-img had under the same limits)."""
    size = reader.size
    deadline = time.monotonic() + timeout_s
    digester = DiskDigester(size)
    free = [mmap.mmap(-1, read_size) for _ in range(depth)]  # page-aligned: O_DIRECT reads
    in_flight: deque[tuple[int, int, int, mmap.mmap | None]] = deque()  # offset, length, cookie
    sent = 0
    last_report = 0.0
    runs = plan_runs(_extents(reader), size, read_size)
    exhausted = False
    while True:
        while not exhausted and free:
            run = next(runs, None)
            if run is None:
                exhausted = True
            elif run.zero:
                in_flight.append((run.offset, run.length, 0, None))
            else:
                pool = free.pop()
                view = memoryview(pool)[: run.length]
                cookie = reader.submit_read(run.offset, view, whole=True, digest=True)
                in_flight.append((run.offset, run.length, cookie, pool))
        if not in_flight:
            break
        offset, length, cookie, buffer = in_flight.popleft()
        if buffer is None:
            digester.add_zeros(length)
        else:
            result = reader.wait(cookie)
            assert result is not None
            data = result.fill_holes()  # a server may still answer with holes
            digests = leaf_digests(data) if result.digests is None else result.digests
            zero = digester.add_digests(digests, length)
            if leaves is not None:
                leaves.set_digests(offset, digests, length)
            if writer is not None:
                for start, end in nonzero_ranges(zero, length):
                    writer.write(offset + start, data[start:end])
                    sent += end - start
            free.append(buffer)
        now = time.monotonic()
        if now > deadline:
            raise ToolError(f"reading the disk did not finish within {timeout_s:g} s")
        if on_progress is not None and now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            on_progress(100.0 * digester.position / size)
    if on_progress is not None:
        on_progress(100.0)
    return CopyResult(digester.finish(), sent)
