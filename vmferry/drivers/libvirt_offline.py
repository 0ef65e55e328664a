"""The libvirt calls of a warm or cold move: save and restore a domain's state, shut it
down, find and prove a directory both hosts share, copy a volume between hosts.

Works on :class:`~vmferry.drivers.libvirt_host.LibvirtHost` connections; no libvirt object
leaves this module, and ``libvirtError`` becomes a :mod:`vmferry.errors` exception.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
import libvirt

from vmferry.drivers import qemu_img
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import NotFoundError, VmferryError

__all__ = [
    "abort_job",
    "copy_volume",
    "define_xml_of",
    "delete_volume",
    "pool_directories",
    "prove_shared_directory",
    "restore",
    "restore_xml_of",
    "save",
    "shutdown",
    "volume_capacity",
    "volume_exists",
]

_CHUNK = 1 << 20


def restore_xml_of(host: LibvirtHost, name: str) -> str:
    """The running domain's XML as the destination's restore should use it."""
    dom = host._lookup(name)
    try:
        return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_MIGRATABLE))
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading the XML of VM {name!r}") from exc


def define_xml_of(host: LibvirtHost, name: str) -> str:
    """The persistent definition of ``name`` (its inactive XML), to define elsewhere."""
    dom = host._lookup(name)
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    try:
        return str(dom.XMLDesc(flags | libvirt.VIR_DOMAIN_XML_MIGRATABLE))
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading the definition of VM {name!r}") from exc


def save(host: LibvirtHost, name: str, path: str) -> None:
    """Save the running VM's memory and device state to ``path`` (blocks; the VM stops).

    If the save fails or is aborted, libvirt leaves the VM running."""
    dom = host._lookup(name)
    try:
        dom.saveFlags(path, None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"saving VM {name!r} to {path}") from exc


def restore(host: LibvirtHost, path: str, xml: str | None) -> None:
    """Start a VM from the state saved at ``path``, running, with ``xml`` if given."""
    try:
        host._c.restoreFlags(path, xml, libvirt.VIR_DOMAIN_SAVE_RUNNING)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"restoring the VM saved at {path}") from exc


def abort_job(host: LibvirtHost, name: str) -> None:
    """Abort the job libvirt runs on ``name`` (a save); no job is not an error."""
    try:
        host._lookup(name).abortJob()
    except (libvirt.libvirtError, NotFoundError):
        return


def shutdown(host: LibvirtHost, name: str) -> None:
    """Press the VM's ACPI power button; the guest decides whether to power off."""
    dom = host._lookup(name)
    try:
        dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"shutting VM {name!r} down") from exc


def pool_directories(host: LibvirtHost) -> dict[str, str]:
    """Target directory of every active directory-like pool, by pool name."""
    found: dict[str, str] = {}
    try:
        for pool in host._c.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            root = SafeET.fromstring(pool.XMLDesc(0))
            path = root.findtext("target/path")
            if root.get("type") in ("dir", "fs", "netfs") and path:
                found[str(pool.name())] = path.rstrip("/") or "/"
    except libvirt.libvirtError as exc:
        raise host._error(exc, "listing storage pools") from exc
    return found


def prove_shared_directory(src: LibvirtHost, dst: LibvirtHost, directory: str) -> str | None:
    """``None`` if ``directory`` is one both hosts see, else why not.

    As pre-flight proves a shared disk: a probe volume made in the source's pool at that
    directory must be found by its path on the destination (after a pool refresh), with
    the same size. The probe is removed again."""
    directory = directory.rstrip("/") or "/"
    src_pool = _pool_at(src, directory)
    dst_pool = _pool_at(dst, directory)
    if src_pool is None or dst_pool is None:
        who = src.name if src_pool is None else dst.name
        return f"{who} has no active storage pool at {directory}"
    name = f"vmferry-probe-{uuid.uuid4().hex}.img"
    xml = (f"<volume><name>{name}</name><capacity unit='bytes'>65536</capacity>"
           "<target><format type='raw'/></target></volume>")  # fmt: skip
    try:
        vol = src._c.storagePoolLookupByName(src_pool).createXML(xml, 0)
    except libvirt.libvirtError as exc:
        raise src._error(exc, f"making a probe volume in pool {src_pool!r}") from exc
    try:
        path = str(vol.path())
        dst.refresh_pool(dst_pool)
        try:
            size = int(dst._c.storageVolLookupByPath(path).info()[1])
        except libvirt.libvirtError:
            return f"{dst.name} does not see {path}, made in {directory} on {src.name}"
        return None if size == 65536 else f"{dst.name} has a different file at {path}"
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            vol.delete(0)
        for host, pool in ((src, src_pool), (dst, dst_pool)):
            try:
                host.refresh_pool(pool)
            except VmferryError:
                continue


def volume_capacity(host: LibvirtHost, path: str) -> int:
    """The capacity in bytes of the volume at ``path`` (what its guest sees)."""
    try:
        return int(host._c.storageVolLookupByPath(path).info()[1])
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"looking up {path}") from exc


def volume_exists(host: LibvirtHost, path: str) -> bool:
    """Whether the host's pool that holds ``path`` has a file there (after a refresh)."""
    pool = _pool_at(host, os.path.dirname(path))
    try:
        if pool is not None:
            host._c.storagePoolLookupByName(pool).refresh(0)
        host._c.storageVolLookupByPath(path)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise host._error(exc, f"looking for {path}") from exc
    return True


def delete_volume(host: LibvirtHost, path: str) -> None:
    """Remove the file at ``path`` through the host's pool that holds it; absent is fine."""
    pool = _pool_at(host, os.path.dirname(path))
    try:
        if pool is not None:
            host._c.storagePoolLookupByName(pool).refresh(0)
        host._c.storageVolLookupByPath(path).delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return
        raise host._error(exc, f"removing {path}") from exc
    finally:
        if pool is not None:
            with contextlib.suppress(VmferryError):
                host.refresh_pool(pool)


def copy_volume(
    src: LibvirtHost,
    dst: LibvirtHost,
    path: str,
    disk_format: str,
    dst_pool: str,
    *,
    on_progress: Callable[[float], None] | None = None,
) -> str:
    """Copy the volume at ``path`` on ``src`` into ``dst_pool`` on ``dst`` (same file name);
    return its path there.

    The volume comes here through libvirt's download stream, qemu-img rewrites it in its
    stated format (sparse: zeroes are not sent), and it goes to the destination through an
    upload stream. A copy that fails half way is removed."""
    volume_name = os.path.basename(path)
    size = volume_capacity(src, path)
    with tempfile.TemporaryDirectory(prefix="vmferry-copy-") as work:
        fetched, clean = Path(work) / "fetched", Path(work) / "clean"
        _download(src, path, fetched)
        qemu_img.convert(fetched, disk_format, clean, target_format=disk_format,
                         on_progress=on_progress)  # fmt: skip
        fetched.unlink()
        fmt = escape(disk_format)
        xml = (f"<volume><name>{escape(volume_name)}</name><capacity unit='bytes'>{size}"
               f"</capacity><target><format type='{fmt}'/></target></volume>")  # fmt: skip
        try:
            pool = dst._c.storagePoolLookupByName(dst_pool)
            vol = pool.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise dst._error(exc, f"making volume {volume_name} in pool {dst_pool!r}") from exc
        try:
            _upload(dst, vol, clean)
            return str(vol.path())
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
            raise


def _pool_at(host: LibvirtHost, directory: str) -> str | None:
    directory = directory.rstrip("/") or "/"
    return next((n for n, p in sorted(pool_directories(host).items()) if p == directory), None)


def _download(host: LibvirtHost, path: str, target: Path) -> None:
    stream: Any = None
    try:
        vol = host._c.storageVolLookupByPath(path)
        stream = host._c.newStream(0)
        vol.download(stream, 0, 0, 0)
        with target.open("wb") as out:
            while True:
                chunk = stream.recv(_CHUNK)
                if chunk in (-2, None) or len(chunk) == 0:
                    break
                out.write(chunk)
        stream.finish()
    except libvirt.libvirtError as exc:
        if stream is not None:
            _abort_stream(stream)
        raise host._error(exc, f"downloading {path}") from exc


def _upload(host: LibvirtHost, vol: Any, source: Path) -> None:
    stream = host._c.newStream(0)
    try:
        vol.upload(stream, 0, 0, 0)
        with source.open("rb") as data:
            while chunk := data.read(_CHUNK):
                sent = 0
                while sent < len(chunk):
                    sent += stream.send(chunk[sent:])
        stream.finish()
    except libvirt.libvirtError as exc:
        _abort_stream(stream)
        raise host._error(exc, f"uploading to {vol.path()}") from exc


def _abort_stream(stream: Any) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        return
