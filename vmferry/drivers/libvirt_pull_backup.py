"""A running VM's disks read while it runs, whole or only what changed since a checkpoint:
libvirt's backup API in pull mode (``virDomainBackupBegin``: QEMU serves each disk's
point-in-time image over NBD) with checkpoints (``virDomainCheckpointCreateXML``: a
persistent dirty bitmap per disk from that moment on).

``--strategy warm-incremental`` (:mod:`vmferry.engine.offline`) copies the disks with it into
sparse raw volumes of the destination (libvirt's upload streams, at the offsets read), round after
round, each round reading only the blocks the bitmap of the last round's checkpoint marks.

The NBD server listens on the host's address (the one its libvirt URI names) on the first
port of 10809-10872 (libvirt's own ``backup_port_min..max`` defaults) that QEMU can bind,
without TLS: the export is read-only and lives for one round.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse
from xml.sax.saxutils import quoteattr

import libvirt
from defusedxml.ElementTree import fromstring

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.nbd_client import BASE_ALLOCATION, STATE_HOLE, STATE_ZERO, NbdClient

__all__ = [
    "PullBackup",
    "begin_pull",
    "changed_extents",
    "delete_checkpoints",
    "end_pull",
    "freeze",
    "nbd_address",
    "pause",
    "resume_thawed",
    "upload_range",
]

DIRTY = 1  # a dirty bitmap's block status flag


@dataclass(frozen=True)
class PullBackup:
    address: str
    port: int
    exports: dict[str, str]  # disk target -> NBD export name
    bitmaps: dict[str, str]  # disk target -> the exported dirty bitmap (incremental only)


def nbd_address(uri: str) -> str:
    """Where a host's NBD server is reached: the host its libvirt URI names (a local URI:
    this machine)."""
    return urlparse(uri).hostname or "127.0.0.1"


PORTS = range(10809, 10873)


def pull_xml(address: str, port: int, targets: list[str], others: list[str],
             incremental: str | None) -> str:  # fmt: skip
    """The pull-mode backup of ``targets`` served on ``address``:``port``, since checkpoint
    ``incremental`` (None: whole); ``others`` left out (pure)."""
    since = "" if incremental is None else f"<incremental>{incremental}</incremental>"
    disks = "".join(f"<disk name={quoteattr(t)} backup='yes' type='file' "
                    f"exportname={quoteattr(t)}/>" for t in targets)  # fmt: skip
    disks += "".join(f"<disk name={quoteattr(t)} backup='no'/>" for t in others)
    return (f"<domainbackup mode='pull'>{since}<server transport='tcp' "
            f"name={quoteattr(address)} port='{port}'/><disks>{disks}</disks>"
            "</domainbackup>")  # fmt: skip


def checkpoint_xml(name: str, targets: list[str], others: list[str]) -> str:
    """A checkpoint ``name`` with a bitmap on each of ``targets`` (pure)."""
    disks = "".join(f"<disk name={quoteattr(t)} checkpoint='bitmap'/>" for t in targets)
    disks += "".join(f"<disk name={quoteattr(t)} checkpoint='no'/>" for t in others)
    return f"<domaincheckpoint><name>{name}</name><disks>{disks}</disks></domaincheckpoint>"


def begin_pull(host: LibvirtHost, vm: str, targets: list[str], others: list[str], *,
               checkpoint: str | None, incremental: str | None) -> PullBackup:  # fmt: skip
    """Serve ``targets`` of running (or paused) ``vm`` over NBD: whole, or what changed since
    checkpoint ``incremental``; with ``checkpoint``, a new checkpoint starts at the same
    instant. Ended by :func:`end_pull`."""
    dom = host._lookup(vm)
    address = nbd_address(host.uri)
    point = None if checkpoint is None else checkpoint_xml(checkpoint, targets, others)
    for port in PORTS:
        try:
            dom.backupBegin(pull_xml(address, port, targets, others, incremental), point, 0)
            described = str(dom.backupGetXMLDesc(0))
            break
        except libvirt.libvirtError as exc:
            text = str(exc.get_error_message() or exc).lower()
            if port != PORTS[-1] and ("in use" in text or "bind" in text):
                continue  # another server has that port: the next one
            raise host._error(exc, f"starting a pull-mode backup of {vm}") from exc
    root = fromstring(described, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    exports, bitmaps = {}, {}
    for disk in root.iter("disk"):
        name = disk.get("name", "")
        if name in targets:
            exports[name] = disk.get("exportname") or name
            if incremental is not None:
                bitmaps[name] = disk.get("exportbitmap") or f"backup-{name}"
    return PullBackup(address, port, exports, bitmaps)


def end_pull(host: LibvirtHost, vm: str) -> None:
    """End the pull-mode backup of ``vm`` (none: nothing to do)."""
    try:
        host._lookup(vm).abortJob()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_OPERATION_INVALID,
                                    libvirt.VIR_ERR_NO_DOMAIN):  # fmt: skip
            return
        raise host._error(exc, f"ending the backup of {vm}") from exc


def delete_checkpoints(host: LibvirtHost, vm: str, prefix: str) -> list[str]:
    """Delete ``vm``'s checkpoints whose names start with ``prefix`` (their bitmaps too,
    while it runs; only the metadata when it is off); the names deleted."""
    dom = host._lookup(vm)
    try:
        found = [c for c in dom.listAllCheckpoints(0) if str(c.getName()).startswith(prefix)]
        running = bool(dom.isActive())
        flags = 0 if running else libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY
        # the newest first: a parent is deleted after its child
        for point in sorted(found, key=lambda c: str(c.getName()), reverse=True):
            point.delete(flags)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"deleting the checkpoints of {vm}") from exc
    return [str(c.getName()) for c in found]


def changed_extents(client: NbdClient, *, dirty_bitmap: bool,
                    gap: int = 2**20) -> Iterator[tuple[int, int]]:  # fmt: skip
    """The (offset, length) ranges to copy: what a dirty bitmap marks, or (``base:allocation``)
    what is not a hole or zeros; ranges closer than ``gap`` merged."""
    offset, pending = 0, None
    while offset < client.size:
        for length, flags in client.block_status(offset, client.size - offset):
            wanted = bool(flags & DIRTY) if dirty_bitmap else not flags & (STATE_HOLE | STATE_ZERO)
            if wanted:
                if pending is not None and offset - (pending[0] + pending[1]) <= gap:
                    pending = (pending[0], offset + length - pending[0])
                else:
                    if pending is not None:
                        yield pending
                    pending = (offset, length)
            offset += length
            if offset >= client.size:
                break
    if pending is not None:
        yield pending


def meta_context(backup: PullBackup, target: str) -> bytes:
    """The NBD meta context a disk's extents are read from in this backup."""
    bitmap = backup.bitmaps.get(target)
    return BASE_ALLOCATION if bitmap is None else f"qemu:dirty-bitmap:{bitmap}".encode()


def freeze(host: LibvirtHost, vm: str) -> str | None:
    """Freeze ``vm``'s filesystems through its guest agent (flushed, consistent on disk);
    None when done, else why not (no agent, or it refused: the disks are then as after a
    power cut)."""
    try:
        host._lookup(vm).fsFreeze(None, 0)
    except libvirt.libvirtError as exc:
        return str(exc.get_error_message() or exc)
    return None


def pause(host: LibvirtHost, vm: str) -> None:
    """Pause ``vm`` (its vCPUs stop; it stays on its host, memory and all)."""
    try:
        host._lookup(vm).suspend()
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"pausing {vm}") from exc


def resume_thawed(host: LibvirtHost, vm: str) -> None:
    """Let a paused ``vm`` run again, its filesystems thawed if they were frozen."""
    dom = host._lookup(vm)
    try:
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"resuming {vm}") from exc
    with contextlib.suppress(libvirt.libvirtError):  # not frozen, or no agent: nothing to do
        dom.fsThaw(None, 0)


def upload_range(host: LibvirtHost, path: str, offset: int, data: memoryview) -> None:
    """Write ``data`` into the raw volume at ``path`` at ``offset`` (libvirt's upload stream;
    the rest of the volume is left as it is)."""
    stream = host._c.newStream(0)
    try:
        host._c.storageVolLookupByPath(path).upload(stream, offset, len(data), 0)
        sent = 0
        while sent < len(data):
            sent += stream.send(bytes(data[sent : sent + 2**20]))
        stream.finish()
    except libvirt.libvirtError as exc:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise host._error(exc, f"writing {len(data)} bytes at {offset} into {path}") from exc
