"""The server's users (names, roles, token ids and argon2 hashes) and VMs' tags.

Hashing is not done here: the callers (:mod:`vmferry.service.users`) hand over hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vmferry.errors import AlreadyExistsError, NotFoundError
from vmferry.model.account import Role, User
from vmferry.store import console_sessions
from vmferry.store.db import Store
from vmferry.store.tables import UserRow, VmTagRow

__all__ = [
    "StoredCredentials",
    "active_user",
    "add_user",
    "credentials_for_token",
    "list_users",
    "remove_user",
    "replace_token",
    "set_vm_tags",
    "tags_of",
    "vm_tags",
]


@dataclass(frozen=True)
class StoredCredentials:
    """What the store holds to check a token: the user, the hash of its token and when the
    token expires (None: never)."""

    user: User
    token_hash: str
    expires_at: datetime | None = None


def add_user(
    store: Store, name: str, role: Role, project: str | None, token_id: str, token_hash: str,
    password_hash: str | None, token_expires_at: datetime | None = None,
) -> User:  # fmt: skip
    """A new user, its token expiring at ``token_expires_at`` (None: never);
    :class:`AlreadyExistsError` when an active user has that name (a removed one's row is
    taken over)."""
    now = datetime.now(UTC)
    try:
        with Session(store.engine) as session, session.begin():
            row = session.get(UserRow, name, with_for_update=True)
            if row is not None and row.removed_at is None:
                raise _exists(name)
            if row is None:
                row = UserRow(name=name)
                session.add(row)
            row.role, row.project = role.value, project
            row.token_id, row.token_hash, row.password_hash = token_id, token_hash, password_hash
            row.created_at, row.removed_at = now, None
            row.token_expires_at = _utc(token_expires_at)
            session.flush()
            return _user(row)
    except IntegrityError as exc:  # added by someone else between our read and insert
        raise _exists(name, exc) from exc


def list_users(store: Store) -> list[User]:
    """Every active user, by name."""
    with Session(store.engine) as session:
        rows = session.scalars(
            select(UserRow).where(UserRow.removed_at.is_(None)).order_by(UserRow.name)
        )
        return [_user(row) for row in rows]


def active_user(store: Store, name: str) -> User:
    """The active user ``name``; :class:`NotFoundError` if there is none."""
    with Session(store.engine) as session:
        return _user(_require(session, name))


def remove_user(store: Store, name: str) -> None:
    """Remove user ``name``: its token and password stop working at once."""
    with Session(store.engine) as session, session.begin():
        row = _require(session, name, lock=True)
        row.removed_at = datetime.now(UTC)
        row.token_id = row.token_hash = row.password_hash = None
        row.token_expires_at = None


def set_password_hash(store: Store, name: str, password_hash: str) -> None:
    """Give active user ``name`` a new password (its hash); its console sessions end."""
    with Session(store.engine) as session, session.begin():
        row = _require(session, name, lock=True)
        row.password_hash = password_hash
    console_sessions.delete_sessions_of(store, name)


def replace_token(
    store: Store, name: str, token_id: str, token_hash: str,
    token_expires_at: datetime | None = None,
) -> User:  # fmt: skip
    """Give user ``name`` a new token, expiring at ``token_expires_at`` (None: never); the
    old one stops working at once."""
    with Session(store.engine) as session, session.begin():
        row = _require(session, name, lock=True)
        row.token_id, row.token_hash = token_id, token_hash
        row.token_expires_at = _utc(token_expires_at)
        return _user(row)


def credentials_for_token(store: Store, token_id: str) -> StoredCredentials | None:
    """The active user whose token has the public id ``token_id``, with its token's hash."""
    with Session(store.engine) as session:
        row = session.scalars(
            select(UserRow).where(UserRow.token_id == token_id, UserRow.removed_at.is_(None))
        ).one_or_none()
        if row is None or row.token_hash is None:
            return None
        return StoredCredentials(_user(row), row.token_hash, _aware(row.token_expires_at))


# -- VM tags --------------------------------------------------------------------------------


def tags_of(store: Store, vm: str) -> tuple[str, ...]:
    """VM ``vm``'s tags, sorted."""
    with Session(store.engine) as session:
        return tuple(
            session.scalars(select(VmTagRow.tag).where(VmTagRow.vm == vm).order_by(VmTagRow.tag))
        )


def vm_tags(store: Store) -> dict[str, tuple[str, ...]]:
    """Every tagged VM's tags, by VM name."""
    found: dict[str, list[str]] = {}
    with Session(store.engine) as session:
        for row in session.scalars(select(VmTagRow).order_by(VmTagRow.vm, VmTagRow.tag)):
            found.setdefault(row.vm, []).append(row.tag)
    return {vm: tuple(tags) for vm, tags in found.items()}


def set_vm_tags(store: Store, vm: str, tags: list[str]) -> tuple[str, ...]:
    """Replace VM ``vm``'s tags with ``tags`` (checked by the caller); the tags it has now."""
    with Session(store.engine) as session, session.begin():
        session.execute(delete(VmTagRow).where(VmTagRow.vm == vm))
        session.add_all(VmTagRow(vm=vm, tag=tag) for tag in sorted(set(tags)))
    return tags_of(store, vm)


# -- internals -----------------------------------------------------------------------------


def _require(session: Session, name: str, *, lock: bool = False) -> UserRow:
    row = session.get(UserRow, name, with_for_update=lock)
    if row is None or row.removed_at is not None:
        raise NotFoundError(f"no user named {name!r}; `vmferry users list` lists them")
    return row


def _exists(name: str, cause: BaseException | None = None) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"a user named {name!r} exists already; `vmferry users token {name}` gives it a new "
        "token, `vmferry users remove` removes it",
        cause=cause,
    )


def _aware(moment: datetime | None) -> datetime | None:
    """A stored time with its zone (SQLite gives it back without: it was stored as UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _utc(moment: datetime | None) -> datetime | None:
    """A time to store: in UTC (SQLite keeps the wall clock and drops the zone), to the
    millisecond (as it is shown: what a user reads is what is stored)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("a token's expiry must carry a time zone")
    return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user(row: UserRow) -> User:
    expires = row.token_expires_at
    return User(name=row.name, role=Role(row.role), project=row.project,
                created_at=_iso(row.created_at),
                has_password=row.password_hash is not None,
                token_expires_at=None if expires is None else _iso(expires))  # fmt: skip
