"""Idempotency keys of the API's POSTs that start work: one row per (user, key), taken
before the work starts (the primary key makes two concurrent requests with one key
impossible), then given the job it started."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vmferry.store.db import Store
from vmferry.store.tables import ApiRequestRow

__all__ = ["Claim", "claim", "forget", "settle"]


@dataclass(frozen=True)
class Claim:
    """``new``: this request may start the work. Otherwise the key was used before: with
    ``same_request`` or not, and ``job_id`` the job it started (None: still starting)."""

    new: bool
    same_request: bool = True
    job_id: str | None = None


def claim(store: Store, user: str, key: str, request_hash: str) -> Claim:
    """Take ``key`` for ``user``'s request (whose body hashes to ``request_hash``)."""
    try:
        with Session(store.engine) as session, session.begin():
            session.add(ApiRequestRow(user=user, key=key, request_hash=request_hash,
                                      job_id=None, created_at=datetime.now(UTC)))  # fmt: skip
        return Claim(new=True)
    except IntegrityError:
        with Session(store.engine) as session:
            row = session.get(ApiRequestRow, (user, key))
            if row is None:  # pragma: no cover - forgotten between the insert and the read
                return claim(store, user, key, request_hash)
            return Claim(False, row.request_hash == request_hash, row.job_id)


def settle(store: Store, user: str, key: str, job_id: str) -> None:
    """The request with ``key`` started job ``job_id``."""
    with Session(store.engine) as session, session.begin():
        session.execute(update(ApiRequestRow)
                        .where(ApiRequestRow.user == user, ApiRequestRow.key == key)
                        .values(job_id=job_id))  # fmt: skip


def forget(store: Store, user: str, key: str) -> None:
    """The request with ``key`` started nothing (it failed first): the key is free again."""
    with Session(store.engine) as session, session.begin():
        session.execute(delete(ApiRequestRow).where(ApiRequestRow.user == user,
                                                    ApiRequestRow.key == key))  # fmt: skip
