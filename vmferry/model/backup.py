"""A disk backup vmferry took before a move (``--backup POOL``): one volume per disk, in a
pool of the host the VM ran on, recorded with the job that took it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiskBackup:
    id: int
    job_id: str
    vm: str
    host: str  # where the backup volume lives (the VM's host when it was taken)
    pool: str
    target: str  # the disk's target (vda)
    volume: str  # the backup volume's name in ``pool``
    path: str  # the backup volume's path on ``host``
    format: str  # qcow2
    capacity_bytes: int
    created_at: str  # ISO 8601 UTC
    removed_at: str | None = None  # pruned (the volume deleted); None: kept
