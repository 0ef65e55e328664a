"""`--backup POOL`: which disks of a running VM are backed up, into which volumes, and whether
the pool can hold them. Pure: from the VM's disks and the pool's free space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.model.vm import Disk, DiskDevice

__all__ = ["BackupPlan", "BackupTarget", "plan_backup"]


@dataclass(frozen=True)
class BackupTarget:
    target: str  # the disk (vda)
    volume: str  # the new qcow2 volume it is backed up into
    capacity_bytes: int
    needed_bytes: int  # what the backup may take: the disk's used part (all when unknown)


@dataclass(frozen=True)
class BackupPlan:
    pool: str
    targets: tuple[BackupTarget, ...]
    skipped: tuple[str, ...]  # disks left out: removable media, read-only, shareable
    refused: str | None = None  # why the move must not start (the pool cannot hold it)

    @property
    def needed_bytes(self) -> int:
        return sum(t.needed_bytes for t in self.targets)


def _backed_up(disk: Disk) -> bool:
    return (
        disk.device in (DiskDevice.DISK, DiskDevice.LUN)
        and disk.source is not None
        and not disk.readonly
        and not disk.shareable
    )


def plan_backup(
    vm: str, job_id: str, disks: Sequence[Disk], pool: str, free_bytes: int
) -> BackupPlan:
    """One qcow2 volume per writable disk of ``vm``, named for the VM, the disk and the job;
    ``refused`` when ``pool`` has less free space than the disks' used parts (a backup that
    would fill the pool up midway)."""
    targets = tuple(_target(vm, job_id, d) for d in disks if _backed_up(d))
    skipped = tuple(d.target for d in disks if not _backed_up(d))
    refused = None
    if not targets:
        refused = f"{vm} has no disk to back up"
    elif any(t.capacity_bytes <= 0 for t in targets):
        unknown = ", ".join(t.target for t in targets if t.capacity_bytes <= 0)
        refused = f"the size of disk {unknown} of {vm} is unknown; it cannot be backed up"
    else:
        needed = sum(t.needed_bytes for t in targets)
        if needed > free_bytes:
            refused = (f"pool {pool} has {_mib(free_bytes)} free and the backup of {vm} needs "
                       f"{_mib(needed)}: the move does not start")  # fmt: skip
    return BackupPlan(pool, targets, skipped, refused)


def _target(vm: str, job_id: str, disk: Disk) -> BackupTarget:
    capacity = disk.capacity_bytes or 0
    used = disk.allocation_bytes if disk.allocation_bytes is not None else capacity
    return BackupTarget(disk.target, f"{vm}-{disk.target}-backup-{job_id}.qcow2", capacity, used)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
