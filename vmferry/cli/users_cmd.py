"""`vmferry users add|list|remove|token`: the server's users and their tokens.

`users add NAME --role ROLE --json` prints ``{"name", "role", "token",
"token_expires_at"}``; without ``--json``, the token alone on one line. The token is shown
once: only its argon2 hash is stored. ``--expires 30d`` (or an ISO 8601 time) makes the
token expire; by default it never does. Each change is recorded in the audit trail as done
by ``local:<login>``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.client.remote import remote_api
from vmferry.errors import BadInputError
from vmferry.model.account import User
from vmferry.service import audit as audit_service
from vmferry.service import users as users_service
from vmferry.store.db import Store, open_store

app = typer.Typer(help="The vmferry server's users, roles and tokens.", no_args_is_help=True)


def _audit(store: Store, action: str, target: str, detail: dict[str, object]) -> None:
    audit_service.record(store, user=audit_service.local_user(), remote="local",
                         action=action, target=target, result="ok", detail=detail)  # fmt: skip


_EXPIRES_HELP = (
    "When the token expires: a duration (30m, 12h, 30d, 2w) or an ISO 8601 time "
    "(2026-12-31T00:00Z; UTC without a zone). Default: never."
)


def _expiry(expires: str | None) -> datetime | None:
    return None if expires is None else users_service.parse_expiry(expires, datetime.now(UTC))


def _token_json(user: User, token: str) -> dict[str, object]:
    return {"name": user.name, "role": user.role, "token": token,
            "token_expires_at": user.token_expires_at}  # fmt: skip


def _expires_cell(user: User, now: datetime) -> str:
    if user.token_expires_at is None:
        return "never"
    moment = datetime.fromisoformat(user.token_expires_at.replace("Z", "+00:00"))
    return user.token_expires_at + (" (expired)" if moment <= now else "")


def _password_from_stdin() -> str:
    text = sys.stdin.read()
    password = text[:-1] if text.endswith("\n") else text
    if "\n" in password:
        raise BadInputError("--password-stdin takes one line (the password), not several")
    return password


@app.command("add")
def add(
    name: str = typer.Argument(..., help="The user's name."),
    role: str = typer.Option(..., "--role", help="admin | operator | planner | viewer."),
    project: str | None = typer.Option(
        None,
        "--project",
        help="Bind the user to a project: it acts only on VMs tagged project:P (self-service).",
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Also set a password (for the console), read from stdin."
    ),
    expires: str | None = typer.Option(None, "--expires", help=_EXPIRES_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a user and print its token (shown once)."""
    users_service.parse_role(role)  # a bad role or expiry fails before stdin is read
    expires_at = _expiry(expires)
    password = _password_from_stdin() if password_stdin else None
    with open_store() as store:
        user, token = users_service.add_user(store, name, role, project, password, expires_at)
        detail: dict[str, object] = {"role": user.role.value, "project": project,
                                     "token_expires_at": user.token_expires_at}  # fmt: skip
        _audit(store, "users.add", user.name, detail)
    if json_out:
        print_json(_token_json(user, token))
    else:
        sys.stdout.write(token + "\n")


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The active users (never their tokens)."""
    api = remote_api()
    if api is not None:
        with api:
            found = api.users()
    else:
        with open_store() as store:
            found = users_service.list_users(store)
    if json_out:
        print_json(found)
        return
    table = Table("name", "role", "project", "password", "created", "token expires")
    now = datetime.now(UTC)
    for user in found:
        table.add_row(user.name, user.role.value, user.project or "-",
                      "yes" if user.has_password else "no", user.created_at,
                      _expires_cell(user, now))  # fmt: skip
    console.print(table, highlight=False)


@app.command("remove")
def remove(name: str = typer.Argument(..., help="The user's name.")) -> None:
    """Remove a user: its token stops working at once."""
    with open_store() as store:
        users_service.remove_user(store, name)
        _audit(store, "users.remove", name, {})
    console.print(f"user {name} removed", highlight=False)


@app.command("token")
def token(
    name: str = typer.Argument(..., help="The user's name."),
    expires: str | None = typer.Option(None, "--expires", help=_EXPIRES_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Give a user a new token (printed once); the old one stops working."""
    expires_at = _expiry(expires)
    with open_store() as store:
        user, new = users_service.new_token(store, name, expires_at)
        _audit(store, "users.token", name, {"token_expires_at": user.token_expires_at})
    if json_out:
        print_json(_token_json(user, new))
    else:
        sys.stdout.write(new + "\n")
