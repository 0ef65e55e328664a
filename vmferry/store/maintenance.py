"""Hosts in maintenance (`vmferry host maintenance`), by host name; no row: in service."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vmferry.model.maintenance import HostMaintenance, MaintenanceState
from vmferry.store.db import Store
from vmferry.store.tables import HostMaintenanceRow

__all__ = ["clear", "maintenance_of", "set_state", "states"]


def set_state(store: Store, host: str, state: MaintenanceState, note: str | None = None) -> None:
    """Put ``host`` in ``state`` (keeping when it began, if it was in maintenance already)."""
    with Session(store.engine) as session, session.begin():
        row = session.get(HostMaintenanceRow, host)
        if row is None:
            session.add(HostMaintenanceRow(host=host, state=state.value,
                                           since=datetime.now(UTC), note=note))  # fmt: skip
        else:
            row.state, row.note = state.value, note


def clear(store: Store, host: str) -> bool:
    """Take ``host`` out of maintenance; False when it was not in it."""
    with Session(store.engine) as session, session.begin():
        gone = session.execute(delete(HostMaintenanceRow).where(HostMaintenanceRow.host == host))
        return bool(gone.rowcount)  # type: ignore[attr-defined]


def states(store: Store) -> dict[str, HostMaintenance]:
    """Every host in maintenance, by name."""
    with Session(store.engine) as session:
        rows = session.scalars(select(HostMaintenanceRow).order_by(HostMaintenanceRow.host))
        return {r.host: _model(r) for r in rows}


def maintenance_of(store: Store, host: str) -> HostMaintenance | None:
    with Session(store.engine) as session:
        row = session.get(HostMaintenanceRow, host)
        return None if row is None else _model(row)


def _model(row: HostMaintenanceRow) -> HostMaintenance:
    since = row.since if row.since.tzinfo else row.since.replace(tzinfo=UTC)
    at = since.isoformat(timespec="seconds").replace("+00:00", "Z")
    return HostMaintenance(row.host, MaintenanceState(row.state), at, row.note)
