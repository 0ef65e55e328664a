"""`vmferry users add|list|remove|token`, and finding the user a token belongs to.

A token is ``vmf_<id>_<secret>``: 48 random bits of public id, stored in the clear to find
the user, and 256 random bits of secret (:func:`secrets.token_urlsafe`). Only an argon2
hash of the whole token is stored. Passwords (for the console's login) are argon2-hashed
too, with argon2-cffi's default cost; a token's hash is cheaper (its secret is random, not
chosen by a person, so guessing it is hopeless anyway), and a checked token is remembered
in this process by a SHA-256 of it until the user's stored hash changes.

A token may expire (``--expires 30d`` or ``--expires 2026-12-31T00:00Z``; by default it
never does). The expiry is read from the store with the hash at every check and compared
with the caller's clock (:func:`vmferry.model.account.token_expired`): the process's memory
of checked tokens says only that a token matches a hash, never that it is still valid.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
    token_expired,
)
from vmferry.store import accounts
from vmferry.store.db import Store

__all__ = [
    "TokenCheck",
    "add_user",
    "authenticate",
    "check_token",
    "list_users",
    "new_token",
    "parse_expiry",
    "remove_user",
]

_TOKEN_HASHER = PasswordHasher(time_cost=2, memory_cost=16 * 1024, parallelism=1)
_PASSWORD_HASHER = PasswordHasher()
_CHECKED_MAX = 1024
_DURATION = re.compile(r"(\d{1,9})([mhdw])")
_UNIT = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
         "w": timedelta(weeks=1)}  # fmt: skip
_EXPIRES_HELP = "a duration (30m, 12h, 30d, 2w) or an ISO 8601 time (2026-12-31T00:00Z)"


def parse_role(role: str) -> Role:
    """The role named ``role``; :class:`BadInputError` naming the roles otherwise."""
    try:
        return Role(role)
    except ValueError:
        names = "|".join(r.value for r in Role)
        raise BadInputError(f"unknown role {role!r}: use --role {names}") from None


def parse_expiry(text: str, now: datetime) -> datetime:
    """``--expires``: a duration from ``now`` (``30m``, ``12h``, ``30d``, ``2w``) or an ISO
    8601 time (UTC when it has no zone; a date alone is its midnight), which must be later
    than ``now``; :class:`BadInputError` otherwise. A duration ends on a whole second (the
    one before). Pure."""
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration is not None:
        count = int(duration.group(1))
        if count == 0:
            raise BadInputError(f"--expires {text!r}: a token must live longer than that; "
                                f"give {_EXPIRES_HELP}")  # fmt: skip
        try:
            return (now + count * _UNIT[duration.group(2)]).replace(microsecond=0)
        except OverflowError:
            raise BadInputError(f"--expires {text!r} is later than the calendar goes") from None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInputError(f"--expires {text!r}: give {_EXPIRES_HELP}") from None
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if moment <= now:
        raise BadInputError(f"--expires {text!r} has passed already; give a later time or "
                            "a duration (30d)")  # fmt: skip
    return moment.astimezone(UTC)


def add_user(
    store: Store, name: str, role: str, project: str | None = None,
    password: str | None = None, expires_at: datetime | None = None,
) -> tuple[User, str]:  # fmt: skip
    """A new user and its token (shown once: only its hash is kept), which expires at
    ``expires_at`` (None: never; see :func:`parse_expiry`). Everything is checked before
    anything is written."""
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
                             password_hash, expires_at)  # fmt: skip
    return user, token


def set_password(store: Store, name: str, password: str) -> None:
    """Give user ``name`` a new console password (argon2-hashed); its sessions end."""
    if not password:
        raise BadInputError("the password is empty")
    accounts.set_password_hash(store, name, _PASSWORD_HASHER.hash(password))


def list_users(store: Store) -> list[User]:
    return accounts.list_users(store)


def remove_user(store: Store, name: str) -> None:
    accounts.remove_user(store, name)


def new_token(store: Store, name: str, expires_at: datetime | None = None) -> tuple[User, str]:
    """A new token for user ``name``, expiring at ``expires_at`` (None: never, whatever the
    old one's expiry was); its old token stops working."""
    accounts.active_user(store, name)  # NotFoundError before any hashing
    token_id, token = _new_token()
    hashed = _TOKEN_HASHER.hash(token)
    return accounts.replace_token(store, name, token_id, hashed, expires_at), token


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


@dataclass(frozen=True)
class TokenCheck:
    """What a token is worth at a moment: its user while it is valid; ``expired`` when it
    is the user's token but its time has passed (said only to who holds the right token)."""

    user: User | None
    expired: bool = False


def check_token(store: Store, token: str, now: datetime | None = None) -> TokenCheck:
    """Check ``token`` at ``now`` (default: the clock's now, UTC). One indexed read of the
    store (the user, the hash, the expiry); argon2 only for a token not yet seen with the
    stored hash. A malformed, wrong, replaced or removed token has no user and is not said
    to be expired, whatever the expiry of the user its id names."""
    parsed = parse_token(token)
    if parsed is None:
        return TokenCheck(None)
    found = accounts.credentials_for_token(store, parsed[0])
    if found is None:
        return TokenCheck(None)
    if not _CHECKED.matched(token, found.token_hash):
        try:
            _TOKEN_HASHER.verify(found.token_hash, token)
        except (VerificationError, InvalidHashError):
            return TokenCheck(None)
        _CHECKED.remember(token, found.token_hash)
    if token_expired(found.expires_at, now or datetime.now(UTC)):
        return TokenCheck(None, expired=True)
    return TokenCheck(found.user)


def authenticate(store: Store, token: str, now: datetime | None = None) -> User | None:
    """The active user whose token ``token`` is, at ``now``; None for a malformed, wrong,
    replaced, expired or removed token (:func:`check_token` tells an expired one apart)."""
    return check_token(store, token, now).user


def _new_token() -> tuple[str, str]:
    token_id = secrets.token_hex(6)
    return token_id, format_token(token_id, secrets.token_urlsafe(32))
