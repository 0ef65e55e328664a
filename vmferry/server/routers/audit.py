"""`GET /audit`: the audit trail as a JSON list, or JSON lines with ``?format=jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints

from vmferry.server.auth import require
from vmferry.server.context import Context
from vmferry.server.roles import Action
from vmferry.server.schemas import AuditOut
from vmferry.service import audit as audit_service

router = APIRouter(prefix="/audit", tags=["audit"])

Age = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,12}[smhd]$")]


@router.get(
    "", response_model=list[AuditOut], dependencies=[Depends(require(Action.AUDIT_READ))],
    responses={200: {"content": {"application/x-ndjson": {}}}},
)  # fmt: skip
def audit_trail(
    context: Context,
    since: Annotated[
        datetime | Age | None, Query(description="an ISO 8601 time, or an age: 30m, 2h, 7d")
    ] = None,
    user: Annotated[str | None, Query(description="only this user's entries")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
    format: Annotated[Literal["json", "jsonl"], Query()] = "json",
) -> list[AuditOut] | StreamingResponse:
    """Who did what, when, from where, and the result: the ``limit`` newest entries,
    oldest first."""
    if isinstance(since, datetime):
        since = (since if since.tzinfo else since.replace(tzinfo=UTC)).isoformat()
    found = audit_service.entries(context.store, since=since, user=user, limit=limit)
    rows = [audit_service.as_json(e) for e in found]
    if format == "jsonl":

        def lines() -> Iterator[str]:
            for row in rows:
                yield json.dumps(row) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")
    return [AuditOut(**row) for row in rows]
