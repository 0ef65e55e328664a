"""`vmferry projects set|show|list|remove`: what each project's self-service users may
move, how and when (docs/server.md).

`projects show --json` prints ``{"project", "strategies", "windows", "tz"}``; `projects
list --json` a list of them. A project without a policy: its self-service users move
nothing (the API's 403 names the rule ``self-service.no-policy``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.model.project_policy import ProjectPolicy
from vmferry.service import audit as audit_service
from vmferry.service import projects as projects_service
from vmferry.store.db import Store, open_store

app = typer.Typer(help="Self-service policies: the strategies and windows of each project.",
                  no_args_is_help=True)  # fmt: skip


def _audit(store: Store, action: str, target: str, detail: dict[str, object]) -> None:
    audit_service.record(store, user=audit_service.local_user(), remote="local",
                         action=action, target=target, result="ok", detail=detail)  # fmt: skip


def _doc(policy: ProjectPolicy) -> dict[str, Any]:
    return {"project": policy.project, "strategies": list(policy.strategies),
            "windows": list(policy.window_texts), "tz": policy.tz}  # fmt: skip


@app.command("set")
def set_(
    project: str = typer.Argument(..., help="The project (users bound with --project P)."),
    strategies: str = typer.Option(
        ..., "--strategies", help="Comma-separated: live, postcopy, warm, cold."
    ),
    window: Annotated[
        list[str] | None,
        typer.Option(
            "--window",
            help="A weekly window: 'Sat 22:00-Sun 04:00', 'Fri 22:00-02:00', "
            "'daily 12:00-13:00' or 'always' (repeatable).",
        ),
    ] = None,
    tz: str = typer.Option("UTC", "--tz", help="The windows' time zone (IANA: Europe/Paris)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Set (or replace) a project's self-service policy."""
    with open_store() as store:
        policy = projects_service.set_policy(store, project, strategies, window or [], tz)
        _audit(store, "projects.set", project, _doc(policy))
    if json_out:
        print_json(_doc(policy))
        return
    _print(policy)


@app.command("show")
def show(
    project: str = typer.Argument(...),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """A project's self-service policy."""
    with open_store() as store:
        policy = projects_service.show_policy(store, project)
    if json_out:
        print_json(_doc(policy))
        return
    _print(policy)


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every project's self-service policy."""
    with open_store() as store:
        found = projects_service.list_policies(store)
    if json_out:
        print_json([_doc(p) for p in found])
        return
    table = Table("project", "strategies", "windows", "time zone")
    for p in found:
        table.add_row(p.project, ",".join(p.strategies), "; ".join(p.window_texts), p.tz)
    console.print(table, highlight=False)


@app.command("remove")
def remove(project: str = typer.Argument(...)) -> None:
    """Forget a project's policy: its self-service users then move nothing."""
    with open_store() as store:
        projects_service.remove_policy(store, project)
        _audit(store, "projects.remove", project, {})
    console.print(f"project {project}: policy removed", highlight=False)


def _print(policy: ProjectPolicy) -> None:
    console.print(f"project {policy.project}", highlight=False)
    console.print(f"  strategies {', '.join(policy.strategies)}", highlight=False)
    for w in policy.windows:
        console.print(f"  window {w.text} ({policy.tz})", highlight=False)
