"""`vmferry jobs` and `vmferry job show|cancel|cutover|resume ID`.

JSON (``--json``): a job is ``{"id", "kind", "vm", "source", "destination", "status",
"created_at", "updated_at", "options", "reason", "result", "owner_pid",
"owner_start_ticks", "cancel_requested", "events": [{"at", "kind", "message", "data"}]}``
(``options`` and ``result`` as in `vmferry migrate --json`; ``result`` is null until the
job finishes). `vmferry jobs --json` prints a list of jobs whose ``events`` are empty.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich import box
from rich.table import Table

from vmferry.cli.output import console, err_console, print_json
from vmferry.client.remote import URL_ENV, remote_api
from vmferry.errors import NoRemoteFormError
from vmferry.model.migration import Job, JobStatus
from vmferry.service import jobs as jobs_service

if TYPE_CHECKING:
    from vmferry.client.api import ApiClient

RESUME_WAIT_S = 60.0  # what `job resume` waits, and what the server waits for it

job_app = typer.Typer(
    help="Show, cancel, cut over or resume one job (see `vmferry jobs`).", no_args_is_help=True
)

_STYLE = {
    JobStatus.PENDING: "cyan",
    JobStatus.RUNNING: "bold cyan",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
}


def jobs(
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    limit: int = typer.Option(50, "--limit", min=1, help="Show at most this many jobs."),
) -> None:
    """List migration jobs, newest first."""
    api = remote_api()
    if api is not None:
        with api:
            found = api.jobs(limit)
    else:
        found = jobs_service.list_jobs(limit)
    if json_out:
        print_json(found)
        return
    console.print(jobs_table(found))


@job_app.command("show")
def show(
    job_id: str = typer.Argument(..., metavar="ID", help="The job's id (see `vmferry jobs`)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One job with its history and result."""
    api = remote_api()
    if api is not None:
        with api:
            job = api.job(job_id)
    else:
        job = jobs_service.get_job(job_id)
    if json_out:
        print_json(job)
        return
    _print_job(job, remote=api is not None)


@job_app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., metavar="ID", help="The job's id (see `vmferry jobs`)."),
    wait: float = typer.Option(
        30, "--wait", min=0, help="Wait at most this many seconds for the job to end."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Cancel a job; the source VM keeps running.

    If the vmferry process driving it died, the job is resumed (reconciled) instead.
    """
    api = remote_api()
    if api is not None:
        with api:
            had_finished, job = _cancel_remote(api, job_id, wait)
    else:
        had_finished = jobs_service.get_job(job_id).status.finished
        job = jobs_service.cancel_job(job_id, wait_s=wait)
    if json_out:
        print_json(job)
        return
    if had_finished:
        console.print(f"job {job.id} had already finished: {_status(job)}", highlight=False)
    elif job.status.finished:
        console.print(f"job {job.id}: {_status(job)}", highlight=False)
    else:
        err_console.print(
            f"job {job.id}: cancel requested, still {job.status} after {wait:g} s; "
            f"see `vmferry job show {job.id}`",
            highlight=False,
        )


def _cancel_remote(api: ApiClient, job_id: str, wait: float) -> tuple[bool, Job]:
    """``POST /jobs/{id}/cancel``, then the job once it has finished or ``wait`` s have
    passed (as :func:`jobs_service.cancel_job` waits): whether it had finished before, and
    the job with its events."""
    asked = api.cancel_job(job_id)
    deadline = time.monotonic() + wait
    job = asked.job
    while not job.status.finished and time.monotonic() < deadline:
        time.sleep(min(jobs_service.CANCEL_POLL_S, max(0.0, deadline - time.monotonic())))
        job = api.job(job_id)
    return asked.had_finished, job


@job_app.command("cutover")
def cutover(
    job_id: str = typer.Argument(..., metavar="ID", help="The warm import's job id."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Cut a warm vSphere import over now: it stops the VM, copies the last changes,
    defines the VM on KVM and verifies it (`vmferry job show ID` follows it)."""
    if remote_api() is not None:
        raise NoRemoteFormError(f"job cutover has no remote form yet: unset {URL_ENV}")
    from vmferry.service.warm_cutover import request_cutover

    job = request_cutover(job_id)
    if json_out:
        print_json(job)
        return
    console.print(f"job {job.id}: cutover requested; the import cuts over at its next check",
                  highlight=False)  # fmt: skip


@job_app.command("resume")
def resume(
    job_id: str = typer.Argument(..., metavar="ID", help="The job's id (see `vmferry jobs`)."),
    wait: float = typer.Option(
        RESUME_WAIT_S,
        "--wait",
        min=0,
        help="Wait at most this many seconds for a running migration.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Finish a job whose vmferry was killed, as libvirt shows it ended.

    Records it completed or failed; destroys an incoming copy left on the destination
    while the source runs the VM. A warm or cold move is finished on the destination, or
    undone (the VM restored or started on its source). Touches nothing when it cannot
    tell. Running it again changes nothing.
    """
    api = remote_api()
    if api is not None:
        if wait != RESUME_WAIT_S:
            api.close()
            raise NoRemoteFormError(f"`vmferry job resume --wait` has no remote form yet (the "
                                    f"server waits {RESUME_WAIT_S:g} s); unset {URL_ENV} to "
                                    "run it locally")  # fmt: skip
        with api:
            job = api.resume_job(job_id)
    else:
        job = jobs_service.reconcile_job(job_id, wait_s=wait)
    if json_out:
        print_json(job)
        return
    if job.status.finished:
        console.print(f"job {job.id}: {_status(job)}", highlight=False)
        return
    why = job.events[-1].message if job.events else ""
    if api is None:  # whether its owner still runs is judged in the server's store
        owner = jobs_service.job_owner(job)
        if owner.alive:
            why = f"{owner.why}: it still drives the job"
    err_console.print(f"job {job.id} is still {job.status}: {why}", highlight=False)


def jobs_table(found: list[Job]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("id", "vm", "move", "status", "created"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", ratio=1)
    for job in found:
        table.add_row(
            job.id,
            job.vm,
            f"{job.source} → {job.destination}",
            _styled(job.status),
            job.created_at.replace("T", " ")[:16],
            job.reason or "-",
        )
    return table


def _styled(status: JobStatus) -> str:
    style = _STYLE[status]
    return f"[{style}]{status}[/{style}]"


def _status(job: Job) -> str:
    return _styled(job.status) + (f": {job.reason}" if job.reason else "")


def _print_job(job: Job, *, remote: bool = False) -> None:
    summary = Table(show_header=False, box=None)
    summary.add_row("job", job.id)
    summary.add_row("kind", job.kind)
    summary.add_row("vm", job.vm)
    summary.add_row("move", f"{job.source} → {job.destination}")
    summary.add_row("status", _status(job))
    summary.add_row("created", job.created_at)
    summary.add_row("updated", job.updated_at)
    options = job.options
    summary.add_row(
        "options",
        f"{options.strategy}, max downtime {options.max_downtime_ms} ms, timeout "
        f"{options.timeout_s:g} s"
        + (", copy storage" if options.copy_storage else "")
        + (f", {options.bandwidth_mib_s} MiB/s" if options.bandwidth_mib_s else ""),
    )
    if remote and (job.owner_pid is not None or job.owner_id is not None):
        summary.add_row("owner", _remote_owner(job))
    elif job.owner_pid is not None or job.owner_id is not None:
        owner = jobs_service.job_owner(job)
        summary.add_row("owner", owner.why + ("" if owner.alive else " (orphaned)"))
    if job.cancel_requested:
        summary.add_row("cancel", "requested")
    result = job.result
    if result is not None:
        summary.add_row("total time", _ms(result.total_time_ms))
        summary.add_row("downtime", _ms(result.downtime_ms))
        if result.transferred_bytes is not None:
            summary.add_row("transferred", f"{result.transferred_bytes / 2**20:.0f} MiB")
        if result.iterations is not None:
            summary.add_row("passes", str(result.iterations))
        for e in result.escalations:
            summary.add_row(f"escalation {e.at_ms / 1000:.1f} s", f"{e.step} {e.value or ''}")
        if result.verification is not None:
            passed = "passed" if result.verification.passed else "FAILED"
            problems = "; ".join(result.verification.problems)
            summary.add_row("verification", passed + (f": {problems}" if problems else ""))
    console.print(summary, highlight=False)
    events = Table("at", "kind", "message", title="events")
    for event in job.events:
        events.add_row(event.at, event.kind, event.message)
    console.print(events, highlight=False)


def _remote_owner(job: Job) -> str:
    """The owner row of a job read from a server: its lease lives in the server's store,
    and the API does not say yet whether its owner still runs."""
    who = f"lease {job.owner_id}" if job.owner_id is not None else f"vmferry pid {job.owner_pid}"
    return f"{who} (whether it still runs: the server does not say yet)"


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"
