"""The web console's sessions, kept server-side, and the password hash its login checks.

A session is found by the SHA-256 of its cookie's value (the value itself is never
stored: a copy of the database opens no session); it names its user, carries the CSRF
token of its forms and ends at ``expires_at``. Logging out deletes it; removing a user
ends its sessions at once, as the console reads the user's row at every request.
Hashing and randomness are the caller's (:mod:`vmferry.console.session`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vmferry.store.db import Store
from vmferry.store.tables import ConsoleSessionRow, UserRow

__all__ = [
    "StoredSession",
    "create_session",
    "delete_session",
    "delete_sessions_of",
    "find_session",
    "password_hash_of",
]


@dataclass(frozen=True)
class StoredSession:
    """A live session: its user's name, its forms' CSRF token and when it ends."""

    user: str
    csrf_token: str
    expires_at: datetime


def create_session(
    store: Store, id_hash: str, user: str, csrf_token: str, now: datetime, expires_at: datetime
) -> None:
    """Store a new session (and forget the sessions that ended before ``now``)."""
    with Session(store.engine) as session, session.begin():
        session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < now))
        session.add(ConsoleSessionRow(id_hash=id_hash, user=user, csrf_token=csrf_token,
                                      created_at=now, expires_at=expires_at))  # fmt: skip


def find_session(store: Store, id_hash: str, now: datetime) -> StoredSession | None:
    """The session whose cookie hashes to ``id_hash`` if it has not ended at ``now``, and
    its user is still active (not removed); None otherwise."""
    with Session(store.engine) as session:
        found = session.execute(
            select(ConsoleSessionRow, UserRow.removed_at)
            .join(UserRow, UserRow.name == ConsoleSessionRow.user)
            .where(ConsoleSessionRow.id_hash == id_hash)
        ).one_or_none()
    if found is None:
        return None
    row, removed_at = found
    expires_at = _aware(row.expires_at)
    if removed_at is not None or expires_at <= now:
        return None
    return StoredSession(row.user, row.csrf_token, expires_at)


def delete_session(store: Store, id_hash: str) -> None:
    """End one session (logout)."""
    with Session(store.engine) as session, session.begin():
        session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id_hash == id_hash))


def delete_sessions_of(store: Store, user: str) -> int:
    """End every session of ``user``; how many there were."""
    with Session(store.engine) as session, session.begin():
        done = session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.user == user))
        return int(getattr(done, "rowcount", 0) or 0)


def password_hash_of(store: Store, user: str) -> str | None:
    """The argon2 hash of active user ``user``'s password (None: no such user, a removed
    one, or one without a password)."""
    with Session(store.engine) as session:
        row = session.get(UserRow, user)
        if row is None or row.removed_at is not None:
            return None
        return row.password_hash


def _aware(moment: datetime) -> datetime:
    """A stored time with its zone (SQLite gives it back without: it was stored as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
