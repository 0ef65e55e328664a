"""Login, sessions, CSRF and the console's security headers.

- The session cookie (``vmferry_session``) holds 256 random bits; the store keeps only
  their SHA-256 (:mod:`vmferry.store.console_sessions`) with the user, the CSRF token of
  the session's forms and the end of the session (:data:`SESSION_HOURS` after login).
  The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/`` and ``Secure`` when the
  request came over TLS.
- Every POST of the console carries the session's CSRF token in the hidden field
  ``csrf_token``; a POST without it, or with another, is refused (403). The login form,
  which has no session yet, carries a token bound to a short-lived cookie of its own
  (``vmferry_login``, the same flags): a page of another site cannot read it.
- Passwords are checked against the user's argon2 hash (``vmferry users add NAME
  --password-stdin``); an unknown user costs the same argon2 work as a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request
from starlette.responses import Response

from vmferry.errors import NotFoundError
from vmferry.model.account import User, check_user_name
from vmferry.store import accounts, console_sessions
from vmferry.store.db import Store

__all__ = [
    "CSP",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "SESSION_HOURS",
    "ConsoleSession",
    "LoginRequired",
    "check_password",
    "clear_session_cookie",
    "csrf_matches",
    "end_session",
    "form_of",
    "new_login_token",
    "open_session",
    "safe_next",
    "secure_headers",
    "session_of",
    "set_login_cookie",
    "set_session_cookie",
]

SESSION_COOKIE = "vmferry_session"
LOGIN_COOKIE = "vmferry_login"
SESSION_HOURS = 12
LOGIN_FORM_S = 3600
MAX_FORM_BYTES = 64 * 1024
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_HASHER = PasswordHasher()
# Verified when the user does not exist, so an unknown name costs as much as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


class LoginRequired(Exception):
    """No live session: the console answers with the login page (a redirect)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class ConsoleSession:
    """The user of a request and its forms' CSRF token."""

    user: User
    csrf_token: str
    id_hash: str


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] | None = getattr(request.app.state, "vmferry_clock", None)
    return clock() if clock is not None else datetime.now(UTC)


def check_password(store: Store, name: str, password: str) -> User | None:
    """The active user ``name`` if ``password`` is its password; None otherwise (an
    unknown name, a user without a password, a wrong password)."""
    stored = None if check_user_name(name) else console_sessions.password_hash_of(store, name)
    try:
        _HASHER.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if stored is None:  # pragma: no cover - the dummy's password is never known
        return None
    try:
        return accounts.active_user(store, name)
    except NotFoundError:  # removed between the two reads
        return None


def open_session(store: Store, request: Request, user: User) -> tuple[str, ConsoleSession]:
    """A new session of ``user``: the cookie's value and the session."""
    value = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = _now(request)
    console_sessions.create_session(store, _hash(value), user.name, csrf, now,
                                    now + timedelta(hours=SESSION_HOURS))  # fmt: skip
    return value, ConsoleSession(user, csrf, _hash(value))


def session_of(store: Store, request: Request) -> ConsoleSession | None:
    """The request's live session (None: no cookie, an unknown, ended or logged-out
    session, or its user was removed)."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value or len(value) > 128:
        return None
    id_hash = _hash(value)
    found = console_sessions.find_session(store, id_hash, _now(request))
    if found is None:
        return None
    try:
        user = accounts.active_user(store, found.user)
    except NotFoundError:
        return None
    return ConsoleSession(user, found.csrf_token, id_hash)


def end_session(store: Store, session: ConsoleSession) -> None:
    console_sessions.delete_session(store, session.id_hash)


def csrf_matches(expected: str, given: str | None) -> bool:
    """Whether the form's ``given`` token is ``expected`` (in constant time)."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_HOURS * 3600, path="/",
                        httponly=True, samesite="strict", secure=_secure(request))  # fmt: skip


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_secure(request))  # fmt: skip


def set_login_cookie(response: Response, request: Request, value: str | None) -> None:
    """The login form's own CSRF cookie (``None``: remove it)."""
    if value is None:
        response.delete_cookie(LOGIN_COOKIE, path="/login", httponly=True, samesite="strict",
                               secure=_secure(request))  # fmt: skip
        return
    response.set_cookie(LOGIN_COOKIE, value, max_age=LOGIN_FORM_S, path="/login",
                        httponly=True, samesite="strict", secure=_secure(request))  # fmt: skip


async def form_of(request: Request) -> dict[str, str]:
    """The request's urlencoded form (the first value of each field); an empty form for
    any other body. Read once, then kept in the request's state."""
    cached: dict[str, str] | None = getattr(request.state, "console_form", None)
    if cached is not None:
        return cached
    form: dict[str, str] = {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body = await request.body()
        if len(body) <= MAX_FORM_BYTES:
            for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
                form.setdefault(key, value)
    request.state.console_form = form
    return form


def safe_next(path: str | None) -> str:
    """Where to go after login: a path of this site (``/...``), never another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def secure_headers(response: Response) -> Response:
    """The headers of every console page: the Content-Security-Policy (no inline script),
    no sniffing, no framing, no referrer to other sites, not cached."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response
