"""Fixtures for the store tests: a database URL for SQLite and, when PostgreSQL is
installed, for a fresh database on a throwaway PostgreSQL cluster."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from support.pg import PgCluster

from vmferry.store import Store, open_store

# -- a throwaway PostgreSQL cluster -------------------------------------------------------


def _pg_version(initdb: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin/initdb$", initdb)
    return tuple(int(p) for p in match.group(1).split(".")) if match else (0,)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A PostgreSQL cluster in a temp dir, listening on a Unix socket only; removed after."""
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_pg_version)
    if not initdbs:
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            "`apt-get install -y postgresql` to run the store tests against it"
        )
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[dev]')")
    bindir = Path(initdbs[-1]).parent
    run_as: str | None = None
    root = Path(tempfile.mkdtemp(prefix="vmferry-pg-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = "postgres"
    data, log = root / "data", root / "postgres.log"

    def run(*args: str | Path) -> None:
        result = subprocess.run(
            [str(a) for a in args], user=run_as, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"{args[0]} failed:\n{result.stdout}{result.stderr}{server_log}")

    started = False
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions")  # fmt: skip
        options = f"-c listen_addresses='' -k {root} -c fsync=off -c full_page_writes=off"
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
        started = True
        yield PgCluster(bindir=bindir, socket_dir=root, run_as=run_as, options=options)
    finally:
        if started:
            run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty database on the throwaway cluster."""
    name = f"vmferry_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        pg_cluster.url("postgres"), isolation_level="AUTOCOMMIT", pool_pre_ping=True
    )  # pre-ping: a store-fault test restarts the server
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield pg_cluster.url(name)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vmferry.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with open_store(db_url) as opened:
        yield opened
