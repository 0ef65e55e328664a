"""The audit trail of the API: a row for every mutating request (POST, PUT, PATCH,
DELETE) whose token was valid, whatever its result (done, refused by a role, malformed,
not found, failed). The row is written before the response leaves, so a client that got
its answer finds its row.

A request with no valid token writes nothing (401): nothing is known of who sent it, and
a stranger could otherwise fill the table. Neither does a body over the size limit (413),
refused before the token is read.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vmferry.model.account import audit_result
from vmferry.service import audit as audit_service
from vmferry.store.db import Store

__all__ = ["AuditTrail"]

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("vmferry.server")


class AuditTrail:
    """ASGI middleware writing the audit row of each mutating request."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        recorded = False

        async def send_recorded(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(scope, state, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_recorded)
        except Exception:
            if not recorded:
                recorded = True
                await self._record(scope, state, 500)
            raise

    async def _record(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        user = state.get("user")
        if user is None:
            return
        client = scope.get("client")
        remote = str(client[0]) if client else "unknown"
        action = state.get("action") or f"{scope['method']} {scope['path']}"
        detail: dict[str, Any] = {"method": scope["method"], "path": scope["path"],
                                  "status": status}  # fmt: skip
        if state.get("rule") is not None:
            detail["rule"] = state["rule"]
        try:
            await run_in_threadpool(
                audit_service.record, self.store, user=str(user), remote=remote,
                action=str(action), target=state.get("target"), result=audit_result(status),
                detail=detail,
            )  # fmt: skip
        except Exception:  # the answer still goes out; the log says the row is missing
            log.exception("could not write the audit row of %s %s", scope["method"],
                          scope["path"])  # fmt: skip
