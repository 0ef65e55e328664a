"""Users, tokens, tags and the append-only audit trail in the store, on SQLite and on a real
PostgreSQL (the ``store`` fixture of tests/unit/conftest.py runs each test on both)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from vmferry.errors import AlreadyExistsError, BadInputError, NotFoundError
from vmferry.model.account import Role, parse_token
from vmferry.service import audit as audit_service
from vmferry.service import users
from vmferry.store import accounts
from vmferry.store.db import Store


def test_a_token_works_until_it_is_replaced_or_its_user_removed(store: Store) -> None:
    user, token = users.add_user(store, "alice", "operator", project="web")
    assert (user.name, user.role, user.project) == ("alice", Role.OPERATOR, "web")
    assert users.authenticate(store, token) == user
    assert users.authenticate(store, token) == user  # the second time from this process's memory
    _, new = users.new_token(store, "alice")
    assert users.authenticate(store, token) is None
    assert users.authenticate(store, new) == user
    users.remove_user(store, "alice")
    assert users.authenticate(store, new) is None
    assert users.list_users(store) == []


def test_only_an_argon2_hash_of_the_token_is_stored(store: Store) -> None:
    _, token = users.add_user(store, "bob", "viewer", password="s3cret pass")
    parsed = parse_token(token)
    assert parsed is not None
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT token_id, token_hash, password_hash FROM users")).one()
    assert row.token_id == parsed[0]
    assert row.token_hash.startswith("$argon2id$") and parsed[1] not in row.token_hash
    assert row.password_hash.startswith("$argon2id$") and "s3cret" not in row.password_hash
    assert users.list_users(store)[0].has_password is True


@pytest.mark.parametrize(
    "token",
    ["", "nonsense", "vmf_", "vmf_0123456789ab_", "vmf_zzzzzzzzzzzz_abc", "vmf_0123456789ab_x"],
)
def test_malformed_or_unknown_tokens_find_nobody(store: Store, token: str) -> None:
    users.add_user(store, "carol", "viewer")
    assert users.authenticate(store, token) is None


def test_a_guessed_secret_with_a_real_id_finds_nobody(store: Store) -> None:
    _, token = users.add_user(store, "dave", "viewer")
    token_id, _ = parse_token(token) or ("", "")
    assert users.authenticate(store, f"vmf_{token_id}_{'A' * 43}") is None


@pytest.mark.parametrize(
    ("name", "role", "project", "says"),
    [
        ("eve", "root", None, "unknown role 'root'"),
        ("bad name", "viewer", None, "user name 'bad name'"),
        ("eve", "viewer", "bad/project", "project 'bad/project'"),
        ("eve", "admin", "web", "without --project"),
    ],
)
def test_bad_input_writes_nothing(
    store: Store, name: str, role: str, project: str | None, says: str
) -> None:
    with pytest.raises(BadInputError, match=says):
        users.add_user(store, name, role, project)
    assert users.list_users(store) == []


def test_names_are_unique_among_active_users_and_free_again_after_removal(store: Store) -> None:
    users.add_user(store, "frank", "viewer")
    with pytest.raises(AlreadyExistsError):
        users.add_user(store, "frank", "admin")
    users.remove_user(store, "frank")
    with pytest.raises(NotFoundError):
        users.remove_user(store, "frank")
    with pytest.raises(NotFoundError):
        users.new_token(store, "frank")
    again, token = users.add_user(store, "frank", "planner")
    assert again.role is Role.PLANNER and users.authenticate(store, token) == again


def test_tags_are_replaced_whole(store: Store) -> None:
    assert accounts.set_vm_tags(store, "web1", ["project:web", "tier:1"]) == (
        "project:web", "tier:1",
    )  # fmt: skip
    assert accounts.set_vm_tags(store, "web1", ["tier:2"]) == ("tier:2",)
    accounts.set_vm_tags(store, "db1", ["project:db"])
    assert accounts.vm_tags(store) == {"db1": ("project:db",), "web1": ("tier:2",)}
    assert accounts.set_vm_tags(store, "web1", []) == ()


def test_the_audit_trail_refuses_update_and_delete_in_the_database(store: Store) -> None:
    first = audit_service.record(store, user="alice", remote="127.0.0.1", action="vms.tag",
                                 target="web1", result="ok", detail={"status": 200})  # fmt: skip
    audit_service.record(store, user="bob", remote="127.0.0.1", action="migrate",
                         target="db1", result="refused")  # fmt: skip
    for statement in (
        "UPDATE audit SET result = 'ok' WHERE user = 'bob'",
        "UPDATE audit SET user = 'nobody'",
        "DELETE FROM audit",
        f"DELETE FROM audit WHERE id = {first.id}",
    ):
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement.replace("user", '"user"')))
    if store.engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit"))
    found = audit_service.entries(store)
    assert [(e.user, e.action, e.target, e.result) for e in found] == [
        ("alice", "vms.tag", "web1", "ok"), ("bob", "migrate", "db1", "refused"),
    ]  # fmt: skip
    assert found[0].detail == {"status": 200}
    assert [e.user for e in audit_service.entries(store, user="bob")] == ["bob"]
    assert audit_service.entries(store, since="2999-01-01T00:00:00Z") == []
    assert len(audit_service.entries(store, since="1h")) == 2


def test_the_user_table_keeps_no_token_after_removal(store: Store) -> None:
    users.add_user(store, "gina", "viewer", password="pw")
    users.remove_user(store, "gina")
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT token_id, token_hash, password_hash, removed_at "
                                "FROM users")).one()  # fmt: skip
    assert (row.token_id, row.token_hash, row.password_hash) == (None, None, None)
    assert row.removed_at is not None


def test_a_limit_keeps_the_newest_entries_in_order(store: Store) -> None:
    for n in range(5):
        audit_service.record(store, user="u", remote="local", action=f"a{n}", target=None,
                             result="ok")  # fmt: skip
    assert [e.action for e in audit_service.entries(store, limit=2)] == ["a3", "a4"]
    assert [e.action for e in audit_service.entries(store)] == ["a0", "a1", "a2", "a3", "a4"]
    with pytest.raises(BadInputError, match="at least 1"):
        audit_service.entries(store, limit=0)
