"""`vmferry users add|list|remove|token`, and finding the user a token belongs to.

A token is ``vmf_<id>_<secret>``: 48 random bits of public id, stored in the clear to find
the user, and 256 random bits of secret (:func:`secrets.token_urlsafe`). Only an argon2
hash of the whole token is stored. Passwords (for the console's login) are argon2-hashed
too, with argon2-cffi's default cost; a token's hash is cheaper (its secret is random, not
chosen by a person, so guessing it is hopeless anyway), and a checked token is remembered
in this process by a SHA-256 of it until the user's stored hash changes.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from vmferry.errors import BadInputError
from vmferry.model.account import (
    Role,
    User,
    check_project,
    check_user_name,
    format_token,
    parse_token,
)
from vmferry.store import accounts
from vmferry.store.db import Store

__all__ = ["add_user", "authenticate", "list_users", "new_token", "remove_user"]

_TOKEN_HASHER = PasswordHasher(time_cost=2, memory_cost=16 * 1024, parallelism=1)
_PASSWORD_HASHER = PasswordHasher()
_CHECKED_MAX = 1024


def parse_role(role: str) -> Role:
    """The role named ``role``; :class:`BadInputError` naming the roles otherwise."""
    try:
        return Role(role)
    except ValueError:
        names = "|".join(r.value for r in Role)
        raise BadInputError(f"unknown role {role!r}: use --role {names}") from None


def add_user(
    store: Store, name: str, role: str, project: str | None = None,
    password: str | None = None,
) -> tuple[User, str]:  # fmt: skip
    """A new user and its token (shown once: only its hash is kept). Everything is checked
    before anything is written."""
    chosen = parse_role(role)
    for problem in (check_user_name(name), None if project is None else check_project(project)):
        if problem is not None:
            raise BadInputError(problem)
    if chosen is Role.ADMIN and project is not None:
        raise BadInputError("an admin acts on every project: add it without --project")
    if password is not None and not password:
        raise BadInputError("--password-stdin read an empty password")
    password_hash = None if password is None else _PASSWORD_HASHER.hash(password)
    token_id, token = _new_token()
    user = accounts.add_user(store, name, chosen, project, token_id, _TOKEN_HASHER.hash(token),
                             password_hash)  # fmt: skip
    return user, token


def list_users(store: Store) -> list[User]:
    return accounts.list_users(store)


def remove_user(store: Store, name: str) -> None:
    accounts.remove_user(store, name)


def new_token(store: Store, name: str) -> tuple[User, str]:
    """A new token for user ``name``; its old token stops working."""
    accounts.active_user(store, name)  # NotFoundError before any hashing
    token_id, token = _new_token()
    return accounts.replace_token(store, name, token_id, _TOKEN_HASHER.hash(token)), token


class _Checked:
    """Tokens this process has verified: SHA-256 of the token -> the hash it matched."""

    def __init__(self) -> None:
        self._seen: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def matched(self, token: str, stored_hash: str) -> bool:
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            if self._seen.get(key) == stored_hash:
                self._seen.move_to_end(key)
                return True
        return False

    def remember(self, token: str, stored_hash: str) -> None:
        key = hashlib.sha256(token.encode()).digest()
        with self._lock:
            self._seen[key] = stored_hash
            while len(self._seen) > _CHECKED_MAX:
                self._seen.popitem(last=False)


_CHECKED = _Checked()


def authenticate(store: Store, token: str) -> User | None:
    """The active user whose token ``token`` is; None for a malformed, wrong, replaced or
    removed token. One indexed read of the store; argon2 only for a token not yet seen with
    the stored hash."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    found = accounts.credentials_for_token(store, parsed[0])
    if found is None:
        return None
    if _CHECKED.matched(token, found.token_hash):
        return found.user
    try:
        _TOKEN_HASHER.verify(found.token_hash, token)
    except (VerificationError, InvalidHashError):
        return None
    _CHECKED.remember(token, found.token_hash)
    return found.user


def _new_token() -> tuple[str, str]:
    token_id = secrets.token_hex(6)
    return token_id, format_token(token_id, secrets.token_urlsafe(32))
