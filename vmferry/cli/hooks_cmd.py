"""`vmferry hooks add|list|remove`: a VM's pre-migrate, post-migrate and on-failure hooks
(docs/hooks.md). A plan's hooks are in its YAML (``hooks:``), not here.

`hooks list --json` prints a list of ``{"vm", "name", "phase", "kind", "target",
"timeout_s", "retries", "required", "secret_env"}``; ``secret_env`` names the environment
variable holding a webhook's secret (the secret itself is neither stored nor printed).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.model.hook import Hook
from vmferry.service import audit as audit_service
from vmferry.service import hooks as hooks_service
from vmferry.store.db import Store, open_store

app = typer.Typer(help="Hooks run before a VM's move, after it, and when it fails.",
                  no_args_is_help=True)  # fmt: skip


def _audit(store: Store, action: str, target: str, detail: dict[str, object]) -> None:
    audit_service.record(store, user=audit_service.local_user(), remote="local",
                         action=action, target=target, result="ok", detail=detail)  # fmt: skip


def _row(vm: str, hook: Hook) -> dict[str, Any]:
    return {"vm": vm, "name": hook.name, "phase": hook.phase.value, "kind": hook.kind.value,
            "target": hook.target, "timeout_s": hook.timeout_s, "retries": hook.retries,
            "required": hook.required, "secret_env": hook.secret_env}  # fmt: skip


@app.command("add")
def add(
    vm: str = typer.Argument(..., help="The VM's name (as libvirt knows it)."),
    name: str = typer.Argument(..., help="The hook's name (unique for the VM)."),
    phase: str = typer.Option(..., "--phase", help="pre-migrate | post-migrate | on-failure."),
    url: str | None = typer.Option(
        None, "--url", help="A webhook: POST the job's JSON here (http:// or https://)."
    ),
    exec_path: str | None = typer.Option(
        None, "--exec", help="An executable (absolute path): the job's JSON on its stdin."
    ),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds per attempt."),
    retries: int | None = typer.Option(
        None,
        "--retries",
        help="Webhooks: tries after the first on connection errors and 5xx (default 2).",
    ),
    required: bool = typer.Option(
        False, "--required", help="post-migrate: its failure fails the move's verification."
    ),
    secret_env: str | None = typer.Option(
        None,
        "--secret-env",
        help="Webhooks: the environment variable holding the HMAC "
        "secret (needed where the move runs).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Declare a hook for a VM's moves."""
    with open_store() as store:
        hook = hooks_service.add_hook(store, vm, name, phase, url=url, exec_path=exec_path,
                                      timeout_s=timeout_s, retries=retries, required=required,
                                      secret_env=secret_env)  # fmt: skip
        _audit(store, "hooks.add", vm, {"hook": hook.name, "phase": hook.phase.value,
                                        "kind": hook.kind.value})  # fmt: skip
    if json_out:
        print_json(_row(vm, hook))
        return
    console.print(f"{vm}: {hook.phase} hook {hook.name} ({hook.kind}) added", highlight=False)


@app.command("list")
def list_(
    vm: str | None = typer.Argument(None, help="Only this VM's hooks."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The hooks VMs declare."""
    with open_store() as store:
        found = hooks_service.list_hooks(store, vm)
    rows = [_row(v, h) for v, hooks in found.items() for h in hooks]
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print(f"{vm or 'no VM'} has no hooks" if vm else "no VM has hooks",
                      highlight=False)  # fmt: skip
        return
    table = Table("vm", "name", "phase", "kind", "target", "timeout", "retries", "required",
                  "secret from")  # fmt: skip
    for r in rows:
        table.add_row(r["vm"], r["name"], r["phase"], r["kind"], r["target"],
                      f"{r['timeout_s']:g} s", str(r["retries"]), "yes" if r["required"] else "no",
                      r["secret_env"] or "-")  # fmt: skip
    console.print(table, highlight=False)


@app.command("remove")
def remove(
    vm: str = typer.Argument(..., help="The VM's name."),
    name: str = typer.Argument(..., help="The hook's name."),
) -> None:
    """Forget one of a VM's hooks."""
    with open_store() as store:
        hooks_service.remove_hook(store, vm, name)
        _audit(store, "hooks.remove", vm, {"hook": name})
    console.print(f"{vm}: hook {name} removed", highlight=False)
