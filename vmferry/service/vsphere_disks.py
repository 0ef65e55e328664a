"""A vSphere VM's disk read from its datastore into the pool, proved as a file import's.

The datastore URL (``/folder/...?dcPath=&dsName=``) is read with the session's cookie and
the certificate check the source asks for, through :class:`RangeReader` (``connections``
range requests at once, retried). The file's first bytes decide
(:func:`vmferry.sources.vsphere_disk.remote_vmdk`):

- ESXi's descriptor + ``-flat.vmdk``: the flat extent is raw; it is read once from the
  datastore, digested and written sparse into the pool (``verified_copy.copy_reader``);
- a single sparse file (monolithicSparse, streamOptimized): fetched whole into the private
  directory, its headers checked like a file import's, then copied like a file import's
  disk (read in place where QEMU's VMDK driver maps its grains, through qemu-nbd where they
  are compressed), digested as it is read.

Either way the caller reads the copy back where QEMU maps it and compares the digests.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from vmferry.drivers import qemu_img, verified_copy
from vmferry.drivers.datastore_http import DatastoreFile, RangeReader, download_to
from vmferry.drivers.pacing import ByteRate
from vmferry.errors import BadInputError
from vmferry.model.vsphere import VsphereSource
from vmferry.sources import Limits, inspect_image
from vmferry.sources.vsphere_disk import HEAD_BYTES, MAX_DESCRIPTOR_BYTES, RemoteVmdk, remote_vmdk
from vmferry.sources.vsphere_vm import DatastorePath, datastore_url, parse_datastore_path

__all__ = ["DatastoreAccess", "copy_datastore_disk", "flat_extent"]

RANGE_BYTES = 4 * 2**20  # one range request


class DatastoreAccess:
    """How to reach a VM's datastore files: the source's address, the VM's datacenter, the
    session cookie, the TLS context, the connections per disk, the import's read cap
    (``bandwidth_mib_s``, every reader together; 0: none); ``readers`` keeps every reader
    opened (their request and retry counts, for tests and notes)."""

    def __init__(self, source: VsphereSource, datacenter: str, cookie: str,
                 context: ssl.SSLContext, connections: int,
                 bandwidth_mib_s: int = 0) -> None:  # fmt: skip
        self.source = source
        self.datacenter = datacenter
        self.cookie = cookie
        self.context = context
        self.connections = connections
        self.bandwidth_mib_s = bandwidth_mib_s
        self.rate = ByteRate(bandwidth_mib_s * 2**20) if bandwidth_mib_s > 0 else None
        self.readers: list[RangeReader] = []

    def open(self, path: DatastorePath) -> RangeReader:
        url = datastore_url(self.source.host, self.source.port, path, self.datacenter)
        reader = RangeReader(DatastoreFile(url, self.cookie, self.context, str(path)),
                             connections=self.connections, rate=self.rate)  # fmt: skip
        self.readers.append(reader)
        return reader


def flat_extent(access: DatastoreAccess, datastore_path: str) -> DatastorePath:
    """The raw extent of ESXi's disk ``datastore_path`` (a descriptor and its
    ``-flat.vmdk``): what a warm import reads while the VM runs. A single sparse file is
    refused (its grains move as it changes: only a cold import reads it)."""
    path = parse_datastore_path(datastore_path)
    with access.open(path) as reader:
        layout = _layout(reader, path)
    if layout.kind == "sparse" or layout.extent is None:
        raise BadInputError(f"{path} is a single sparse VMDK: a warm import reads ESXi's flat "
                            "disks (a descriptor and its -flat.vmdk); import it cold")  # fmt: skip
    return path.sibling(layout.extent)


def _layout(reader: RangeReader, path: DatastorePath) -> RemoteVmdk:
    head = bytearray(min(reader.size, MAX_DESCRIPTOR_BYTES, max(HEAD_BYTES, reader.size)))
    if len(head) < HEAD_BYTES:
        raise BadInputError(f"{path}: {reader.size} bytes is too small for a VMDK")
    reader.read(0, memoryview(head))
    return remote_vmdk(str(path), bytes(head), reader.size)


def copy_datastore_disk(
    access: DatastoreAccess,
    datastore_path: str,
    part: Path,
    *,
    workdir: Path,
    limits: Limits,
    tool_limits: qemu_img.ToolLimits,
    on_progress: Callable[[float], None] | None = None,
) -> verified_copy.CopyResult:
    """Copy the disk at ``datastore_path`` into the new qcow2 ``part`` (see the module)."""
    path = parse_datastore_path(datastore_path)
    with access.open(path) as reader:
        layout = _layout(reader, path)
        if layout.kind == "sparse":
            staged = workdir / f"{part.name}.vmdk"
            download_to(reader, staged, chunk=RANGE_BYTES)
            reader.close()
            try:
                data_file = inspect_image(staged, limits).data_file
                return verified_copy.copy_with_digest(
                    staged, "vmdk", part, limits=tool_limits, on_progress=on_progress,
                    data_file=None if data_file is None else Path(data_file),
                )  # fmt: skip
            finally:
                staged.unlink(missing_ok=True)
    assert layout.extent is not None
    extent = path.sibling(layout.extent)
    with access.open(extent) as flat:
        if flat.size < layout.capacity_bytes:
            raise BadInputError(f"{extent} holds {flat.size} bytes; its descriptor "
                                f"declares {layout.capacity_bytes}")  # fmt: skip
        flat.size = layout.capacity_bytes
        return verified_copy.copy_reader(
            flat, part, timeout_s=tool_limits.timeout_s, on_progress=on_progress,
            read_size=RANGE_BYTES, depth=2 * access.connections,
        )  # fmt: skip
