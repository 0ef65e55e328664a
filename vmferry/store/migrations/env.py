"""Alembic environment for vmferry's database.

vmferry runs it programmatically (``vmferry.store.db.open_store``), handing over an open
connection in ``config.attributes["connection"]``. Developers can also use the Alembic
command line, which connects to ``sqlalchemy.url`` or, when that is unset, to
``$VMFERRY_DB`` / the default database::

    alembic -c vmferry/store/alembic.ini revision --autogenerate -m "add jobs"
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine

from vmferry.store.db import default_db_url
from vmferry.store.tables import Base

config = context.config
if config.config_file_name is not None:  # the alembic command line, not open_store()
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or default_db_url()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: let autogenerate emit batch (copy-and-move) ops.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url())
    try:
        with engine.begin() as new_connection:
            _run(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
