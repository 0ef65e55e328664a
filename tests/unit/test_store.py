"""The host store on SQLite and, when PostgreSQL is installed, on a throwaway PostgreSQL
(fixtures in conftest.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select

import vmferry.store.db as db_module
from vmferry.errors import AlreadyExistsError, BadInputError, NotFoundError, VmferryError
from vmferry.model import Host
from vmferry.store import Store, default_db_url, open_store
from vmferry.store.db import alembic_config
from vmferry.store.tables import Base, HostRow

STORE_DIR = Path(db_module.__file__).resolve().parent

HOST_A = Host("alpha", "qemu+tcp://198.18.0.11/system", "tcp://198.18.1.11")
HOST_B = Host("bravo", "qemu+ssh://root@bravo.example/system")


# -- hosts --------------------------------------------------------------------------------


def test_add_get_list_remove(store: Store) -> None:
    assert store.list_hosts() == []
    store.add_host(HOST_B)
    store.add_host(HOST_A)

    got = store.get_host("alpha")
    assert got == HOST_A
    assert type(got) is Host  # a model object, never an ORM row
    assert store.list_hosts() == [HOST_A, HOST_B]  # sorted by name
    assert all(type(h) is Host for h in store.list_hosts())

    store.remove_host("alpha")
    assert store.list_hosts() == [HOST_B]
    with pytest.raises(NotFoundError):
        store.get_host("alpha")


def test_duplicate_name_is_refused_and_keeps_the_original(store: Store) -> None:
    store.add_host(HOST_A)
    with pytest.raises(AlreadyExistsError, match="'alpha' is already registered") as excinfo:
        store.add_host(Host("alpha", "qemu:///system"))
    assert excinfo.value.exit_code == 2
    assert store.get_host("alpha") == HOST_A


def test_duplicate_inserted_behind_our_back_is_still_refused(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The IntegrityError path: another writer added the name after our check."""
    store.add_host(HOST_A)
    monkeypatch.setattr("sqlalchemy.orm.Session.get", lambda *args, **kwargs: None)
    with pytest.raises(AlreadyExistsError):
        store.add_host(HOST_A)


@pytest.mark.parametrize("action", ["get_host", "remove_host"])
def test_unknown_host_tells_what_to_run(store: Store, action: str) -> None:
    with pytest.raises(NotFoundError) as excinfo:
        getattr(store, action)("ghost")
    message = excinfo.value.message
    assert "'ghost'" in message
    assert "vmferry hosts add" in message
    assert "vmferry hosts list" in message


def test_replace_host_inserts_then_updates_keeping_added_at(store: Store, db_url: str) -> None:
    store.replace_host(HOST_A)
    assert store.get_host("alpha") == HOST_A

    changed = Host("alpha", "qemu+tcp://198.18.0.99/system", None)
    store.replace_host(changed)
    assert store.list_hosts() == [changed]

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            (added_at,) = conn.execute(select(HostRow.added_at)).one()
    finally:
        engine.dispose()
    # SQLite gives back naive datetimes; both are UTC.
    now = datetime.now(UTC).replace(tzinfo=added_at.tzinfo and UTC)
    assert now - timedelta(minutes=5) < added_at <= now


# -- migrations ---------------------------------------------------------------------------


def _current_heads(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def test_migrations_are_idempotent_and_skip_work_at_head(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with open_store(db_url) as first:
        first.add_host(HOST_A)
    assert _current_heads(db_url) == heads

    def no_upgrade(*args: object, **kwargs: object) -> None:
        raise AssertionError("open_store ran alembic upgrade on a database already at head")

    monkeypatch.setattr("alembic.command.upgrade", no_upgrade)
    for _ in range(2):
        with open_store(db_url) as again:
            assert again.list_hosts() == [HOST_A]
    assert _current_heads(db_url) == heads


def _downgrade(db_url: str, revision: str, sql: str | None = None) -> list[str]:
    """Make the store, downgrade it to ``revision``, run ``sql`` there; the tables left."""
    open_store(db_url).close()
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, revision)
            if sql is not None:
                conn.exec_driver_sql(sql)
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    assert "hosts" not in _downgrade(db_url, "base")
    with open_store(db_url) as store:
        store.add_host(HOST_B)
        assert store.list_hosts() == [HOST_B]


def test_orm_metadata_matches_the_migrations(db_url: str) -> None:
    """Fails when a table or column changes in tables.py without a new migration."""
    open_store(db_url).close()
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"tables.py and the Alembic migrations disagree; add a migration: {diff}"


def test_migrations_have_a_single_head_and_ship_in_the_package() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    assert len(scripts.get_heads()) == 1
    assert (STORE_DIR / "migrations" / "env.py").is_file()
    assert (STORE_DIR / "migrations" / "script.py.mako").is_file()
    assert list((STORE_DIR / "migrations" / "versions").glob("0001_*.py"))


def test_alembic_ini_for_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("VMFERRY_DB", url)
    config = Config(str(STORE_DIR / "alembic.ini"))
    command.upgrade(config, "head", sql=True)  # offline: prints the DDL
    assert "CREATE TABLE hosts" in capsys.readouterr().out
    command.upgrade(config, "head")
    assert "hosts" in inspect(create_engine(url)).get_table_names()


def test_database_from_a_newer_vmferry_is_refused_clearly(db_url: str) -> None:
    open_store(db_url).close()
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    finally:
        engine.dispose()
    with pytest.raises(VmferryError, match="newer vmferry"):
        open_store(db_url)


# -- opening ------------------------------------------------------------------------------


def test_default_db_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMFERRY_DB", "postgresql+psycopg://vmferry@db.example/vmferry")
    assert default_db_url() == "postgresql+psycopg://vmferry@db.example/vmferry"


def test_default_db_url_is_sqlite_in_the_user_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VMFERRY_DB", raising=False)
    data_dir = tmp_path / "share" / "vmferry"
    monkeypatch.setattr(db_module, "user_data_dir", lambda appname: str(data_dir))
    assert default_db_url() == f"sqlite:///{data_dir}/vmferry.db"
    assert data_dir.is_dir()


def test_open_store_without_url_uses_vmferry_db(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMFERRY_DB", f"sqlite:///{tmp_path / 'env.db'}")
    with open_store() as store:
        store.add_host(HOST_A)
    assert (tmp_path / "env.db").is_file()


@pytest.mark.parametrize(
    "url", ["not a url", "nosuchdialect://x/y", "postgresql+nosuchdriver://u@h/db"]
)
def test_bad_database_url(url: str) -> None:
    with pytest.raises(BadInputError, match=r"VMFERRY_DB|not installed"):
        open_store(url)


def test_a_hosts_shell_and_link_rate_are_kept_and_replaced(store: Store) -> None:
    lab_like = Host("kvm9", "qemu+tcp://198.18.0.19/system", None, shell="netns:vmf-kvm9",
                    link_mbps=400)  # fmt: skip
    store.add_host(lab_like)
    assert store.get_host("kvm9") == lab_like
    store.replace_host(Host("kvm9", lab_like.uri, None, shell="local", link_mbps=None))
    assert store.get_host("kvm9") == Host("kvm9", lab_like.uri, None, shell="local")


def test_hosts_registered_before_0005_read_with_no_shell_and_no_link(db_url: str) -> None:
    _downgrade(db_url, "0004", "INSERT INTO hosts (name, uri, migration_uri, added_at) VALUES "
               "('old', 'qemu:///system', NULL, CURRENT_TIMESTAMP)")  # fmt: skip
    with open_store(db_url) as store:  # upgrades to head
        assert store.get_host("old") == Host("old", "qemu:///system", None, None, None, False)
