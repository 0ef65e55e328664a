"""Users of a vmferry server, their roles, their tokens' public form, VM tags, and the
audit trail's entries. Pure: no hashing, no randomness, no store."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TOKEN_PREFIX = "vmf"
PROJECT_TAG = "project:"  # a VM tagged "project:P" belongs to project P
MAX_TAGS = 64

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/=@-]{0,127}")
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")


class Role(enum.StrEnum):
    """What a user may do (see :mod:`vmferry.server.roles`)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    PLANNER = "planner"
    VIEWER = "viewer"


@dataclass(frozen=True)
class User:
    """A user of the server; the token and password are kept only as argon2 hashes, never
    here."""

    name: str
    role: Role
    project: str | None
    created_at: str  # ISO 8601, UTC
    has_password: bool = False
    token_expires_at: str | None = None  # ISO 8601, UTC; None: the token never expires


@dataclass(frozen=True)
class AuditEntry:
    """One row of the append-only audit trail."""

    at: str  # ISO 8601, UTC
    user: str | None  # None: not authenticated
    remote: str  # the client's address, or "local" for the command line
    action: str  # e.g. "vms.tag", "jobs.cancel", "users.add"
    target: str | None  # what it acted on (a VM, a job id, a user name)
    result: str  # "ok", "refused", "rejected" or "error"
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


def check_user_name(name: str) -> str | None:
    """Why ``name`` cannot be a user's name, or None when it can."""
    if not _NAME.fullmatch(name):
        return (
            f"user name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return None


def check_project(project: str) -> str | None:
    """Why ``project`` cannot name a project, or None when it can."""
    if not _NAME.fullmatch(project):
        return (
            f"project {project!r} must be 1-64 letters, digits, '_', '.', '@' or '-', "
            "starting with a letter or digit"
        )
    return None


def check_tags(tags: list[str]) -> str | None:
    """Why ``tags`` cannot be a VM's tags, or None when they can."""
    if len(tags) > MAX_TAGS:
        return f"a VM takes at most {MAX_TAGS} tags, not {len(tags)}"
    for tag in tags:
        if not _TAG.fullmatch(tag):
            return (
                f"tag {tag!r} must be 1-128 letters, digits or '_.:/=@-', starting with a "
                "letter or digit"
            )
    return None


def project_of(tags: tuple[str, ...] | list[str]) -> frozenset[str]:
    """The projects a VM with ``tags`` belongs to (its ``project:P`` tags)."""
    return frozenset(t[len(PROJECT_TAG) :] for t in tags if t.startswith(PROJECT_TAG))


def format_token(token_id: str, secret: str) -> str:
    """A token as users see it: ``vmf_<id>_<secret>`` (the id is public: it finds the user
    without trying every hash)."""
    return f"{TOKEN_PREFIX}_{token_id}_{secret}"


def parse_token(token: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a token in the form :func:`format_token` makes, else None."""
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not _TOKEN_ID.fullmatch(token_id) or not secret:
        return None
    return token_id, secret


def token_expired(expires_at: datetime | None, now: datetime) -> bool:
    """Whether a token that expires at ``expires_at`` (None: never) is expired at ``now``:
    from its expiry on, not a moment later. Both times must carry a zone."""
    return expires_at is not None and now >= expires_at


def audit_result(status_code: int) -> str:
    """The audit trail's word for an HTTP status: ok, refused (401, 403), rejected (other
    4xx) or error (5xx)."""
    if status_code < 400:
        return "ok"
    if status_code in (401, 403):
        return "refused"
    if status_code < 500:
        return "rejected"
    return "error"
