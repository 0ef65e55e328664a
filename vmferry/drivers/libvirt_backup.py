"""A running VM's disks backed up while it runs: libvirt's backup API in push mode
(``virDomainBackupBegin``), each disk written into a volume vmferry created beforehand in a
pool of the VM's host (``REUSE_EXTERNAL``), so that everything, the free space, the copy and
its removal, goes through libvirt and works on a remote host.

The backup is a point-in-time copy: QEMU copies each block before the guest overwrites it
(``blockdev-backup`` with ``sync=full``), the guest runs on meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import libvirt

from vmferry.drivers.libvirt_host import LibvirtHost

__all__ = ["BackupState", "abort_backup", "backup_state", "begin_backup", "pool_free_bytes"]


@dataclass(frozen=True)
class BackupState:
    running: bool
    processed_bytes: int
    total_bytes: int
    error: str | None = None  # it ended and failed (libvirt's message)


def pool_free_bytes(host: LibvirtHost, pool: str) -> int:
    """What ``pool`` can still hold (after a refresh)."""
    try:
        found = host._c.storagePoolLookupByName(pool)
        found.refresh(0)
        return int(found.info()[3])
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading pool {pool}") from exc


def backup_xml(targets: dict[str, str]) -> str:
    """The push-mode backup of the disks ``targets`` (disk target -> existing qcow2 file);
    every other disk of the VM is left out."""
    disks = "".join(
        f"<disk name={quoteattr(t)} backup='yes' type='file'><target file={quoteattr(p)}/>"
        "<driver type='qcow2'/></disk>"
        for t, p in targets.items()
    )
    return f"<domainbackup mode='push'><disks>{disks}</disks></domainbackup>"


def begin_backup(host: LibvirtHost, vm: str, targets: dict[str, str], others: list[str]) -> None:
    """Start backing up the disks ``targets`` of running ``vm`` (``others``: its disks left
    out, named so that libvirt does not back them up as well)."""
    excluded = "".join(f"<disk name={quoteattr(t)} backup='no'/>" for t in others)
    xml = backup_xml(targets).replace("</disks>", excluded + "</disks>")
    try:
        host._lookup(vm).backupBegin(xml, None, libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"starting the backup of {vm}") from exc


def backup_state(host: LibvirtHost, vm: str) -> BackupState:
    """Where the backup of ``vm`` is: running (bytes done of all), or ended (its error)."""
    dom = host._lookup(vm)
    try:
        stats = dom.jobStats(0)
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) != libvirt.VIR_DOMAIN_JOB_NONE:
            return BackupState(True, int(stats.get("disk_processed", 0)),
                               int(stats.get("disk_total", 0)))  # fmt: skip
        done = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError as exc:
        raise host._error(exc, f"reading the backup job of {vm}") from exc
    if done.get("operation") != libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP:
        return BackupState(False, 0, 0, "libvirt kept no record of the backup's end")
    total = int(done.get("disk_total", 0))
    if done.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED:
        return BackupState(False, int(done.get("disk_processed", total)), total)
    return BackupState(False, int(done.get("disk_processed", 0)), total,
                       str(done.get("errmsg") or "the backup failed"))  # fmt: skip


def abort_backup(host: LibvirtHost, vm: str) -> None:
    """Stop the running backup of ``vm`` (none running: nothing to do)."""
    try:
        host._lookup(vm).abortJob()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return
        raise host._error(exc, f"stopping the backup of {vm}") from exc
