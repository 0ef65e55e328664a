"""`vmferry rehearse VM --to HOST`: a throw-away copy of the VM booted on the destination in
an isolated network, checked, timed, removed (docs/storage.md)."""

from __future__ import annotations

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json, progress_printer
from vmferry.errors import MigrationFailedError
from vmferry.service.rehearse import Rehearsal
from vmferry.service.rehearse import rehearse as rehearse_service


def rehearse(
    vm: str = typer.Argument(..., help="The running VM."),
    to: str = typer.Option(..., "--to", help="The registered host to rehearse the move to."),
    pool: str | None = typer.Option(
        None,
        "--pool",
        help="A storage pool both hosts see, for the backup the copy boots "
        "from (default: the pool that holds the VM's disks).",
    ),
    boot_timeout: float = typer.Option(
        300, "--boot-timeout", min=5, help="Seconds the copy may take to run and answer."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Back the VM's disks up while it runs, boot a copy of it on the destination with its
    NICs on an isolated network (nothing reaches the VM's own), check that it runs and its
    guest agent answers, time each phase, then remove the copy, its overlays, the backups
    and the network. The VM itself keeps running untouched. Exit 4 when the copy did not
    come up.

    JSON: {"vm", "destination", "status", "phases_ms": {...}, "verification": {...},
    "left_behind": [], "job_id", "reason"}."""
    done = rehearse_service(vm, to, pool=pool, boot_timeout_s=boot_timeout,
                            note=progress_printer())  # fmt: skip
    if json_out:
        print_json(rehearsal_json(done))
    else:
        console.print(_table(done))
    if done.status != "completed":
        raise MigrationFailedError(f"rehearsal {done.job_id} {done.status}: {done.reason}")


def rehearsal_json(done: Rehearsal) -> dict[str, object]:
    return {"vm": done.vm, "destination": done.destination, "status": done.status,
            "phases_ms": done.phases_ms, "verification": done.verification,
            "left_behind": done.left_behind, "job_id": done.job_id,
            "reason": done.reason}  # fmt: skip


def _table(done: Rehearsal) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("job", done.job_id)
    table.add_row("status", done.status + (f": {done.reason}" if done.reason else ""))
    for phase, ms in done.phases_ms.items():
        table.add_row(phase, f"{ms} ms")
    for key, value in done.verification.items():
        table.add_row(key, str(value))
    table.add_row("left behind", "; ".join(done.left_behind) or "nothing")
    return table
