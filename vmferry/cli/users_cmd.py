"""`vmferry users add|list|remove|token`: the server's users and their tokens.

`users add NAME --role ROLE --json` prints ``{"name", "role", "token"}``; without
``--json``, the token alone on one line. The token is shown once: only its argon2 hash is
stored. Each change is recorded in the audit trail as done by ``local:<login>``.
"""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.client.remote import remote_api
from vmferry.errors import BadInputError
from vmferry.service import audit as audit_service
from vmferry.service import users as users_service
from vmferry.store.db import Store, open_store

app = typer.Typer(help="The vmferry server's users, roles and tokens.", no_args_is_help=True)


def _audit(store: Store, action: str, target: str, detail: dict[str, object]) -> None:
    audit_service.record(store, user=audit_service.local_user(), remote="local",
                         action=action, target=target, result="ok", detail=detail)  # fmt: skip


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
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Add a user and print its token (shown once)."""
    users_service.parse_role(role)  # a bad role fails before stdin is read
    password = _password_from_stdin() if password_stdin else None
    with open_store() as store:
        user, token = users_service.add_user(store, name, role, project, password)
        _audit(store, "users.add", user.name, {"role": user.role.value, "project": project})
    if json_out:
        print_json({"name": user.name, "role": user.role, "token": token})
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
    table = Table("name", "role", "project", "password", "created")
    for user in found:
        table.add_row(user.name, user.role.value, user.project or "-",
                      "yes" if user.has_password else "no", user.created_at)  # fmt: skip
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
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Give a user a new token (printed once); the old one stops working."""
    with open_store() as store:
        user, new = users_service.new_token(store, name)
        _audit(store, "users.token", name, {})
    if json_out:
        print_json({"name": user.name, "role": user.role, "token": new})
    else:
        sys.stdout.write(new + "\n")
