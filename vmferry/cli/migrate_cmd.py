"""`vmferry migrate`, here or (remote mode, VMFERRY_URL) through a vmferry server."""

from __future__ import annotations

import contextlib
import enum
import signal
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table

from vmferry.assess.stream_features import MAX_PARALLEL, validate
from vmferry.cli.output import console, err_console, print_json, progress_printer
from vmferry.client.remote import URL_ENV, remote_api
from vmferry.engine.convergence import PolicyState
from vmferry.errors import (
    BadInputError,
    BlockedError,
    MigrationFailedError,
    NoRemoteFormError,
    RolledBackError,
    StoppedFollowingError,
)
from vmferry.model.finding import Severity
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import (
    Compression,
    Job,
    JobEvent,
    JobStatus,
    MigrationOptions,
    MigrationResult,
    ProgressSample,
    Strategy,
    TlsMode,
)
from vmferry.service.migrate import migrate as migrate_service
from vmferry.service.migrate import migrate_auto

if TYPE_CHECKING:
    from vmferry.client.api import ApiClient

MIB = 2**20
SHUTDOWN_TIMEOUT_S = 120.0


class StrategyEnum(enum.StrEnum):
    """The strategies the user can name, and ``auto``: vmferry chooses."""

    AUTO = "auto"
    LIVE = "live"
    POSTCOPY = "postcopy"
    WARM = "warm"
    COLD = "cold"
    WARM_INCREMENTAL = "warm-incremental"


def progress_table(sample: ProgressSample, state: PolicyState) -> Table:
    """One screen of progress: what moved, what is left, how fast, what the policy did."""
    done = sample.memory_processed_bytes / MIB
    left = sample.memory_remaining_bytes / MIB
    rate = sample.throughput_bytes_s / MIB
    eta = f"{left / rate:.1f} s (this pass)" if rate > 0 else "-"
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("elapsed", f"{sample.elapsed_ms / 1000:.1f} s")
    if sample.disk_total_bytes:  # --copy-storage: the disks go first, then memory
        rate = sample.disk_throughput_bytes_s  # libvirt leaves it 0 for a migration's mirror
        table.add_row("disks", f"{sample.disk_processed_bytes / MIB:.0f} MiB sent, "
                      f"{sample.disk_remaining_bytes / MIB:.0f} MiB left"
                      + (f", at {rate / MIB:.1f} MiB/s" if rate else ""))  # fmt: skip
    table.add_row("memory", f"{done:.0f} MiB sent, {left:.0f} MiB left of "
                  f"{sample.memory_total_bytes / MIB:.0f} MiB")  # fmt: skip
    table.add_row("pass", str(sample.iteration))
    table.add_row("throughput", f"{rate:.1f} MiB/s")
    table.add_row("dirty rate", f"{sample.dirty_rate_bytes_s / MIB:.1f} MiB/s")
    expected = sample.expected_downtime_ms
    table.add_row("expected downtime", "-" if expected is None else f"{expected} ms"
                  f" (limit {state.downtime_ms} ms)")  # fmt: skip
    table.add_row("throttle", f"{sample.throttle_pct}%")
    table.add_row("post-copy", "yes" if state.postcopy else "no")
    table.add_row("ETA", eta)
    return table


def result_table(result: MigrationResult) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("job", result.job_id)
    table.add_row("status", str(result.status) + (f": {result.reason}" if result.reason else ""))
    strategy = str(result.strategy)
    if result.strategy_reason is not None:
        strategy += f" (chosen: {result.strategy_reason})"
    table.add_row("strategy", strategy)
    table.add_row("total time", _ms(result.total_time_ms))
    measured_by = "vmferry" if result.strategy.offline else "QEMU"
    table.add_row(f"downtime ({measured_by})", _ms(result.downtime_ms))
    if not result.strategy.offline:
        table.add_row("guest paused (measured)", _ms(result.guest_pause_ms))
    table.add_row("transferred", "-" if result.transferred_bytes is None
                  else f"{result.transferred_bytes / MIB:.0f} MiB")  # fmt: skip
    table.add_row("passes", str(result.iterations))
    if not result.strategy.offline:
        table.add_row("stream", "encrypted (TLS)" if result.encrypted else "not encrypted")
    for e in result.escalations:
        table.add_row(f"escalation at {e.at_ms / 1000:.1f} s", f"{e.step} {e.value or ''}")
    for d in result.disks:
        table.add_row(f"disk {d.target}", f"{'verified' if d.verified else 'NOT verified'}: "
                      f"{d.destination_path or '-'}" + (", the source's copy removed"
                                                        if d.source_removed else ""))  # fmt: skip
    v = result.verification
    if v is not None:
        table.add_row("on destination", "running" if v.running_on_destination
                      else "defined, off as it was" if v.left_off else "NO")  # fmt: skip
        table.add_row("gone from source", "yes" if v.absent_on_source else "NO")
        table.add_row("heartbeat max gap", _ms(v.heartbeat_max_gap_ms))
        table.add_row("memory integrity", v.memory_integrity or "-")
        table.add_row("network max gap", _ms(v.network_max_gap_ms))
        table.add_row("verified by", v.level)
        if v.agent is not None:
            a = v.agent
            table.add_row("guest agent", f"{'answered' if a.ping else 'NO ANSWER'}, MACs "
                          f"{'kept' if a.mac_ok else 'CHANGED'}, addresses "
                          f"{'kept' if a.addresses_ok else 'CHANGED'}, clock drift "
                          f"{_ms(a.clock_drift_ms)}")  # fmt: skip
        for probe in v.probes:
            state = "answered" if probe.ok else "NO ANSWER" if probe.baseline else "not counted"
            table.add_row(f"probe {probe.spec}", f"{state}, max gap {_ms(probe.max_gap_ms)}")
        for warning in v.warnings:
            table.add_row("warning", warning)
    return table


def result_json(result: MigrationResult) -> dict[str, object]:
    """The documented `vmferry migrate --json` schema (docs/json.md), exactly these keys."""
    doc = to_jsonable(result)
    verification = doc.get("verification")
    if isinstance(verification, dict):
        verification.pop("problems", None)  # they are in "reason"
    return dict(doc)


# the strategies that copy the disks only the source sees (and auto, which may choose one)
COPYING = (StrategyEnum.COLD, StrategyEnum.WARM_INCREMENTAL, StrategyEnum.AUTO)


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


def migrate(
    vm: str = typer.Argument(..., help="The VM to move (one that is off: --strategy cold)."),
    to: str = typer.Option(..., "--to", help="The registered destination host."),
    strategy: Annotated[
        StrategyEnum,
        typer.Option(
            help="live: pre-copy only (throttled if it must be); postcopy: pre-copy, then "
            "post-copy where pre-copy would need the throttle; warm: "
            "save the VM's state to a directory both hosts see and restore it on the "
            "destination (memory kept, stopped meanwhile); cold: shut it down, copy the "
            "disks only the source sees, start it on the destination (it reboots; a VM that "
            "is off is copied and defined there, still off); "
            "warm-incremental: copy the disks only the source sees while it runs, then what "
            "changed, round after round, pause it for the last changes and boot it on the "
            "destination (qcow2 disks; the stop is the last round, not the disks); auto: "
            "vmferry chooses from pre-flight, a one-second measurement of the VM and "
            "--max-downtime-ms (for a VM on local disks: live with --copy-storage, "
            "warm-incremental or cold; for a VM that is off: cold), and says why."
        ),
    ] = StrategyEnum.LIVE,
    max_downtime_ms: int = typer.Option(300, "--max-downtime-ms", min=10, max=60_000),
    timeout: float = typer.Option(600, "--timeout", min=5, help="Abort after this many s."),
    copy_storage: bool = typer.Option(False, "--copy-storage", help="Copy local disks along."),
    to_pool: str | None = typer.Option(
        None,
        "--to-pool",
        help="With --copy-storage or --strategy cold: the destination pool "
        "the copied disks go into (default: the one holding the same path there).",
    ),
    cap: bool = typer.Option(
        False,
        "--cap/--no-cap",
        help="Experimental: cap the vCPUs from the start when pre-copy would lag.",
    ),
    bandwidth_mib_s: int | None = typer.Option(
        None, "--bandwidth-mib-s", min=1, help="Cap the stream (default: the lab link rate)."
    ),
    state_dir: str | None = typer.Option(
        None,
        "--state-dir",
        help="warm: where the saved state goes, a pool directory both hosts see "
        "(default: the shared pool of the VM's disks).",
    ),
    shutdown_timeout: float = typer.Option(
        SHUTDOWN_TIMEOUT_S,
        "--shutdown-timeout",
        min=1,
        help="cold: wait this many s for the guest to power off.",
    ),
    force: bool = typer.Option(
        False, "--force", help="cold: power the VM off if it ignores the ACPI shutdown."
    ),
    delete_source_disks: bool = typer.Option(
        False,
        "--delete-source-disks",
        help="cold, or live with --copy-storage: remove the source's copied disks after a "
        "verified move.",
    ),
    tls: bool | None = typer.Option(
        None,
        "--tls/--no-tls",
        help="live: --tls requires an encrypted stream (refused when a host has no migration "
        "certificates), --no-tls sends it in the clear; default: the migration.tls setting.",
    ),
    require_verification: bool = typer.Option(
        False,
        "--require-verification",
        help="Fail the job (exit 4) when nothing beyond liveness proves the move (no guest "
        "agent, lab witness or answering probe) or a declared probe does not answer after it.",
    ),
    parallel: int = typer.Option(
        0,
        "--parallel",
        min=0,
        max=MAX_PARALLEL,
        help="live: send memory over this many multifd channels (2 or more; both hosts need "
        "libvirt 5.2 and QEMU 4.0).",
    ),
    compression: Annotated[
        Compression,
        typer.Option(
            "--compress",
            help="live: zstd (with --parallel; libvirt 9.4, QEMU 5.0) or xbzrle (a rewritten "
            "page as its difference; without --parallel).",
        ),
    ] = Compression.NONE,
    backup: str | None = typer.Option(
        None,
        "--backup",
        metavar="POOL",
        help="Before any change, back up the VM's disks into this storage pool of its host "
        "(libvirt's backup API, while it runs; `vmferry backups list`). Exit 3 when the pool "
        "cannot hold them.",
    ),
    rollback: bool = typer.Option(
        False,
        "--rollback",
        help="When the move's verification fails with the VM on the destination, move it "
        "back (exit 5).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Move a VM to another host (running: live, warm or cold; off: cold), then prove nothing
    was lost."""
    validate(parallel, compression)
    if (parallel >= 2 or compression is not Compression.NONE) and strategy in (
        StrategyEnum.WARM, StrategyEnum.COLD, StrategyEnum.WARM_INCREMENTAL
    ):  # fmt: skip
        raise BadInputError(f"--parallel and --compress shape a live stream; --strategy "
                            f"{strategy} sends none")  # fmt: skip
    offline_only = {"--state-dir": state_dir is not None
                    and strategy not in (StrategyEnum.WARM, StrategyEnum.AUTO),
                    "--force": force and strategy not in (StrategyEnum.COLD, StrategyEnum.AUTO),
                    "--delete-source-disks": delete_source_disks and not copy_storage
                    and strategy not in COPYING,
                    "--to-pool": to_pool is not None and not copy_storage
                    and strategy not in COPYING,
                    "--copy-storage": copy_storage
                    and strategy is StrategyEnum.WARM_INCREMENTAL}  # fmt: skip
    misplaced = [name for name, bad in offline_only.items() if bad]
    if misplaced:
        raise BadInputError(f"{', '.join(misplaced)} do(es) not apply to --strategy {strategy}")
    api = remote_api()
    if api is not None:
        not_in_api = {"--strategy auto": strategy is StrategyEnum.AUTO, "--cap": cap,
                      "--state-dir": state_dir is not None,
                      "--shutdown-timeout": shutdown_timeout != SHUTDOWN_TIMEOUT_S,
                      "--force": force, "--delete-source-disks": delete_source_disks,
                      "--tls/--no-tls": tls is not None,
                      "--require-verification": require_verification,
                      "--backup": backup is not None, "--rollback": rollback,
                      "--to-pool": to_pool is not None}  # fmt: skip
        missing = [name for name, asked in not_in_api.items() if asked]
        if missing:
            api.close()
            raise NoRemoteFormError(f"`vmferry migrate {' '.join(missing)}` has no remote form "
                                    f"yet; unset {URL_ENV} to run it locally")  # fmt: skip
        body: dict[str, object] = {"vm": vm, "to": to, "strategy": strategy.value,
                "max_downtime_ms": max_downtime_ms, "timeout_s": timeout,
                "copy_storage": copy_storage, "bandwidth_mib_s": bandwidth_mib_s,
                "parallel": parallel, "compression": compression.value}  # fmt: skip
        with api:
            result, blocked = migrate_remote(api, body)
        report(result, blocked, vm, to, json_out)
        return
    options = MigrationOptions(
        Strategy.LIVE if strategy is StrategyEnum.AUTO else Strategy(strategy.value),
        max_downtime_ms,
        timeout,
        copy_storage,
        bandwidth_mib_s,
        precopy_cap=cap,
        state_dir=state_dir,
        shutdown_timeout_s=shutdown_timeout,
        force=force,
        delete_source_disks=delete_source_disks,
        tls=None if tls is None else (TlsMode.REQUIRED if tls else TlsMode.OFF),
        require_verification=require_verification,
        parallel=parallel,
        compression=compression,
        backup_pool=backup,
        rollback=rollback,
        to_pool=to_pool,
    )
    note = progress_printer()
    with Live(console=err_console, transient=True, refresh_per_second=4) as live:

        def show(sample: ProgressSample, state: PolicyState) -> None:
            live.update(progress_table(sample, state))

        run = migrate_auto if strategy is StrategyEnum.AUTO else migrate_service
        outcome = run(vm, to, options, on_progress=show, note=note)
    result = outcome.result
    if outcome.rolled_back_by is not None:  # the JSON's reason says so too
        result = replace(result, reason=f"{result.reason}; rolled back by job "
                         f"{outcome.rolled_back_by}")  # fmt: skip
    report(result, outcome.check.blocked, vm, to, json_out,
           backup_blocked=outcome.backup_blocked,
           rolled_back=outcome.rolled_back_by is not None)  # fmt: skip


def report(result: MigrationResult, blocked: bool, vm: str, to: str, json_out: bool, *,
           backup_blocked: bool = False, rolled_back: bool = False) -> None:  # fmt: skip
    """Print the result; exit 3 when the checks (or the backup pool) blocked the move, 5 when
    it failed and was rolled back, 4 when it did not complete."""
    if json_out:
        print_json(result_json(result))
    else:
        console.print(result_table(result))
    if blocked:
        raise BlockedError(f"{result.reason}; `vmferry check {vm} --to {to}` shows why")
    if backup_blocked:
        raise BlockedError(f"job {result.job_id}: {result.reason}")
    if rolled_back:
        raise RolledBackError(f"job {result.job_id} {result.status}: {result.reason}")
    if result.status is not JobStatus.COMPLETED:
        raise MigrationFailedError(f"job {result.job_id} {result.status}: {result.reason}")


# -- remote mode ----------------------------------------------------------------------------


def migrate_remote(api: ApiClient, body: dict[str, object]) -> tuple[MigrationResult, bool]:
    """Start the move in the server (``POST /migrations``) and follow its job's events to
    the end, printing each as a progress line: its result, and whether its checks blocked it.

    Ctrl-C does what it does to a local move: the first cancels it (``POST
    /jobs/{id}/cancel``; the source keeps running) and the job is followed to its end; one
    during the request is held until the server names the job, then cancels it. A second
    Ctrl-C stops following (exit 130): the server finishes the cancel on its own.
    """
    from vmferry.client.api import JobFollower

    note = progress_printer()
    with first_ctrl_c(note) as interrupted:
        try:
            job = api.start_migration(body, f"vmferry-cli-{uuid.uuid4()}")
        except KeyboardInterrupt:
            raise StoppedFollowingError(
                "interrupted before the server answered: the move may have started there; "
                "`vmferry jobs` lists it, `vmferry job cancel ID` cancels it"
            ) from None
    note(f"job {job.id} in the vmferry server at {api.url}")
    follower = JobFollower(api, job.id, on_event=lambda event: note(event.message))
    cancelled = False
    if interrupted.is_set() and not job.status.finished:
        cancelled = _cancel(api, job.id, note)
    while True:
        try:
            ended = follower.run()
            break
        except KeyboardInterrupt:
            if cancelled:
                raise StoppedFollowingError(_stopped(job.id, cancelled)) from None
            cancelled = _cancel(api, job.id, note)
    return finished_result(ended), blocked_by_checks(follower.events)


def _cancel(api: ApiClient, job_id: str, note: Callable[[str], None]) -> bool:
    note(f"Ctrl-C: asking the server to cancel job {job_id} (the source VM keeps running); "
         "Ctrl-C again stops waiting for it")  # fmt: skip
    try:
        api.cancel_job(job_id)
    except KeyboardInterrupt:
        raise StoppedFollowingError(_stopped(job_id, False)) from None
    return True


def _stopped(job_id: str, cancel_asked: bool) -> str:
    if cancel_asked:
        return (f"stopped following job {job_id}: the server finishes its cancel; "
                f"`vmferry job show {job_id}`")  # fmt: skip
    return f"the move goes on in the server: vmferry job cancel {job_id}"


@contextlib.contextmanager
def first_ctrl_c(note: Callable[[str], None]) -> Iterator[threading.Event]:
    """While a request must not be cut, the first Ctrl-C only sets the flag (and says
    so); a second raises KeyboardInterrupt. Outside the main thread signals cannot be
    caught: the flag stays clear."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_sigint(_signum: int, _frame: object) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        note("Ctrl-C: the move is cancelled as soon as the server names its job")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def finished_result(job: Job) -> MigrationResult:
    """A finished job's result; for a job finished without one (reconciled), the result
    its record gives."""
    if job.result is not None:
        return job.result
    return MigrationResult(job.id, job.vm, job.source, job.destination, job.options.strategy,
                           job.status, job.reason, None, None, None, None)  # fmt: skip


def blocked_by_checks(events: Sequence[JobEvent]) -> bool:
    """Whether the job's pre-flight checks (its last ``checks`` event, as the service
    records them) found a blocker: the local command's ``outcome.check.blocked``."""
    checks = [event for event in events if event.kind == "checks"]
    findings = checks[-1].data.get("findings") if checks else None
    return isinstance(findings, list) and any(
        isinstance(f, dict) and f.get("severity") == Severity.BLOCKER.value for f in findings
    )
