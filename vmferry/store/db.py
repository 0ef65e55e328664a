"""Open the vmferry database (migrating it to the current schema); read and write hosts and
migration jobs."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from platformdirs import user_data_dir
from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from vmferry.errors import AlreadyExistsError, BadInputError, NotFoundError, VmferryError
from vmferry.model import Host
from vmferry.model.job_state import IllegalTransitionError, transition
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import Job, JobEvent, JobStatus, MigrationOptions, MigrationResult
from vmferry.store.codec import DecodeError, from_jsonable
from vmferry.store.tables import HostRow, JobEventRow, JobRow

__all__ = [
    "DB_ENV_VAR",
    "MIGRATIONS_DIR",
    "Store",
    "alembic_config",
    "default_db_url",
    "open_store",
]

DB_ENV_VAR = "VMFERRY_DB"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def default_db_url() -> str:
    """``$VMFERRY_DB`` (any SQLAlchemy URL), else SQLite in the user's data directory.

    The data directory (``~/.local/share/vmferry`` on Linux) is created when missing.
    """
    from_env = os.environ.get(DB_ENV_VAR, "").strip()
    if from_env:
        return from_env
    data_dir = Path(user_data_dir("vmferry"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'vmferry.db'}"


def alembic_config() -> Config:
    """Alembic configuration for the migrations shipped inside the package (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def open_store(url: str | None = None) -> Store:
    """Open the database at ``url`` (default: :func:`default_db_url`), migrated to head.

    Migrating is idempotent and costs one query when the schema is already current.
    """
    url = url or default_db_url()
    shown = _safe_url(url)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ValueError) as exc:
        raise BadInputError(
            f"{shown!r} is not a database URL vmferry can use ({exc}); set {DB_ENV_VAR} to a "
            "SQLAlchemy URL such as sqlite:////var/lib/vmferry/vmferry.db or "
            "postgresql+psycopg://user@host/vmferry",
            cause=exc,
        ) from exc
    except ImportError as exc:
        raise BadInputError(
            f"the database driver for {shown!r} is not installed ({exc}); for PostgreSQL "
            "install psycopg (pip install 'psycopg[binary]')",
            cause=exc,
        ) from exc
    try:
        _upgrade_to_head(engine)
    except CommandError as exc:
        engine.dispose()
        raise VmferryError(
            f"the vmferry database at {shown} has a schema this vmferry does not know ({exc}); "
            "it was probably written by a newer vmferry: upgrade vmferry or point "
            f"{DB_ENV_VAR} at another database",
            cause=exc,
        ) from exc
    except SQLAlchemyError as exc:
        engine.dispose()
        raise VmferryError(
            f"cannot open or migrate the vmferry database at {shown}: {exc.__class__.__name__}: "
            f"{getattr(exc, 'orig', None) or exc}; check that it is reachable and writable "
            f"(set {DB_ENV_VAR} to use another database)",
            cause=exc,
        ) from exc
    return Store(engine)


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url


def _upgrade_to_head(engine: Engine) -> None:
    config = alembic_config()
    heads = set(ScriptDirectory.from_config(config).get_heads())
    with engine.begin() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
        if current == heads:
            return
        # env.py runs the migrations on this connection instead of opening its own.
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Store:
    """Reads and writes vmferry's database; speaks only :mod:`vmferry.model` types."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- hosts --------------------------------------------------------------------------

    def add_host(self, host: Host) -> None:
        """Register ``host``; :class:`AlreadyExistsError` if the name is taken."""
        try:
            with self._sessions.begin() as session:
                existing = session.get(HostRow, host.name)
                if existing is not None:
                    raise _duplicate(existing.to_model())
                session.add(HostRow.from_model(host))
        except IntegrityError as exc:  # added by someone else between our check and insert
            raise _duplicate(host, cause=exc) from exc

    def get_host(self, name: str) -> Host:
        """The host registered as ``name``; :class:`NotFoundError` if there is none."""
        with self._sessions() as session:
            return _require(session, name).to_model()

    def list_hosts(self) -> list[Host]:
        """Every registered host, sorted by name."""
        with self._sessions() as session:
            rows = session.scalars(select(HostRow).order_by(HostRow.name))
            return [row.to_model() for row in rows]

    def remove_host(self, name: str) -> None:
        """Forget the host registered as ``name``; :class:`NotFoundError` if there is none."""
        with self._sessions.begin() as session:
            session.delete(_require(session, name))

    def replace_host(self, host: Host) -> None:
        """Register ``host``, or update the host of that name (keeping when it was added)."""
        for attempt in range(2):
            try:
                with self._sessions.begin() as session:
                    row = session.get(HostRow, host.name, with_for_update=True)
                    if row is None:
                        session.add(HostRow.from_model(host))
                    else:
                        row.uri = host.uri
                        row.migration_uri = host.migration_uri
                return
            except IntegrityError:
                if attempt:  # pragma: no cover - would need a third concurrent writer
                    raise
                # another writer inserted the same name between our read and insert:
                # the second attempt finds the row and updates it

    # -- jobs ---------------------------------------------------------------------------
    #
    # Every status change goes through vmferry.engine.job_state.transition and appends a
    # `status` event in the same transaction. Lists come back without their events
    # (get_job has them).

    def create_job(
        self,
        kind: str,
        vm: str,
        source: str,
        destination: str,
        options: MigrationOptions,
        *,
        owner_pid: int | None = None,
        owner_start_ticks: int | None = None,
    ) -> Job:
        """A new ``pending`` job with a fresh 12-hex-digit id and a ``created`` event."""
        for attempt in range(3):
            job_id = secrets.token_hex(6)
            now = _now()
            try:
                with self._sessions.begin() as session:
                    session.add(
                        JobRow(
                            id=job_id,
                            kind=kind,
                            vm=vm,
                            source=source,
                            destination=destination,
                            status=JobStatus.PENDING.value,
                            reason=None,
                            options=to_jsonable(options),
                            result=None,
                            owner_pid=owner_pid,
                            owner_start_ticks=owner_start_ticks,
                            cancel_requested=False,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    session.flush()  # the id collides (IntegrityError) here, not later
                    session.add(
                        _event_row(
                            job_id,
                            now,
                            "created",
                            f"{kind} {vm}: {source} -> {destination}",
                            {"options": to_jsonable(options)},
                        )
                    )
                break
            except IntegrityError:
                if attempt == 2:  # pragma: no cover - three random 48-bit collisions
                    raise
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> Job:
        """The job with its events (oldest first); :class:`NotFoundError` if there is none."""
        with self._sessions() as session:
            row = _require_job(session, job_id)
            events = session.scalars(
                select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(JobEventRow.id)
            )
            return _job(row, tuple(_event(e) for e in events))

    def list_jobs(self, limit: int = 50) -> list[Job]:
        """The ``limit`` newest jobs, newest first, without their events."""
        if limit < 1:
            raise BadInputError(f"the job list limit must be at least 1 (got {limit})")
        with self._sessions() as session:
            rows = session.scalars(
                select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
            )
            return [_job(row) for row in rows]

    def unfinished_jobs(self, vm: str | None = None) -> list[Job]:
        """Pending and running jobs (of VM ``vm`` only, if given), oldest first, without
        their events."""
        unfinished = [s.value for s in JobStatus if not s.finished]
        query = select(JobRow).where(JobRow.status.in_(unfinished))
        if vm is not None:
            query = query.where(JobRow.vm == vm)
        with self._sessions() as session:
            rows = session.scalars(query.order_by(JobRow.created_at, JobRow.id))
            return [_job(row) for row in rows]

    def set_owner(self, job_id: str, pid: int, start_ticks: int | None) -> None:
        """Record the process driving the job (pid and start time, see
        :func:`vmferry.lab.processes.start_ticks`), so others can tell whether it lives."""
        with self._sessions.begin() as session:
            row = _require_job(session, job_id, lock=True)
            row.owner_pid = pid
            row.owner_start_ticks = start_ticks
            row.updated_at = _now()

    def set_status(self, job_id: str, status: JobStatus, reason: str | None = None) -> Job:
        """Move the job to ``status`` (see :func:`vmferry.engine.job_state.transition`),
        recording ``reason`` when given and a ``status`` event.

        Setting a finished job to the status it has changes nothing; any other change the
        state machine forbids raises :class:`VmferryError`.
        """
        with self._sessions.begin() as session:
            row = _require_job(session, job_id, lock=True)
            current = JobStatus(row.status)
            new = _transition(current, status)
            if new != current:
                if reason is not None:
                    row.reason = reason
                _change_status(session, row, current, new, reason)
        return self.get_job(job_id)

    def finish(self, job_id: str, result: MigrationResult) -> Job:
        """Finish the job as ``result.status``, storing ``result`` and its reason.

        Finishing a job again with the status it already has changes nothing (the first
        result stays).
        """
        if not result.status.finished:
            raise VmferryError(
                f"job {job_id}: a result must carry a finished status, not {result.status}"
            )
        if result.job_id != job_id:
            raise VmferryError(f"job {job_id}: the result belongs to job {result.job_id}")
        with self._sessions.begin() as session:
            row = _require_job(session, job_id, lock=True)
            current = JobStatus(row.status)
            new = _transition(current, result.status)
            if new != current:
                row.result = to_jsonable(result)
                row.reason = result.reason
                _change_status(session, row, current, new, result.reason)
        return self.get_job(job_id)

    def add_event(
        self,
        job_id: str,
        kind: str,
        message: str,
        data: Mapping[str, object] | None = None,
    ) -> JobEvent:
        """Append an event to the job's history (``data`` must be JSON-ready after
        :func:`~vmferry.model.jsonable.to_jsonable`)."""
        now = _now()
        row = _event_row(job_id, now, kind, message, data or {})
        with self._sessions.begin() as session:
            touched = session.execute(
                update(JobRow).where(JobRow.id == job_id).values(updated_at=now)
            )
            if touched.rowcount != 1:  # type: ignore[attr-defined]
                raise _no_job(job_id)
            session.add(row)
        return _event(row)

    def is_cancel_requested(self, job_id: str) -> bool:
        """Whether someone asked to cancel the job (one indexed single-column read)."""
        with self._engine.connect() as connection:
            value = connection.execute(
                select(JobRow.cancel_requested).where(JobRow.id == job_id)
            ).scalar_one_or_none()
        if value is None:
            raise _no_job(job_id)
        return bool(value)

    def request_cancel(self, job_id: str) -> Job:
        """Ask the job's owner to cancel it (it polls :meth:`is_cancel_requested`).

        Changes nothing when the job has finished or cancelling was already asked for.
        """
        with self._sessions.begin() as session:
            row = _require_job(session, job_id, lock=True)
            if not row.cancel_requested and not JobStatus(row.status).finished:
                now = _now()
                row.cancel_requested = True
                row.updated_at = now
                session.add(
                    _event_row(job_id, now, "note", "cancel requested", {"cancel_requested": True})
                )
        return self.get_job(job_id)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z (SQLite gives back naive datetimes; they are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event_row(
    job_id: str, at: datetime, kind: str, message: str, data: Mapping[str, object]
) -> JobEventRow:
    return JobEventRow(
        job_id=job_id, at=at, kind=kind, message=message, data=to_jsonable(dict(data))
    )


def _event(row: JobEventRow) -> JobEvent:
    return JobEvent(at=_iso(row.at), kind=row.kind, message=row.message, data=dict(row.data))


def _change_status(
    session: Session, row: JobRow, current: JobStatus, new: JobStatus, reason: str | None
) -> None:
    now = _now()
    row.status = new.value
    row.updated_at = now
    message = f"{current} -> {new}" + (f": {reason}" if reason else "")
    data = {"from": current.value, "to": new.value, "reason": reason}
    session.add(_event_row(row.id, now, "status", message, data))


def _job(row: JobRow, events: tuple[JobEvent, ...] = ()) -> Job:
    try:
        options = from_jsonable(MigrationOptions, row.options)
        result = None if row.result is None else from_jsonable(MigrationResult, row.result)
        status = JobStatus(row.status)
    except (DecodeError, ValueError) as exc:
        raise VmferryError(
            f"job {row.id} in the database cannot be read by this vmferry ({exc}); it was "
            "probably written by a newer vmferry: upgrade vmferry",
            cause=exc,
        ) from exc
    return Job(
        id=row.id,
        kind=row.kind,
        vm=row.vm,
        source=row.source,
        destination=row.destination,
        status=status,
        created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at),
        options=options,
        reason=row.reason,
        result=result,
        owner_pid=row.owner_pid,
        owner_start_ticks=row.owner_start_ticks,
        cancel_requested=bool(row.cancel_requested),
        events=events,
    )


def _no_job(job_id: str) -> NotFoundError:
    return NotFoundError(f"no job {job_id!r}; `vmferry jobs` lists the jobs")


def _require_job(session: Session, job_id: str, *, lock: bool = False) -> JobRow:
    row = session.get(JobRow, job_id, with_for_update=lock)
    if row is None:
        raise _no_job(job_id)
    return row


def _require(session: Session, name: str) -> HostRow:
    row = session.get(HostRow, name)
    if row is None:
        raise NotFoundError(
            f"no host named {name!r} is registered; register it with "
            f"`vmferry hosts add {name} <libvirt-uri>` or see the known hosts with "
            "`vmferry hosts list`"
        )
    return row


def _duplicate(host: Host, *, cause: BaseException | None = None) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"a host named {host.name!r} is already registered; choose another name, or see "
        "the registered hosts with `vmferry hosts list`",
        cause=cause,
    )


def _transition(current: JobStatus, new: JobStatus) -> JobStatus:
    try:
        return transition(current, new)
    except IllegalTransitionError as exc:
        raise VmferryError(str(exc)) from exc
