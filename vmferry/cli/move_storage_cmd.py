"""`vmferry move-storage VM --disk vda --to-pool P`: a VM's disk to another pool of its host,
while it runs or while it is shut off (docs/storage.md)."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from vmferry.assess.storage_move import FORMATS
from vmferry.cli.migrate_cmd import result_json
from vmferry.cli.output import console, err_console, print_json, progress_printer
from vmferry.errors import MigrationFailedError
from vmferry.model.migration import JobStatus, MigrationResult
from vmferry.service.move_storage import move_storage as move_storage_service

MIB = 2**20


def move_storage(
    vm: str = typer.Argument(..., help="The VM, running or shut off."),
    disk: str = typer.Option(..., "--disk", help="The disk's target (vda, sdb, ...)."),
    to_pool: str = typer.Option(..., "--to-pool", help="A storage pool of the VM's host."),
    fmt: str | None = typer.Option(
        None, "--format", help=f"{' or '.join(FORMATS)} (default: the disk's own)."
    ),
    keep_source: bool = typer.Option(
        False, "--keep-source", help="Keep the old volume (default: removed once verified)."
    ),
    timeout: float = typer.Option(3600, "--timeout", help="Seconds for the copy to be in sync."),
    bandwidth_mib_s: int | None = typer.Option(
        None, "--bandwidth-mib-s", help="Copy at most this fast (spares the VM's storage)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (migrate's schema)."),
) -> None:
    """Copy a VM's disk into another pool of its host while it runs, switch the VM to the
    copy, check it, then remove the old volume (a shut-off VM's disk: copied by the host,
    then the definition pointed at the copy). Ctrl-C before the switch cancels the copy and
    removes the new volume: the VM stays on its disk. Exit 4 when it did not complete."""
    shown = [0.0]

    def progress(copied: int, total: int) -> None:
        if time.monotonic() - shown[0] >= 1.0 or copied == total:
            shown[0] = time.monotonic()
            err_console.print(f"[dim]•[/dim] copied {copied / MIB:.0f} of {total / MIB:.0f} MiB",
                              highlight=False)  # fmt: skip

    result = move_storage_service(vm, disk, to_pool, fmt=fmt, keep_source=keep_source,
                                  timeout_s=timeout, bandwidth_mib_s=bandwidth_mib_s,
                                  on_progress=progress,
                                  note=progress_printer())  # fmt: skip
    if json_out:
        print_json(result_json(result))
    else:
        console.print(storage_table(result))
    if result.status is not JobStatus.COMPLETED:
        raise MigrationFailedError(f"job {result.job_id} {result.status}: {result.reason}")


def storage_table(result: MigrationResult) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("job", result.job_id)
    table.add_row("status", str(result.status) + (f": {result.reason}" if result.reason else ""))
    table.add_row("total time", "-" if result.total_time_ms is None
                  else f"{result.total_time_ms} ms")  # fmt: skip
    table.add_row("copied", "-" if result.transferred_bytes is None
                  else f"{result.transferred_bytes / MIB:.0f} MiB")  # fmt: skip
    for d in result.disks:
        table.add_row(f"disk {d.target}", f"{'verified' if d.verified else 'NOT verified'}: "
                      f"{d.destination_path}")  # fmt: skip
        table.add_row("old volume", f"{d.source_path} "
                      + ("removed" if d.source_removed else "kept"))  # fmt: skip
    return table
