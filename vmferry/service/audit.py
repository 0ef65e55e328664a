"""The audit trail: record an action, read the trail (`vmferry audit`, `GET /audit`)."""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from vmferry.errors import BadInputError
from vmferry.model.account import AuditEntry
from vmferry.store import audit as audit_store
from vmferry.store.db import Store

__all__ = ["as_json", "entries", "local_user", "parse_since", "record"]

_RELATIVE = re.compile(r"(\d+)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def record(
    store: Store, *, user: str | None, remote: str, action: str, target: str | None,
    result: str, detail: dict[str, Any] | None = None,
) -> AuditEntry:  # fmt: skip
    """Append one entry, stamped now."""
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    entry = AuditEntry(at=at, user=user, remote=remote, action=action, target=target,
                       result=result, detail=detail or {})  # fmt: skip
    return audit_store.append(store, entry)


def local_user() -> str:
    """Who runs the command line, as the audit trail names them: ``local:<login>``."""
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name for this uid
        return "local:?"


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: an ISO 8601 time (UTC when it has no zone) or an age such as ``30m``,
    ``2h``, ``7d``; :class:`BadInputError` otherwise. Pure."""
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
    if relative is not None:
        try:
            return now - timedelta(seconds=int(relative.group(1)) * _UNIT_S[relative.group(2)])
        except OverflowError:  # older than datetime can say: everything
            return datetime.min.replace(tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadInputError(
            f"--since {text!r}: give an ISO 8601 time (2026-12-04T08:00:00Z) or an age "
            "(30m, 2h, 7d)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def entries(
    store: Store, *, since: str | None = None, user: str | None = None, limit: int = 1000
) -> list[AuditEntry]:
    """The ``limit`` newest entries of the trail, oldest first (at or after ``since``, of
    ``user`` only, when given)."""
    if limit < 1:
        raise BadInputError(f"the audit limit must be at least 1 (got {limit})")
    moment = None if since is None else parse_since(since, datetime.now(UTC))
    return audit_store.entries(store, since=moment, user=user, limit=limit)


def as_json(entry: AuditEntry) -> dict[str, Any]:
    """An entry as `vmferry audit --json` and `GET /audit` give it."""
    return {"at": entry.at, "user": entry.user, "remote": entry.remote, "action": entry.action,
            "target": entry.target, "result": entry.result, "detail": entry.detail}  # fmt: skip
