"""A running VM's disk copied to a new volume of its host while it runs, then switched to:
libvirt's block copy (``virDomainBlockCopy``, a QEMU drive mirror) and its pivot; a stopped
VM's disk cloned into a new volume by the host's storage driver (``virStorageVolCreateXMLFrom``,
qemu-img on the host for file pools).

The copy is a *transient job* (``VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB``: libvirt allows a
block copy of a persistent domain only so); after the pivot the persistent definition is
made to name the new volume when libvirt has not done it itself.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

import libvirt

from vmferry.drivers.domain_edit import with_disk_files
from vmferry.drivers.domain_xml import parse_domain_xml
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import VmferryError

__all__ = [
    "cancel_copy",
    "clone_volume",
    "copy_progress",
    "create_volume",
    "persist_disk_source",
    "start_copy",
    "try_pivot",
    "volume_allocation",
    "volume_names",
]


def create_volume(host: LibvirtHost, pool: str, name: str, capacity: int, fmt: str,
                  backing: str | None = None, *,
                  allocation: int | None = None) -> str:  # fmt: skip
    """A new volume ``name`` of ``capacity`` bytes in ``pool``, empty, or with ``backing``
    (a qcow2 file) an overlay whose reads fall through to it and whose writes stay in it;
    ``allocation``: the bytes to allocate now (0: a sparse raw file); its path."""
    below = ("" if backing is None else f"<backingStore><path>{_text(backing)}</path>"
             "<format type='qcow2'/></backingStore>")  # fmt: skip
    allocated = ("" if allocation is None
                 else f"<allocation unit='bytes'>{allocation}</allocation>")  # fmt: skip
    xml = (f"<volume><name>{_text(name)}</name><capacity unit='bytes'>{capacity}</capacity>"
           f"{allocated}<target><format type={quoteattr(fmt)}/></target>{below}"
           "</volume>")  # fmt: skip
    try:
        found = host._c.storagePoolLookupByName(pool)
        found.refresh(0)
        return str(found.createXML(xml, 0).path())
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"creating volume {name} in pool {pool}") from exc


def clone_volume(host: LibvirtHost, pool: str, name: str, fmt: str, source_path: str) -> str:
    """A new volume ``name`` in ``pool`` (format ``fmt``), a copy of the volume at
    ``source_path`` of the same host made by the host's storage driver; its path. Blocks
    until the copy is done; a copy that fails is removed by libvirt."""
    try:
        found = host._c.storagePoolLookupByName(pool)
        found.refresh(0)
        source = host._c.storageVolLookupByPath(source_path)
        capacity = int(source.info()[1])
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"looking up {source_path} and pool {pool}") from exc
    xml = (f"<volume><name>{_text(name)}</name><capacity unit='bytes'>{capacity}</capacity>"
           f"<target><format type={quoteattr(fmt)}/></target></volume>")  # fmt: skip
    try:
        return str(found.createXMLFrom(xml, source, 0).path())
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"copying {source_path} into pool {pool} as {name}") from exc


def volume_allocation(host: LibvirtHost, path: str) -> int | None:
    """How many bytes the volume at ``path`` takes on its storage; None when there is none."""
    try:
        return int(host._c.storageVolLookupByPath(path).info()[2])
    except libvirt.libvirtError:
        return None


def volume_names(host: LibvirtHost, pool: str) -> tuple[str, ...]:
    """The names of the volumes ``pool`` holds (after a refresh)."""
    try:
        found = host._c.storagePoolLookupByName(pool)
        found.refresh(0)
        return tuple(str(name) for name in found.listVolumes())
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"listing the volumes of pool {pool}") from exc


def start_copy(
    host: LibvirtHost, vm: str, target: str, path: str, fmt: str,
    bandwidth_bytes_s: int | None = None,
) -> None:  # fmt: skip
    """Start mirroring disk ``target`` of running ``vm`` into the volume at ``path``, at
    most ``bandwidth_bytes_s`` (None: as fast as the storage goes)."""
    dest = (f"<disk type='file'><source file={quoteattr(path)}/>"
            f"<driver type={quoteattr(fmt)}/></disk>")  # fmt: skip
    flags = libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
    try:
        params = ({} if bandwidth_bytes_s is None
                  else {libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: bandwidth_bytes_s})  # fmt: skip
        host._lookup(vm).blockCopy(target, dest, params, flags)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"starting the copy of disk {target} of {vm}") from exc


def copy_progress(host: LibvirtHost, vm: str, target: str) -> tuple[int, int] | None:
    """(bytes copied, bytes to copy) of the copy job on ``target``; None without one."""
    try:
        info = host._lookup(vm).blockJobInfo(target, 0)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading the copy job of disk {target} of {vm}") from exc
    if not info:
        return None
    return int(info["cur"]), int(info["end"])


def try_pivot(host: LibvirtHost, vm: str, target: str) -> bool:
    """Switch ``target`` to its copy; False when the mirror is not in sync yet."""
    try:
        host._lookup(vm).blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_BLOCK_COPY_ACTIVE:
            return False  # "not ready for pivot yet"
        raise host._error(exc, f"switching disk {target} of {vm} to its copy") from exc
    return True


def cancel_copy(host: LibvirtHost, vm: str, target: str) -> None:
    """End the copy job on ``target`` without switching: the VM stays on its disk."""
    try:
        host._lookup(vm).blockJobAbort(target, 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return  # no job (any more)
        raise host._error(exc, f"cancelling the copy of disk {target} of {vm}") from exc


def persist_disk_source(host: LibvirtHost, vm: str, target: str, path: str, fmt: str) -> bool:
    """Make the persistent definition's disk ``target`` name the file ``path`` (``fmt``);
    False when it did already (libvirt updates it at the pivot since 6.x)."""
    dom = host._lookup(vm)
    try:
        if not dom.isPersistent():
            return False
        xml = str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading the definition of {vm}") from exc
    current = parse_domain_xml(xml).disks
    disk = next((d for d in current if d.target == target), None)
    if disk is None:
        raise VmferryError(f"the definition of {vm} on {host.name} has no disk {target}")
    if disk.source_kind == "file" and disk.source == path:
        return False
    try:
        host._c.defineXML(with_disk_files(xml, {target: (path, fmt)}))
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"redefining {vm} with disk {target} at {path}") from exc
    return True


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
