"""`vmferry users ...` and `vmferry audit` as a user meets them: the contract's output,
one-line errors with exit code 2, nothing written on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vmferry.service import users
from vmferry.store.db import open_store


def vmferry(*args: str, db: Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``vmferry ARGS`` on the SQLite store at ``db``, ``input`` on its stdin."""
    env = {**os.environ, "VMFERRY_DB": f"sqlite:///{db}"}
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                          input=input, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "users.db"


def one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmferry: "), done.stderr
    assert done.stdout == ""
    return lines[0]


def listed(db: Path) -> list[dict[str, object]]:
    done = vmferry("users", "list", "--json", db=db)
    assert done.returncode == 0, done.stderr
    found: list[dict[str, object]] = json.loads(done.stdout)
    return found


def test_add_prints_the_token_once_and_the_token_works(db: Path) -> None:
    done = vmferry("users", "add", "alice", "--role", "operator", "--project", "web", "--json",
                   db=db)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert set(printed) == {"name", "role", "token", "token_expires_at"}
    assert printed["token_expires_at"] is None  # without --expires: never
    assert (printed["name"], printed["role"]) == ("alice", "operator")
    plain = vmferry("users", "add", "bob", "--role", "viewer", db=db)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.count("\n") == 1 and plain.stdout.startswith("vmf_")
    with open_store(f"sqlite:///{db}") as store:
        alice = users.authenticate(store, printed["token"])
        bob = users.authenticate(store, plain.stdout.strip())
    assert alice is not None and (alice.name, alice.project) == ("alice", "web")
    assert bob is not None and bob.name == "bob"
    assert [(u["name"], u["role"], u["project"]) for u in listed(db)] == [
        ("alice", "operator", "web"), ("bob", "viewer", None),
    ]  # fmt: skip
    assert printed["token"] not in vmferry("users", "list", "--json", db=db).stdout


def test_password_stdin_sets_a_password(db: Path) -> None:
    done = vmferry("users", "add", "carol", "--role", "planner", "--password-stdin", db=db,
                   input="correct horse\n")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert listed(db)[0]["has_password"] is True


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["users", "add", "x", "--role", "root"], "unknown role 'root'"),
        (["users", "add", "bad name", "--role", "viewer"], "user name 'bad name'"),
        (["users", "add", "x", "--role", "admin", "--project", "web"], "without --project"),
        (["users", "remove", "ghost"], "no user named 'ghost'"),
        (["users", "token", "ghost"], "no user named 'ghost'"),
        (["audit", "--since", "yesterday"], "--since 'yesterday'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    db: Path, args: list[str], says: str
) -> None:
    assert says in one_line_error(vmferry(*args, db=db))
    assert listed(db) == []
    trail = vmferry("audit", "--json", db=db)
    assert trail.returncode == 0 and json.loads(trail.stdout) == []


def test_a_duplicate_name_is_refused(db: Path) -> None:
    assert vmferry("users", "add", "dora", "--role", "viewer", db=db).returncode == 0
    assert "exists already" in one_line_error(vmferry("users", "add", "dora", "--role",
                                                      "admin", db=db))  # fmt: skip
    assert [u["role"] for u in listed(db)] == ["viewer"]


def test_token_replaces_and_remove_revokes_and_the_audit_shows_both(db: Path) -> None:
    first = vmferry("users", "add", "erin", "--role", "viewer", db=db).stdout.strip()
    second = vmferry("users", "token", "erin", db=db).stdout.strip()
    assert second.startswith("vmf_") and second != first
    with open_store(f"sqlite:///{db}") as store:
        assert users.authenticate(store, first) is None
        assert users.authenticate(store, second) is not None
    assert vmferry("users", "remove", "erin", db=db).returncode == 0
    with open_store(f"sqlite:///{db}") as store:
        assert users.authenticate(store, second) is None
    trail = json.loads(vmferry("audit", "--json", "--user", vmferry_login(db), db=db).stdout)
    assert [(e["action"], e["target"], e["result"], e["remote"]) for e in trail] == [
        ("users.add", "erin", "ok", "local"), ("users.token", "erin", "ok", "local"),
        ("users.remove", "erin", "ok", "local"),
    ]  # fmt: skip


def vmferry_login(db: Path) -> str:
    done = vmferry("audit", "--json", db=db)
    names = {e["user"] for e in json.loads(done.stdout)}
    assert len(names) == 1
    return str(names.pop())
