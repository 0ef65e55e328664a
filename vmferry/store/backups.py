"""Disk backups taken before moves (`migrate --backup POOL`), oldest first."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from vmferry.model.backup import DiskBackup
from vmferry.store.db import Store
from vmferry.store.tables import DiskBackupRow

__all__ = ["add", "backups", "backups_of_job", "mark_removed"]


def add(store: Store, backup: DiskBackup) -> DiskBackup:
    """Record ``backup`` (its ``id`` and ``created_at`` are the store's); the recorded one."""
    with Session(store.engine) as session, session.begin():
        row = DiskBackupRow(job_id=backup.job_id, vm=backup.vm, host=backup.host,
                            pool=backup.pool, target=backup.target, volume=backup.volume,
                            path=backup.path, format=backup.format,
                            capacity_bytes=backup.capacity_bytes,
                            created_at=datetime.now(UTC))  # fmt: skip
        session.add(row)
        session.flush()
        return _model(row)


def backups(store: Store, *, vm: str | None = None, kept_only: bool = False) -> list[DiskBackup]:
    """Every backup (of ``vm``), oldest first; ``kept_only``: not pruned."""
    query = select(DiskBackupRow).order_by(DiskBackupRow.id)
    if vm is not None:
        query = query.where(DiskBackupRow.vm == vm)
    if kept_only:
        query = query.where(DiskBackupRow.removed_at.is_(None))
    with Session(store.engine) as session:
        return [_model(r) for r in session.scalars(query)]


def backups_of_job(store: Store, job_id: str) -> list[DiskBackup]:
    with Session(store.engine) as session:
        rows = session.scalars(select(DiskBackupRow).where(DiskBackupRow.job_id == job_id)
                               .order_by(DiskBackupRow.id))  # fmt: skip
        return [_model(r) for r in rows]


def mark_removed(store: Store, backup_id: int) -> None:
    with Session(store.engine) as session, session.begin():
        row = session.get(DiskBackupRow, backup_id)
        if row is not None and row.removed_at is None:
            row.removed_at = datetime.now(UTC)


def _iso(at: datetime) -> str:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return at.isoformat(timespec="seconds").replace("+00:00", "Z")


def _model(row: DiskBackupRow) -> DiskBackup:
    return DiskBackup(row.id, row.job_id, row.vm, row.host, row.pool, row.target, row.volume,
                      row.path, row.format, row.capacity_bytes, _iso(row.created_at),
                      None if row.removed_at is None else _iso(row.removed_at))  # fmt: skip
