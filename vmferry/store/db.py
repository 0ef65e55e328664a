"""Open the vmferry database (migrating it to the current schema) and read and write hosts."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from platformdirs import user_data_dir
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from vmferry.errors import AlreadyExistsError, BadInputError, NotFoundError, VmferryError
from vmferry.model import Host
from vmferry.store.tables import HostRow

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
