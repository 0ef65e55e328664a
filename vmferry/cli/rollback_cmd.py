"""`vmferry rollback JOB`: a move undone, the VM moved back to where it was; an import
undone, the imported VM removed (docs/storage.md)."""

from __future__ import annotations

import typer

from vmferry.cli.output import console, print_json, progress_printer
from vmferry.errors import MigrationFailedError
from vmferry.service.rollback import roll_back


def rollback(
    job: str = typer.Argument(..., help="The move's or the import's job id (`vmferry jobs`)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Move the job's VM back live to the job's source (a warm or cold move with a kept
    backup: restored there from it); an import job: the imported VM powered off, undefined
    and its volumes removed, and a vSphere VM the import powered off powered on again (its
    source's password from VMFERRY_VSPHERE_PASSWORD, else asked). Again on a job rolled
    back already: nothing changes. Exit 4 when the rollback did not complete.

    JSON: {"job_id", "vm", "source", "status": "rolled-back|already-rolled-back|failed",
    "rollback_job_id", "reason"}."""
    from vmferry.cli.sources_cmd import password_for

    outcome = roll_back(job, note=progress_printer(), vsphere_password=password_for)
    if json_out:
        print_json(outcome)
    elif outcome.status == "already-rolled-back":
        console.print(f"nothing to do: {outcome.reason}")
    else:  # a move back names its job; a restore or an import's removal said what it did
        by = (f" to {outcome.source} by job {outcome.rollback_job_id}"
              if outcome.rollback_job_id else "")  # fmt: skip
        console.print(f"job {job}: {outcome.vm} {outcome.status}{by}")
    if outcome.status == "failed":
        raise MigrationFailedError(f"the rollback of job {job} failed: {outcome.reason}")
