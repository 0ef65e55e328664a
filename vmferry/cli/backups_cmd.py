"""`vmferry backups list|prune`: the disk backups taken before moves (`migrate --backup
POOL`), and their retention (docs/storage.md)."""

from __future__ import annotations

import typer
from rich.table import Table

from vmferry.cli.output import console, print_json
from vmferry.model.backup import DiskBackup
from vmferry.service import backup as service

app = typer.Typer(help="Disk backups taken before moves: list, prune.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print JSON.")
MIB = 2**20


@app.command("list")
def list_command(
    vm: str | None = typer.Option(None, "--vm", help="Only this VM's backups."),
    all_: bool = typer.Option(False, "--all", help="Also the pruned ones."),
    json_out: bool = JSON,
) -> None:
    """The backups kept, oldest first. JSON: [{"id", "job_id", "vm", "host", "pool", "target",
    "volume", "path", "format", "capacity_bytes", "created_at", "removed_at"}]."""
    found = service.list_backups(vm, all_=all_)
    if json_out:
        print_json(found)
    else:
        console.print(_table(found))


@app.command("prune")
def prune(
    keep: int = typer.Option(..., "--keep", help="How many moves' backups each VM keeps."),
    vm: str | None = typer.Option(None, "--vm", help="Only this VM's backups."),
    json_out: bool = JSON,
) -> None:
    """Delete all but the newest --keep moves' backups of each VM (their volumes, through
    the host's libvirt). JSON: the backups removed, as `backups list` prints them."""
    removed = service.prune(keep=keep, vm=vm)
    if json_out:
        print_json(removed)
    else:
        console.print(_table(removed) if removed else "nothing to prune")


def _table(backups: list[DiskBackup]) -> Table:
    table = Table("id", "job", "vm", "disk", "host", "pool", "volume", "size", "taken", "pruned")
    for b in backups:
        table.add_row(str(b.id), b.job_id, b.vm, b.target, b.host, b.pool, b.volume,
                      f"{b.capacity_bytes / MIB:.0f} MiB", b.created_at,
                      b.removed_at or "-")  # fmt: skip
    return table
