"""`vmferry audit [--since] [--user] [--limit] [--json]`: the audit trail's newest entries
(1000 by default), oldest first.

JSON: a list of ``{"at", "user", "remote", "action", "target", "result", "detail"}``.
"""

from __future__ import annotations

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.client.remote import remote_api
from vmferry.service import audit as audit_service
from vmferry.store.db import open_store


def audit(
    since: str | None = typer.Option(
        None, "--since", help="Only entries at or after this time (ISO 8601) or age (30m, 2h, 7d)."
    ),
    user: str | None = typer.Option(None, "--user", help="Only this user's entries."),
    limit: int = typer.Option(1000, "--limit", min=1, help="The newest this many entries."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The audit trail: who did what, when, from where, and the result."""
    api = remote_api()
    if api is not None:
        with api:
            found = api.audit(since=since, user=user, limit=limit)
    else:
        with open_store() as store:
            found = audit_service.entries(store, since=since, user=user, limit=limit)
    if json_out:
        print_json([audit_service.as_json(e) for e in found])
        return
    table = Table("at", "user", "from", "action", "target", "result")
    for e in found:
        table.add_row(e.at, e.user or "-", e.remote, e.action, e.target or "-", e.result)
    console.print(table, highlight=False)
