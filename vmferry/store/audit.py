"""The audit trail: rows are only ever added. The database itself refuses UPDATE and DELETE
on them (the triggers of migration 0010), whatever connects to it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from vmferry.model.account import AuditEntry
from vmferry.model.jsonable import to_jsonable
from vmferry.store.db import Store
from vmferry.store.tables import AuditRow

__all__ = ["append", "entries"]


def append(store: Store, entry: AuditEntry) -> AuditEntry:
    """Add ``entry`` (its ``at`` is an ISO 8601 time); the entry with its id."""
    row = AuditRow(at=_parse(entry.at), user=entry.user, remote=entry.remote[:255],
                   action=entry.action[:64], target=None if entry.target is None
                   else entry.target[:255], result=entry.result,
                   detail=to_jsonable(dict(entry.detail)))  # fmt: skip
    with Session(store.engine) as session, session.begin():
        session.add(row)
        session.flush()
        return _entry(row)


def entries(
    store: Store, *, since: datetime | None = None, user: str | None = None, limit: int = 1000
) -> list[AuditEntry]:
    """The ``limit`` newest entries at or after ``since`` (of ``user`` only, if given),
    oldest first."""
    query = select(AuditRow)
    if since is not None:
        query = query.where(AuditRow.at >= since)
    if user is not None:
        query = query.where(AuditRow.user == user)
    with Session(store.engine) as session:
        rows = list(session.scalars(query.order_by(AuditRow.at.desc(), AuditRow.id.desc())
                                    .limit(limit)))  # fmt: skip
        return [_entry(row) for row in reversed(rows)]


def _parse(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(at=_iso(row.at), user=row.user, remote=row.remote, action=row.action,
                      target=row.target, result=row.result, detail=dict(row.detail),
                      id=row.id)  # fmt: skip
