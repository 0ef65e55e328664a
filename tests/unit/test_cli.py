"""The CLI as a user meets it: one-line errors, exit codes, JSON, nothing half written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import vmferry as run_vmferry


def vmferry(*args: str, db: Path, lab_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = {} if lab_dir is None else {"VMFERRY_LAB_DIR": str(lab_dir)}
    return run_vmferry(*args, db=db, env=extra)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("vmferry: ")
    assert "Traceback" not in done.stderr
    return lines[0]


def test_hosts_list_starts_empty(db: Path) -> None:
    done = vmferry("hosts", "list", "--json", db=db)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_adding_a_host_whose_uri_does_not_answer_stores_nothing(db: Path) -> None:
    done = vmferry("hosts", "add", "ghost", "qemu+tcp://198.18.255.254/system", db=db)
    line = assert_one_line_error(done, 2)
    assert "198.18.255.254" in line
    assert json.loads(vmferry("hosts", "list", "--json", db=db).stdout) == []


def test_a_test_driver_host_is_added_listed_and_inventoried(db: Path) -> None:
    done = vmferry("hosts", "add", "t1", "test:///default", db=db)
    assert done.returncode == 0, done.stderr
    hosts = json.loads(vmferry("hosts", "list", "--json", db=db).stdout)
    assert hosts == [{"name": "t1", "uri": "test:///default", "migration_uri": None,
                      "shell": None, "link_mbps": None, "migration_tls": False}]  # fmt: skip
    again = vmferry("hosts", "add", "t1", "test:///default", db=db)
    assert "already" in assert_one_line_error(again, 2)
    inv = json.loads(vmferry("inventory", "--host", "t1", "--json", db=db).stdout)
    assert [(r["host"], r["spec"]["name"], r["state"]) for r in inv] == [("t1", "test", "running")]


def test_a_hosts_shell_and_link_rate_are_registered_and_checked(db: Path) -> None:
    done = vmferry("hosts", "add", "t2", "test:///default", "--shell", "local",
                   "--link-mbps", "1000", "--json", db=db)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["shell"] == "local"
    listed = json.loads(vmferry("hosts", "list", "--json", db=db).stdout)
    assert [(h["name"], h["shell"], h["link_mbps"]) for h in listed] == [("t2", "local", 1000)]
    bad = vmferry("hosts", "add", "t3", "test:///default", "--shell", "telnet:x", db=db)
    assert "local, netns:NAME or ssh://" in assert_one_line_error(bad, 2)
    slow = vmferry("hosts", "add", "t4", "test:///default", "--link-mbps", "0", db=db)
    assert "--link-mbps" in assert_one_line_error(slow, 2)
    assert [h["name"] for h in json.loads(vmferry("hosts", "list", "--json", db=db).stdout)] == [
        "t2"
    ]


def test_unknown_host_is_a_bad_input(db: Path) -> None:
    line = assert_one_line_error(vmferry("inventory", "--host", "nope", "--json", db=db), 2)
    assert "nope" in line
    assert_one_line_error(vmferry("hosts", "remove", "nope", db=db), 2)


def test_lab_commands_without_a_lab(db: Path, tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    done = vmferry("lab", "guest", "create", "g1", "--host", "kvm1", db=db, lab_dir=lab_dir)
    assert "lab up" in assert_one_line_error(done, 2)
    status = vmferry("lab", "status", "--json", db=db, lab_dir=lab_dir)
    assert status.returncode == 0
    assert json.loads(status.stdout)["up"] is False
    assert not lab_dir.exists() or not any(lab_dir.iterdir())


def test_bad_option_values_are_refused(db: Path, tmp_path: Path) -> None:
    done = vmferry("lab", "up", "--hosts", "9", db=db, lab_dir=tmp_path / "lab")
    assert "1 to 8 hosts" in assert_one_line_error(done, 2)
    assert not (tmp_path / "lab").exists()
    usage = vmferry("hosts", "add", db=db)
    assert usage.returncode == 2
    assert "Traceback" not in usage.stderr


_GC_STATE = """
import gc, sys
from vmferry.cli import main
sys.argv = ["vmferry", "hosts", "list", "--json"]
try:
    main.{call}()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(code, gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)
"""


@pytest.mark.parametrize("call", ["entry", "run"])
def test_the_program_freezes_what_its_command_loaded_and_a_caller_of_run_keeps_its_collector(
    db: Path, call: str
) -> None:
    """``entry`` (the `vmferry` program) turns the collector back on with the command's
    modules frozen; ``run``, called inside another program (the tests), leaves it alone."""
    done = subprocess.run(
        [sys.executable, "-c", _GC_STATE.format(call=call)],
        env={**os.environ, "VMFERRY_DB": f"sqlite:///{db}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    code, enabled, frozen = done.stderr.split()[-3:]
    assert (code, enabled) == ("0", "True"), done.stderr
    assert json.loads(done.stdout) == []
    if call == "entry":
        assert int(frozen) > 50_000  # typer, SQLAlchemy, the store's tables
    else:
        assert int(frozen) == 0
