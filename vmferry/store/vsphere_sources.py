"""The vSphere sources (`vmferry sources add|list|remove`), by name. Sources are checked by
the caller (:mod:`vmferry.service.vsphere_sources`) before they reach the store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vmferry.errors import AlreadyExistsError, NotFoundError
from vmferry.model.vsphere import VsphereSource
from vmferry.store.db import Store
from vmferry.store.tables import VsphereSourceRow

__all__ = ["add_source", "check_name_free", "get_source", "list_sources", "remove_source"]


def add_source(store: Store, source: VsphereSource) -> None:
    """Store ``source``; :class:`AlreadyExistsError` when one has its name."""
    try:
        with Session(store.engine) as session, session.begin():
            if session.get(VsphereSourceRow, source.name) is not None:
                raise _exists(source.name)
            session.add(VsphereSourceRow(name=source.name, host=source.host, port=source.port,
                                         user=source.user, datacenter=source.datacenter,
                                         ca_file=source.ca_file, insecure=source.insecure,
                                         added_at=datetime.now(UTC)))  # fmt: skip
    except IntegrityError as exc:  # added by someone else between our read and insert
        raise _exists(source.name, exc) from exc


def check_name_free(store: Store, name: str) -> None:
    """:class:`AlreadyExistsError` when a source is named ``name``."""
    with Session(store.engine) as session:
        if session.get(VsphereSourceRow, name) is not None:
            raise _exists(name)


def get_source(store: Store, name: str) -> VsphereSource:
    """The source ``name``; :class:`NotFoundError` naming `sources list`."""
    with Session(store.engine) as session:
        row = session.get(VsphereSourceRow, name)
        if row is None:
            raise NotFoundError(f"no source named {name!r}; `vmferry sources list` lists them")
        return _source(row)


def list_sources(store: Store) -> list[VsphereSource]:
    """Every source, by name."""
    with Session(store.engine) as session:
        rows = session.scalars(select(VsphereSourceRow).order_by(VsphereSourceRow.name))
        return [_source(row) for row in rows]


def remove_source(store: Store, name: str) -> None:
    """Forget the source ``name``; :class:`NotFoundError` when there is none."""
    with Session(store.engine) as session, session.begin():
        gone = session.execute(delete(VsphereSourceRow).where(VsphereSourceRow.name == name))
        if gone.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError(f"no source named {name!r}; `vmferry sources list` lists them")


def _source(row: VsphereSourceRow) -> VsphereSource:
    return VsphereSource(name=row.name, host=row.host, port=row.port, user=row.user,
                         datacenter=row.datacenter, ca_file=row.ca_file,
                         insecure=bool(row.insecure))  # fmt: skip


def _exists(name: str, cause: BaseException | None = None) -> AlreadyExistsError:
    return AlreadyExistsError(f"a source named {name!r} exists already; `vmferry sources "
                              f"remove {name}` removes it", cause=cause)  # fmt: skip
