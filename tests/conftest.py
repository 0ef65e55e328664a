"""Shared fixtures. Lab tests (marker `lab`) need root and the packages `make install` adds.

Isolation: every test module gets a store, a port-profile directory and a data directory of
its own (never the user's, never another module's), and a lab test module brings up its own
lab and takes it down, also when a test fails. A test that has to try something twice (a
documented hypervisor bug) says so through ``record_retry``; the run's summary lists every
such retry, so none hides.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine
from support.pg import PgCluster

# Each module's own copies of what vmferry keeps under the user's data directory.
_ISOLATED_ENV = ("VMFERRY_DB", "VMFERRY_NETPROFILES", "XDG_DATA_HOME")


@contextmanager
def isolated_env(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ (the CLI subprocesses inherit them), then restore."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(autouse=True, scope="module")
def _isolated_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store, port-profile directory and data directory for this module alone."""
    root = tmp_path_factory.mktemp("vmferry-data")
    values = {
        "VMFERRY_DB": f"sqlite:///{root / 'vmferry.db'}",
        "VMFERRY_NETPROFILES": str(root / "netprofiles"),
        "XDG_DATA_HOME": str(root / "xdg"),
    }
    assert set(values) == set(_ISOLATED_ENV)
    with isolated_env(values):
        yield root


@contextmanager
def lab_up(hosts: int = 2, segments: tuple[int, ...] | None = None) -> Iterator[object]:
    """A lab of ``hosts`` hosts, taken down afterwards whatever happened.

    The lab's namespaces are machine-wide, so test runs on one machine take turns: this holds
    an exclusive lock on /run/vmferry-lab.lock while its lab is up (use
    `flock /run/vmferry-lab.lock CMD` to hold it by hand). A lab the user left up (after
    `make demo`) is never taken over: the lab refuses to start, and the test says why.
    """
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (run `make test` as root)")
    from vmferry.errors import AlreadyExistsError
    from vmferry.lab import lifecycle
    from vmferry.lab.lock import lab_turn

    with lab_turn():
        try:
            state = lifecycle.up(hosts=hosts, link_mbps=400, segments=segments)
        except AlreadyExistsError as exc:
            pytest.fail(f"{exc.message} (a lab left up by hand: the tests never reuse it)")
        try:
            yield state
        finally:
            lifecycle.down()


LabUp = Callable[..., AbstractContextManager[object]]


@pytest.fixture(scope="session")
def lab_factory() -> LabUp:
    """``lab_up`` for modules that need another shape of lab (``with lab_factory(3, ...)``)."""
    return lab_up


@pytest.fixture(scope="module")
def lab(_isolated_store: Path) -> Iterator[object]:
    """A 2-host lab for one test module (registered in the module's own store)."""
    with lab_up(hosts=2) as state:
        yield state


@pytest.fixture
def lab_guests() -> Iterator[Callable[..., Any]]:
    """``guests.create_guest`` for one test: what it made is deleted when the test ends,
    passed or failed, so no guest of one test loads the host (two cores, TCG) under the next."""
    from vmferry.errors import VmferryError
    from vmferry.lab import guests

    made: list[str] = []

    def create(name: str, host: str, **options: Any) -> Any:
        made.append(name)
        return guests.create_guest(name, host, **options)

    yield create
    for name in made:
        with suppress(VmferryError):
            guests.delete_guest(name)


# ---------------------------------------------------------------- retries, reported

_RETRIES: list[tuple[str, str]] = []


@pytest.fixture
def record_retry(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Call with the reason before a test tries something a second time."""

    def record(reason: str) -> None:
        request.node.user_properties.append(("retry", reason))

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the retries from each test's last report (in the process that reports the
    run, also when pytest-xdist's workers ran the test)."""
    if report.when == "teardown":
        _RETRIES.extend((report.nodeid, str(v)) for k, v in report.user_properties if k == "retry")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests whose subject is a live move where this QEMU cannot move a TCG guest
    live without losing its writes (tests/support/stack.py)."""
    from support.stack import live_tcg_moves_work, skip_reason

    if live_tcg_moves_work():
        return
    skip = pytest.mark.skip(reason=skip_reason())
    for item in items:
        if item.get_closest_marker("live_moves") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every second attempt of the run: in-test retries (``record_retry``); no test is rerun."""
    terminalreporter.section("tests that needed more than one attempt")
    lines = [f"{nodeid}: {reason}" for nodeid, reason in _RETRIES]
    for line in lines or ["none"]:
        terminalreporter.write_line(line)


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


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
