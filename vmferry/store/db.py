"""Open the vmferry database (migrating it to the current schema); read and write hosts and
migration jobs."""

from __future__ import annotations

import getpass
import os
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from platformdirs import user_data_dir
from sqlalchemy import Engine, create_engine, delete, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from vmferry.errors import AlreadyExistsError, BadInputError, NotFoundError, VmferryError
from vmferry.model import Host
from vmferry.model.job_state import IllegalTransitionError, transition
from vmferry.model.jsonable import to_jsonable
from vmferry.model.lease import Lease
from vmferry.model.migration import Job, JobEvent, JobStatus, MigrationOptions, MigrationResult
from vmferry.model.plan_run import ItemStatus, PlanItem, PlanRecord, PlanStatus
from vmferry.model.probe import VmProbes
from vmferry.model.workload import PredictionRecord, ProfileSample
from vmferry.store.codec import DecodeError, from_jsonable
from vmferry.store.tables import (
    AuditRow,
    HostRow,
    JobEventRow,
    JobRow,
    LeaseRow,
    PlanItemRow,
    PlanRow,
    PredictionRow,
    ProfileSampleRow,
    SettingRow,
    VmProbesRow,
    utcnow,
)

if TYPE_CHECKING:
    from alembic.config import Config

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
    from alembic.config import Config

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
    except _UnknownSchema as exc:
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


_REVISION = re.compile(r"""^revision(?::[^=\n]*)?=\s*(.+?)\s*$""", re.MULTILINE)
_DOWN_REVISION = re.compile(r"""^down_revision(?::[^=\n]*)?=\s*(.+?)\s*$""", re.MULTILINE)
_QUOTED = re.compile(r"""["']([^"']+)["']""")


def shipped_heads() -> set[str] | None:
    """The head revisions of the migrations in the package, read from their files without
    importing Alembic (whose import took 0.4 s of every command's start); None when a file
    is not in the plain form (``revision = "0009"``, ``down_revision = "0008"`` or None),
    and Alembic decides."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text()
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        name = _QUOTED.fullmatch(revision.group(1))
        if name is None:
            return None
        revisions.add(name.group(1))
        if down.group(1) == "None":
            continue
        parent = _QUOTED.fullmatch(down.group(1))
        if parent is None:  # a merge (a tuple), or something else
            return None
        parents.add(parent.group(1))
    return (revisions - parents) or None


class _UnknownSchema(Exception):
    """Alembic does not know the database's revision."""


def _upgrade_to_head(engine: Engine) -> None:
    heads = shipped_heads()
    if heads is not None:
        try:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
                if {row[0] for row in rows} == heads:
                    return  # current: no Alembic needed
        except SQLAlchemyError:
            pass  # no version table yet: Alembic makes it
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = alembic_config()
    try:
        heads = set(ScriptDirectory.from_config(config).get_heads())
        with engine.begin() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
            if current == heads:
                return
            # env.py runs the migrations on this connection instead of opening its own.
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except CommandError as exc:
        raise _UnknownSchema(str(exc)) from exc


class Store:
    """Reads and writes vmferry's database; speaks only :mod:`vmferry.model` types."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for the store's other modules: users, audit, tags)."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def twin(self) -> Store:
        """Another Store on the same database with its own connections (for a thread that
        outlives this one's users)."""
        return Store(create_engine(self._engine.url, pool_pre_ping=True))

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

    # -- settings -------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        """The settings the user changed, by key."""
        with self._sessions() as session:
            return {row.key: row.value for row in session.scalars(select(SettingRow))}

    def set_setting(self, key: str, value: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(SettingRow, key, with_for_update=True)
            if row is None:
                session.add(SettingRow(key=key, value=value))
            else:
                row.value, row.updated_at = value, utcnow()

    def unset_setting(self, key: str) -> bool:
        """Back to the default; False if it was not set."""
        with self._sessions.begin() as session:
            row = session.get(SettingRow, key)
            if row is None:
                return False
            session.delete(row)
            return True

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
                        row.shell = host.shell
                        row.link_mbps = host.link_mbps
                        row.migration_tls = host.migration_tls
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
        owner_id: str | None = None,
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
                            owner_id=owner_id,
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
                    session.add(_transition_audit(_created(session, job_id), now, "pending",
                                                  {"options": to_jsonable(options)}))  # fmt: skip
                break
            except IntegrityError as exc:
                unfinished = self.unfinished_jobs(vm)
                if unfinished:  # the index of migration 0013: one unfinished job per VM
                    raise AlreadyExistsError(
                        f"{vm} has an unfinished job already: {unfinished[0].id} "
                        f"({unfinished[0].kind}, {unfinished[0].status}); wait for it or "
                        f"`vmferry job cancel {unfinished[0].id}`",
                        cause=exc,
                    ) from exc
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

    def job_after(self, job_id: str, known: int) -> tuple[Job, tuple[JobEvent, ...]]:
        """The job (without its events) and its events after the first ``known``: what a
        follower of the job has not seen yet, read without reading what it has."""
        with self._sessions() as session:
            row = _require_job(session, job_id)
            events = session.scalars(
                select(JobEventRow)
                .where(JobEventRow.job_id == job_id)
                .order_by(JobEventRow.id)
                .offset(max(0, known))
            )
            return _job(row), tuple(_event(e) for e in events)

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

    def set_owner(self, job_id: str, lease: Lease) -> None:
        """Record the process driving the job: its lease (see :mod:`vmferry.model.lease`),
        pid and start time, so others can tell whether it lives."""
        with self._sessions.begin() as session:
            row = _require_job(session, job_id, lock=True)
            row.owner_id, row.owner_pid, row.owner_start_ticks = (
                lease.owner_id,
                lease.pid,
                lease.start_ticks,
            )
            row.updated_at = _now()

    # -- what VMs declare ------------------------------------------------------------------

    def vm_probes(self, vm: str) -> VmProbes:
        """The probes VM ``vm`` declares (none when it declares nothing)."""
        with self._sessions() as session:
            row = session.get(VmProbesRow, vm)
            if row is None:
                return VmProbes(vm)
            return VmProbes(vm, tuple(str(p) for p in row.probes), row.netns,
                            tuple(str(a) for a in row.health or ()))  # fmt: skip

    def set_vm_probes(self, declared: VmProbes) -> VmProbes:
        """Replace what VM ``declared.vm`` declares (nothing declared: forget it)."""
        health = list(declared.health) or None
        with self._sessions.begin() as session:
            row = session.get(VmProbesRow, declared.vm, with_for_update=True)
            if not declared.probes and declared.netns is None and health is None:
                if row is not None:
                    session.delete(row)
            elif row is None:
                session.add(VmProbesRow(vm=declared.vm, probes=list(declared.probes),
                                        netns=declared.netns, health=health,
                                        updated_at=_now()))  # fmt: skip
            else:
                row.probes, row.netns = list(declared.probes), declared.netns
                row.health = health
                row.updated_at = _now()
        return self.vm_probes(declared.vm)

    # -- leases ---------------------------------------------------------------------------
    #
    # Every time written or compared here is the store's clock: PostgreSQL's now() (owners
    # may run on several machines), or for SQLite this machine's (it has only one).

    def clock(self) -> datetime:
        """The store's time now (aware, UTC)."""
        if self._engine.dialect.name == "sqlite":
            return _now()
        with self._engine.connect() as connection:
            moment = connection.execute(select(func.now())).scalar_one()
        return _aware(moment)

    def take_lease(
        self, owner_id: str, *, host: str, node: str, pid: int, start_ticks: int | None,
        lease_s: float,
    ) -> Lease:  # fmt: skip
        """Write a new lease for ``owner_id``, valid for ``lease_s`` seconds from now."""
        now = self.clock()
        with self._sessions.begin() as session:
            session.add(LeaseRow(owner_id=owner_id, host=host, node=node, pid=pid,
                                 start_ticks=start_ticks, started_at=now, heartbeat_at=now,
                                 expires_at=now + timedelta(seconds=lease_s)))  # fmt: skip
        return self._require_lease(owner_id)

    def renew_lease(self, owner_id: str, lease_s: float) -> Lease | None:
        """Push the lease's expiry ``lease_s`` seconds past now; None when it is gone."""
        now = self.clock()
        with self._sessions.begin() as session:
            row = session.get(LeaseRow, owner_id, with_for_update=True)
            if row is None:
                return None
            row.heartbeat_at, row.expires_at = now, now + timedelta(seconds=lease_s)
        return self.lease(owner_id)

    def release_lease(self, owner_id: str) -> None:
        """Remove the lease (its owner ends cleanly); the jobs that name it keep the id."""
        with self._sessions.begin() as session:
            session.execute(delete(LeaseRow).where(LeaseRow.owner_id == owner_id))

    def lease(self, owner_id: str) -> Lease | None:
        with self._sessions() as session:
            row = session.get(LeaseRow, owner_id)
            return None if row is None else _lease(row)

    def _require_lease(self, owner_id: str) -> Lease:
        found = self.lease(owner_id)
        if found is None:  # pragma: no cover - written in the transaction before
            raise NotFoundError(f"no lease {owner_id!r}")
        return found

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
        *,
        at: datetime | None = None,
    ) -> JobEvent:
        """Append an event to the job's history (``data`` must be JSON-ready after
        :func:`~vmferry.model.jsonable.to_jsonable`); ``at``: when it happened, if earlier
        than now (an event written late keeps its time)."""
        now = _now()
        row = _event_row(job_id, at or now, kind, message, data or {})
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

    # -- workload profiles and predictions (vmferry.predict) ----------------------------

    def add_profile_samples(self, samples: list[ProfileSample]) -> None:
        """Store workload samples (``taken_at`` ISO 8601; ``metrics`` JSON-ready)."""
        if not samples:
            return
        with self._sessions.begin() as session:
            session.add_all(
                ProfileSampleRow(
                    vm=s.vm,
                    host=s.host,
                    taken_at=_parse_iso(s.taken_at),
                    metrics=to_jsonable(dict(s.metrics)),
                )
                for s in samples
            )

    def profile_samples(
        self, vm: str, *, since: str | None = None, limit: int = 100_000
    ) -> list[ProfileSample]:
        """VM ``vm``'s samples taken at or after ``since`` (ISO 8601), oldest first; the
        newest ``limit`` of them."""
        query = select(ProfileSampleRow).where(ProfileSampleRow.vm == vm)
        if since is not None:
            query = query.where(ProfileSampleRow.taken_at >= _parse_iso(since))
        query = query.order_by(ProfileSampleRow.taken_at.desc(), ProfileSampleRow.id.desc())
        with self._sessions() as session:
            rows = list(session.scalars(query.limit(limit)))
        return [ProfileSample(vm=r.vm, host=r.host, taken_at=_iso(r.taken_at),
                              metrics=dict(r.metrics)) for r in reversed(rows)]  # fmt: skip

    def delete_profile_samples(self, vm: str) -> int:
        """Forget VM ``vm``'s samples; how many there were."""
        with self._sessions.begin() as session:
            done = session.execute(delete(ProfileSampleRow).where(ProfileSampleRow.vm == vm))
            return int(done.rowcount)  # type: ignore[attr-defined]

    def save_prediction(
        self, job_id: str, vm: str, source: str, destination: str,
        predicted: Mapping[str, object],
    ) -> None:  # fmt: skip
        """Keep the prediction made for job ``job_id`` before it ran (replacing any)."""
        now = _now()
        with self._sessions.begin() as session:
            _require_job(session, job_id)
            row = session.get(PredictionRow, job_id, with_for_update=True)
            if row is None:
                row = PredictionRow(job_id=job_id, created_at=now, actual=None)
                session.add(row)
            row.vm, row.source, row.destination = vm, source, destination
            row.predicted = to_jsonable(dict(predicted))
            row.updated_at = now

    def record_actual(self, job_id: str, actual: Mapping[str, object]) -> None:
        """Put what happened beside job ``job_id``'s prediction; :class:`NotFoundError`
        if it has none."""
        with self._sessions.begin() as session:
            row = session.get(PredictionRow, job_id, with_for_update=True)
            if row is None:
                raise NotFoundError(f"job {job_id!r} has no stored prediction")
            row.actual = to_jsonable(dict(actual))
            row.updated_at = _now()

    def get_prediction(self, job_id: str) -> PredictionRecord | None:
        """Job ``job_id``'s prediction and actual figures, None if it has no prediction."""
        with self._sessions() as session:
            row = session.get(PredictionRow, job_id)
            return None if row is None else _prediction(row)

    def list_predictions(
        self, *, with_actual: bool = True, limit: int = 500
    ) -> list[PredictionRecord]:
        """The ``limit`` newest predictions (only those with actual figures, by default),
        newest first."""
        query = select(PredictionRow)
        if with_actual:
            query = query.where(PredictionRow.actual.is_not(None))
        query = query.order_by(PredictionRow.created_at.desc(), PredictionRow.job_id)
        with self._sessions() as session:
            return [_prediction(r) for r in session.scalars(query.limit(limit))]

    # -- wave plans (vmferry.service.plan) ----------------------------------------------

    def create_plan(
        self,
        name: str | None,
        spec: Mapping[str, object],
        schedule: Mapping[str, object],
        items: list[PlanItem],
    ) -> PlanRecord:
        """A new ``pending`` plan with a fresh 12-hex-digit id and its items."""
        for attempt in range(3):
            plan_id = secrets.token_hex(6)
            now = _now()
            try:
                with self._sessions.begin() as session:
                    session.add(PlanRow(id=plan_id, name=name, status=PlanStatus.PENDING.value,
                                        reason=None, requested=None, spec=to_jsonable(dict(spec)),
                                        schedule=to_jsonable(dict(schedule)), owner_pid=None,
                                        owner_start_ticks=None, owner_id=None, created_at=now,
                                        updated_at=now,
                                        started_at=None, finished_at=None))  # fmt: skip
                    session.flush()  # the id collides (IntegrityError) here, not later
                    for item in items:
                        row = PlanItemRow(plan_id=plan_id, vm=item.vm)
                        _fill_item_row(row, item)
                        session.add(row)
                break
            except IntegrityError:
                if attempt == 2:  # pragma: no cover - three random 48-bit collisions
                    raise
        return self.get_plan(plan_id)

    def get_plan(self, plan_id: str) -> PlanRecord:
        """The plan with its items in schedule order; :class:`NotFoundError` if none."""
        with self._sessions() as session:
            row = _require_plan(session, plan_id)
            items = session.scalars(
                select(PlanItemRow)
                .where(PlanItemRow.plan_id == plan_id)
                .order_by(PlanItemRow.position, PlanItemRow.vm)
            )
            return _plan(row, tuple(items))

    def list_plans(self, limit: int = 50) -> list[PlanRecord]:
        """The ``limit`` newest plans, newest first, without their items."""
        with self._sessions() as session:
            rows = session.scalars(
                select(PlanRow).order_by(PlanRow.created_at.desc(), PlanRow.id.desc()).limit(limit)
            )
            return [_plan(row, ()) for row in rows]

    def set_plan_status(
        self, plan_id: str, status: PlanStatus, reason: str | None = None
    ) -> PlanRecord:
        """Record the plan's status (and ``reason``; None clears it). The first ``running``
        sets ``started_at``; a finished status sets ``finished_at``."""
        with self._sessions.begin() as session:
            row = _require_plan(session, plan_id, lock=True)
            now = _now()
            row.status, row.reason, row.updated_at = status.value, reason, now
            if status is PlanStatus.RUNNING and row.started_at is None:
                row.started_at = now
            if status in (PlanStatus.COMPLETED, PlanStatus.FAILED, PlanStatus.CANCELLED):
                row.finished_at = now
            elif status is PlanStatus.RUNNING:
                row.finished_at = None
        return self.get_plan(plan_id)

    def set_plan_owner(self, plan_id: str, lease: Lease | None) -> None:
        """Record the process running the plan (its lease; None: nobody)."""
        with self._sessions.begin() as session:
            row = _require_plan(session, plan_id, lock=True)
            row.owner_id = None if lease is None else lease.owner_id
            row.owner_pid = None if lease is None else lease.pid
            row.owner_start_ticks = None if lease is None else lease.start_ticks
            row.updated_at = _now()

    def request_plan(self, plan_id: str, request: str | None) -> None:
        """Ask the plan's running owner to ``pause`` or ``cancel`` (None: clear the ask).
        A ``cancel`` is never replaced by a ``pause``."""
        if request not in (None, "pause", "cancel"):
            raise BadInputError(f"unknown plan request {request!r}")
        with self._sessions.begin() as session:
            row = _require_plan(session, plan_id, lock=True)
            if not (request == "pause" and row.requested == "cancel"):
                row.requested, row.updated_at = request, _now()

    def plan_request(self, plan_id: str) -> str | None:
        """What the plan's owner was asked to do (``pause``, ``cancel`` or None)."""
        with self._engine.connect() as connection:
            found = connection.execute(
                select(PlanRow.requested).where(PlanRow.id == plan_id)
            ).one_or_none()
        if found is None:
            raise _no_plan(plan_id)
        return None if found[0] is None else str(found[0])

    def save_plan_item(self, plan_id: str, item: PlanItem) -> None:
        """Write every field of ``item`` (the plan's item for ``item.vm``)."""
        with self._sessions.begin() as session:
            row = session.get(PlanItemRow, (plan_id, item.vm), with_for_update=True)
            if row is None:
                raise NotFoundError(f"plan {plan_id!r} has no vm {item.vm!r}")
            _fill_item_row(row, item)
            session.execute(update(PlanRow).where(PlanRow.id == plan_id).values(updated_at=_now()))


def utc_now() -> datetime:
    """The store's notion of now for the rows it writes (UTC, aware)."""
    return datetime.now(UTC)


_now = utc_now


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive datetimes; they are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _lease(row: LeaseRow) -> Lease:
    return Lease(
        owner_id=row.owner_id,
        host=row.host,
        node=row.node,
        pid=row.pid,
        start_ticks=row.start_ticks,
        started_at=_aware(row.started_at),
        heartbeat_at=_aware(row.heartbeat_at),
        expires_at=_aware(row.expires_at),
    )


def _iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a Z (SQLite gives back naive datetimes; they are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _prediction(row: PredictionRow) -> PredictionRecord:
    return PredictionRecord(job_id=row.job_id, vm=row.vm, source=row.source,
                            destination=row.destination, predicted=dict(row.predicted),
                            actual=None if row.actual is None else dict(row.actual),
                            created_at=_iso(row.created_at),
                            updated_at=_iso(row.updated_at))  # fmt: skip


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
    session.add(_transition_audit(row, now, new.value, data))


# Who the audit trail names for the job transitions this process writes: ``local:<login>``
# for the command line (set by whoever knows better: a worker names itself).
def _login() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name for this uid
        return "local:?"


_actor = [_login()]


def act_as(actor: str) -> None:
    """Name the actor of every job transition this process records from now on."""
    _actor[0] = actor[:64]


def _transition_audit(row: JobRow, at: datetime, status: str, data: dict[str, Any]) -> AuditRow:
    """The audit row of a job's transition (in the transaction that makes it: a transition
    is recorded exactly when it happens)."""
    detail = {"vm": row.vm, "kind": row.kind, "source": row.source,
              "destination": row.destination, **data}  # fmt: skip
    return AuditRow(at=at, user=_actor[0], remote="vmferry", action=f"job.{status}",
                    target=row.id, result="ok", detail=to_jsonable(detail))  # fmt: skip


def _created(session: Session, job_id: str) -> JobRow:
    row = session.get(JobRow, job_id)
    assert row is not None, "flushed in this transaction"
    return row


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
        owner_id=row.owner_id,
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


# -- plans --------------------------------------------------------------------------------


def _no_plan(plan_id: str) -> NotFoundError:
    return NotFoundError(f"no plan {plan_id!r}; `vmferry plan create FILE` makes one")


def _require_plan(session: Session, plan_id: str, *, lock: bool = False) -> PlanRow:
    row = session.get(PlanRow, plan_id, with_for_update=lock)
    if row is None:
        raise _no_plan(plan_id)
    return row


def _fill_item_row(row: PlanItemRow, item: PlanItem) -> None:
    """Copy ``item`` onto ``row`` (the actual offsets are derived, not stored)."""
    row.wave, row.position = item.wave, item.order
    row.source, row.destination = item.source, item.destination
    row.strategy, row.strategy_reason = item.strategy, item.strategy_reason
    row.predicted_start_s, row.predicted_end_s = item.predicted_start_s, item.predicted_end_s
    row.predicted_s, row.predicted_downtime_ms = item.predicted_s, item.predicted_downtime_ms
    row.prediction = to_jsonable(dict(item.prediction))
    row.status, row.job_id, row.reason = item.status.value, item.job_id, item.reason
    row.started_at = None if item.started_at is None else _parse_iso(item.started_at)
    row.finished_at = None if item.finished_at is None else _parse_iso(item.finished_at)
    row.actual_total_ms, row.actual_downtime_ms = item.actual_total_ms, item.actual_downtime_ms
    row.attempts = item.attempts


def _offset(moment: datetime | None, origin: datetime | None) -> float | None:
    if moment is None or origin is None:
        return None
    return round((_parse_iso(_iso(moment)) - _parse_iso(_iso(origin))).total_seconds(), 3)


def _plan_item(i: PlanItemRow, origin: datetime | None) -> PlanItem:
    return PlanItem(
        vm=i.vm,
        wave=i.wave,
        order=i.position,
        source=i.source,
        destination=i.destination,
        strategy=i.strategy,
        strategy_reason=i.strategy_reason,
        predicted_start_s=i.predicted_start_s,
        predicted_end_s=i.predicted_end_s,
        predicted_s=i.predicted_s,
        predicted_downtime_ms=i.predicted_downtime_ms,
        prediction=dict(i.prediction),
        status=ItemStatus(i.status),
        job_id=i.job_id,
        reason=i.reason,
        started_at=None if i.started_at is None else _iso(i.started_at),
        finished_at=None if i.finished_at is None else _iso(i.finished_at),
        actual_start_s=_offset(i.started_at, origin),
        actual_end_s=_offset(i.finished_at, origin),
        actual_total_ms=i.actual_total_ms,
        actual_downtime_ms=i.actual_downtime_ms,
        attempts=i.attempts,
    )


def _plan(row: PlanRow, items: tuple[PlanItemRow, ...]) -> PlanRecord:
    try:
        status = PlanStatus(row.status)
        built = tuple(_plan_item(i, row.started_at) for i in items)
    except ValueError as exc:
        raise VmferryError(
            f"plan {row.id} in the database cannot be read by this vmferry ({exc}); it was "
            "probably written by a newer vmferry: upgrade vmferry",
            cause=exc,
        ) from exc
    return PlanRecord(
        id=row.id,
        name=row.name,
        status=status,
        created_at=_iso(row.created_at),
        updated_at=_iso(row.updated_at),
        spec=dict(row.spec),
        schedule=dict(row.schedule),
        items=built,
        reason=row.reason,
        requested=row.requested,
        owner_pid=row.owner_pid,
        owner_start_ticks=row.owner_start_ticks,
        owner_id=row.owner_id,
        started_at=None if row.started_at is None else _iso(row.started_at),
        finished_at=None if row.finished_at is None else _iso(row.finished_at),
    )
