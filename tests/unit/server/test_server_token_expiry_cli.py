"""`vmferry users add|token --expires` and `users list` as a user meets them: the expiry is
stored and shown; a bad one is one line, exit code 2, and nothing is written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session
from test_server_users_cli import listed, one_line_error, vmferry

from vmferry.service import users
from vmferry.store.db import open_store
from vmferry.store.tables import UserRow


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "users.db"


def audit_actions(db: Path) -> list[tuple[str, str, dict[str, object]]]:
    done = vmferry("audit", "--json", db=db)
    assert done.returncode == 0, done.stderr
    return [(e["action"], e["target"], e["detail"]) for e in json.loads(done.stdout)]


def test_add_and_token_store_the_expiry_and_list_shows_it(db: Path) -> None:
    started = datetime.now(UTC)
    done = vmferry("users", "add", "temp", "--role", "viewer", "--expires", "30d", "--json",
                   db=db)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    expires = datetime.fromisoformat(printed["token_expires_at"].replace("Z", "+00:00"))
    # a duration ends on a whole second, the one before: compare from the second it started
    assert started.replace(microsecond=0) + timedelta(days=30) <= expires
    assert expires <= datetime.now(UTC) + timedelta(days=30)
    assert [(u["name"], u["token_expires_at"]) for u in listed(db)] == [
        ("temp", printed["token_expires_at"])
    ]
    with open_store(f"sqlite:///{db}") as store:
        assert users.authenticate(store, printed["token"], expires - timedelta(seconds=1))
        assert users.authenticate(store, printed["token"], expires) is None

    renewed = vmferry("users", "token", "temp", "--expires", "2099-12-31T00:00Z", "--json",
                      db=db)  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr
    assert json.loads(renewed.stdout)["token_expires_at"] == "2099-12-31T00:00:00.000Z"
    plain = vmferry("users", "token", "temp", db=db)  # no --expires: the new token never expires
    assert plain.returncode == 0 and plain.stdout.startswith("vmf_")
    assert listed(db)[0]["token_expires_at"] is None
    assert [(a, t, d.get("token_expires_at")) for a, t, d in audit_actions(db)] == [
        ("users.add", "temp", printed["token_expires_at"]),
        ("users.token", "temp", "2099-12-31T00:00:00.000Z"),
        ("users.token", "temp", None),
    ]  # fmt: skip


def test_the_list_table_says_when_and_whether_a_token_expired(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, expires in (("always", None), ("later", "2099-01-01"), ("gone", "1d")):
        extra = [] if expires is None else ["--expires", expires]
        assert vmferry("users", "add", name, "--role", "viewer", *extra, db=db).returncode == 0
    with open_store(f"sqlite:///{db}") as store, Session(store.engine) as session:
        session.execute(update(UserRow).where(UserRow.name == "gone")
                        .values(token_expires_at=datetime(2020, 1, 1, tzinfo=UTC)))  # fmt: skip
        session.commit()
    monkeypatch.setenv("COLUMNS", "200")
    done = vmferry("users", "list", db=db)
    assert done.returncode == 0, done.stderr
    cells = {row[0]: row[-1] for line in done.stdout.splitlines() if "viewer" in line
             for row in [[c.strip() for c in line.strip("│ ").split("│")]]}  # fmt: skip
    assert cells == {"always": "never", "later": "2099-01-01T00:00:00.000Z",
                     "gone": "2020-01-01T00:00:00.000Z (expired)"}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["users", "add", "x", "--role", "viewer", "--expires", "soon"], "--expires 'soon'"),
        (["users", "add", "x", "--role", "viewer", "--expires", "0d"], "must live longer"),
        (["users", "add", "x", "--role", "viewer", "--expires", "2020-01-01T00:00Z"],
         "has passed already"),
        (["users", "add", "x", "--role", "viewer", "--expires", "-3d"], "--expires '-3d'"),
    ],
)  # fmt: skip
def test_a_bad_expiry_is_one_line_exit_2_and_adds_nobody(
    db: Path, args: list[str], says: str
) -> None:
    assert says in one_line_error(vmferry(*args, db=db))
    assert listed(db) == []
    assert audit_actions(db) == []


def test_a_bad_expiry_keeps_the_users_token(db: Path) -> None:
    token = vmferry("users", "add", "keep", "--role", "viewer", db=db).stdout.strip()
    assert "--expires '12'" in one_line_error(vmferry("users", "token", "keep", "--expires",
                                                      "12", db=db))  # fmt: skip
    with open_store(f"sqlite:///{db}") as store:
        assert users.authenticate(store, token) is not None
    assert [u["token_expires_at"] for u in listed(db)] == [None]
    assert [a for a, _t, _d in audit_actions(db)] == ["users.add"]
