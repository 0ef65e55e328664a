"""The live migration loop: start, watch, escalate, cancel, measure, verify, record.

Side effects stay in the drivers (libvirt, the store, the witness); the decisions come from
:mod:`vmferry.engine.convergence`. Whatever happens, the job ends in the store with a final
status, and unless the move completed the source VM is left running.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from vmferry.assess.stream_features import postcopy_resume_crashes
from vmferry.drivers.domain_edit import with_disk_files
from vmferry.drivers.libvirt_domains import domain_view
from vmferry.drivers.libvirt_events import PauseWatch
from vmferry.drivers.libvirt_facts import migratable_xml
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_migration import (
    CompletedStats,
    MigrationRequest,
    RunningMigration,
    completed_stats,
)
from vmferry.drivers.libvirt_offline import delete_volume, volume_exists
from vmferry.engine.convergence import (
    PolicyConfig,
    PolicyState,
    decide,
    initial_state,
    throttle_parameters,
)
from vmferry.engine.postcopy import StallWatch, split_reason, stall_warning
from vmferry.engine.recorder import JobRecorder
from vmferry.errors import HostUnreachableError, NotFoundError, VmferryError
from vmferry.model import Disk, Host, HostInfo, VmRecord, VmState
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import (
    DiskCopy,
    Escalation,
    EscalationStep,
    JobStatus,
    MigrationOptions,
    MigrationResult,
    ProgressSample,
    Strategy,
    Verification,
)
from vmferry.store.db import Store
from vmferry.verify.disk_copies import judge_copies
from vmferry.verify.witness import Witness, WitnessReport, verification

ProgressFn = Callable[[ProgressSample, PolicyState], None]
NoteFn = Callable[[str], None]


@dataclass(frozen=True)
class LivePlan:
    job_id: str
    vm: str
    source: Host
    destination: Host
    options: MigrationOptions
    request: MigrationRequest


def policy_config(options: MigrationOptions) -> PolicyConfig:
    return PolicyConfig(
        max_downtime_ms=options.max_downtime_ms,
        allow_postcopy=options.strategy is Strategy.POSTCOPY,
        timeout_s=options.timeout_s,
    )


def _quiet(*_args: object) -> None:
    return None


def run_live_migration(
    plan: LivePlan,
    store: Store,
    witness: Witness,
    *,
    on_progress: ProgressFn = _quiet,
    note: NoteFn = _quiet,
    poll_s: float = 0.25,
    settle: Callable[[MigrationResult], None] | None = None,
) -> MigrationResult:
    """Run ``plan`` to its end and record it; never leaves two running copies of the VM.
    ``settle`` runs once the outcome is known and before the job ends (the caller's work
    after the move, its events part of the job's record).

    The record is written by a :class:`JobRecorder` thread: a store that is locked or gone
    for a while delays the record, never the move (:class:`StoreUnavailableError` when it has
    not caught up by the end)."""
    record = JobRecorder(store, plan.job_id)
    try:
        result = _drive(plan, record, witness, on_progress=on_progress, note=note, poll_s=poll_s)
    except BaseException:
        record.close()
        raise
    record.finish(result, settle)
    return result


SAMPLE_EVERY_S = 1.0  # a progress event at most this often, and at each new pass


def _worth_recording(sample: ProgressSample, before: list[ProgressSample],
                     recorded_at: float) -> bool:  # fmt: skip
    """Whether ``sample`` goes into the job's events (the console's chart): the first of
    each pass, or a second after the last one recorded; not libvirt's first answer before
    the copy began (pass 0, nothing remaining yet)."""
    if sample.copying_disks:  # --copy-storage: the disks first, a sample a second
        return sample.disk_processed_bytes > 0 and (
            not before or time.monotonic() - recorded_at >= SAMPLE_EVERY_S
        )
    if sample.iteration == 0 and sample.memory_remaining_bytes == 0:
        return False
    new_pass = not before or before[-1].iteration != sample.iteration
    return new_pass or time.monotonic() - recorded_at >= SAMPLE_EVERY_S


def _sample_data(sample: ProgressSample) -> dict[str, object]:
    return {"elapsed_ms": sample.elapsed_ms, "iteration": sample.iteration,
            "memory_total_bytes": sample.memory_total_bytes,
            "memory_remaining_bytes": sample.memory_remaining_bytes,
            "dirty_rate_bytes_s": sample.dirty_rate_bytes_s,
            "throughput_bytes_s": sample.throughput_bytes_s,
            "expected_downtime_ms": sample.expected_downtime_ms,
            "throttle_pct": sample.throttle_pct, "postcopy": sample.postcopy,
            "disk_remaining_bytes": sample.disk_remaining_bytes,
            "disk_total_bytes": sample.disk_total_bytes,
            "disk_processed_bytes": sample.disk_processed_bytes,
            "disk_throughput_bytes_s": sample.disk_throughput_bytes_s}  # fmt: skip


def _describe_sample(sample: ProgressSample) -> str:
    mib = 2**20
    if sample.copying_disks:
        rate = sample.disk_throughput_bytes_s  # libvirt leaves it 0 for a migration's mirror
        at = f", at {rate / mib:.1f} MiB/s" if rate else ""
        return (
            f"disks: {sample.disk_processed_bytes / mib:.0f} MiB sent, "
            f"{sample.disk_remaining_bytes / mib:.0f} MiB left{at} (memory follows)"
        )
    return (f"pass {sample.iteration}: {sample.memory_remaining_bytes / mib:.0f} MiB left, "
            f"dirty {sample.dirty_rate_bytes_s / mib:.1f} MiB/s, sent at "
            f"{sample.throughput_bytes_s / mib:.1f} MiB/s")  # fmt: skip


def _drive(
    plan: LivePlan,
    record: JobRecorder,
    witness: Witness,
    *,
    on_progress: ProgressFn,
    note: NoteFn,
    poll_s: float,
) -> MigrationResult:
    config = policy_config(plan.options)
    state = initial_state(config)
    samples: list[ProgressSample] = []
    escalations: list[Escalation] = []
    stop_reason: str | None = None
    cancelled = False

    def event(kind: str, message: str, **data: object) -> None:
        record.event(kind, message, dict(data))
        note(message)

    with (
        ctrl_c_flag() as interrupted,
        LibvirtHost.connect(plan.source.name, plan.source.uri) as src,
        LibvirtHost.connect(plan.destination.name, plan.destination.uri) as dst,
    ):
        for pool in dst.pools():  # a shared pool lists new volumes only after a refresh
            try:
                dst.refresh_pool(pool)
            except VmferryError:
                continue
        copies = _before_copy(src, plan)  # the disks to copy as the source has them
        # the copies' paths the destination has no file at (--to-pool: their new paths)
        fresh = _new_on(dst, dict(plan.request.copy_paths) or copies[1])
        migration = RunningMigration(src, _with_dest_xml(src, plan.request))
        pause = _watch_pause(plan, event)
        stuck = _StuckAbort(plan.destination.name)
        stalls = StallWatch(plan.source.name, plan.destination.name, config.stall_timeout_s)
        downtime_set = False
        try:  # from here on Ctrl-C aborts, and the job always ends recorded
            witness.start()
            record.status(JobStatus.RUNNING)
            migration.start()
            event("status", f"migrating {plan.vm} from {plan.source.name} to "
                  f"{plan.destination.name}", request=_describe(plan.request))  # fmt: skip
            heard_at = time.monotonic()
            recorded_at = 0.0  # when the last progress sample went into the job's events
            while not migration.done():
                sample = migration.sample()
                silent_s = time.monotonic() - heard_at
                if (sample is None and stop_reason is None and not migration.in_postcopy
                        and silent_s >= config.silence_timeout_s):  # fmt: skip
                    stop_reason = (f"libvirt reported no progress for {silent_s:.0f} s (its job "
                                   "statistics did not answer)")  # fmt: skip
                    _abort_on_new_connection(src, plan.request, event, stop_reason)
                if sample is not None:
                    heard_at = time.monotonic()
                    if not downtime_set:
                        with contextlib.suppress(VmferryError):  # else again at the next sample
                            got = migration.set_downtime(state.downtime_ms)
                            downtime_set = True
                            event("setting", f"downtime limit {got} ms (asked "
                                  f"{state.downtime_ms})", downtime_ms=got)  # fmt: skip
                    samples.append(sample)
                    if _worth_recording(sample, samples[:-1], recorded_at):
                        recorded_at = time.monotonic()
                        record.event("progress", _describe_sample(sample), _sample_data(sample))
                    if migration.in_postcopy and (stall := stalls.observe(samples)):
                        event("status", stall[0], stalled_s=round(stall[1], 1))
                    decision = decide(samples, state, config)
                    state = decision.state
                    for escalation in decision.escalations:
                        escalations.append(escalation)
                        _apply(migration, escalation, state, event)
                        if escalation.step is EscalationStep.ABORT:
                            stop_reason = escalation.reason
                    on_progress(sample, state)
                if stop_reason is None and interrupted.is_set():
                    stop_reason, cancelled = INTERRUPTED, True
                    _abort(migration, event, stop_reason)
                if stop_reason is None and record.cancel_requested():
                    stop_reason, cancelled = "cancelled by `vmferry job cancel`", True
                    _abort(migration, event, stop_reason)
                if stop_reason is not None:
                    stuck.check(migration, event)
                migration.wait(poll_s)
        except Exception as exc:  # a step failed (usually the migration just ended): never
            # leave the migration running without anyone to abort and record it
            if not migration.wait(2.0):
                why = (
                    exc.message if isinstance(exc, VmferryError) else f"{type(exc).__name__}: {exc}"
                )
                stop_reason = f"vmferry could not drive the migration: {why}"
                _abort(migration, event, stop_reason)
        except KeyboardInterrupt:  # a second Ctrl-C, or not run in the main thread
            if not cancelled:
                stop_reason, cancelled = INTERRUPTED, True
            _abort(migration, event, stop_reason or INTERRUPTED)
        while migration.started and not migration.wait(1.0):
            if migration.abort_pending:  # asked before libvirt's job began: ask again
                migration.abort()
            if stop_reason is not None:
                stuck.check(migration, event)
        moved = migration.succeeded
        stats = completed_stats(dst, plan.vm) if moved else CompletedStats(None, None, None,
                                                                           None)  # fmt: skip
        if samples and stats.iterations is None:
            stats = CompletedStats(stats.total_time_ms, stats.downtime_ms,
                                   stats.transferred_bytes, samples[-1].iteration)  # fmt: skip
        paused = pause.stop() if pause is not None else None
        if moved and stats.total_time_ms is None:  # after post-copy libvirt keeps none
            stats = measured_stats(migration.call_ms, samples,
                                   paused.pause_ms if paused is not None else None)  # fmt: skip
            event("measure", "libvirt kept no completed statistics (post-copy): total time "
                  f"{_fmt_ms(stats.total_time_ms)} by vmferry's clock around the migrate call, "
                  f"downtime {_fmt_ms(stats.downtime_ms)} from the pause events, "
                  f"{_fmt_mib(stats.transferred_bytes)} from the source's last statistics",
                  total_time_ms=stats.total_time_ms, downtime_ms=stats.downtime_ms,
                  transferred_bytes=stats.transferred_bytes)  # fmt: skip
        if moved and paused is not None:
            event("measure", f"guest paused {paused.pause_ms} ms by libvirt's events, "
                  f"{paused.qemu_pause_ms} ms by QEMU's", pause_ms=paused.pause_ms,
                  qemu_pause_ms=paused.qemu_pause_ms, qemu_stop_at=paused.qemu_stop_at,
                  qemu_resume_at=paused.qemu_resume_at)  # fmt: skip
        # after a failed move the source is asked once: does the VM still run there? After
        # the switch to post-copy a failure leaves it split unless libvirt resumed it on
        # its source (a failure before the switchover)
        answered, runs = (True, False) if moved else _source_state(src, plan.vm)
        split = not moved and migration.in_postcopy and not (answered and runs)
        # the witnesses wait for a VM that runs, or may (a source that did not answer)
        report = witness.finish(moved, running=moved or (not split and (runs or not answered)))
        verification = _verify(src, dst, plan.vm, moved, report,
                               plan.options.require_verification, split=split)  # fmt: skip
        if migration.in_postcopy and (warning := stall_warning(stalls, samples)):
            verification = replace(verification, warnings=(*verification.warnings, warning))
        split_said = _split_reason(dst, plan, migration.error) if split else None
        if not moved and verification.problems:
            event("note", "after the failed migration: " + "; ".join(verification.problems))
        disks: tuple[DiskCopy, ...] = ()
        if moved and plan.request.copy_disks:
            disks = _after_copy(dst, plan, copies)
            for disk in disks:
                event("storage-verify", f"disk {disk.target} copied to {plan.destination.name}: "
                      f"{'verified' if disk.verified else 'NOT verified'} "
                      f"({'; '.join(disk.checks)})", **to_jsonable(disk))  # fmt: skip
            failed = [f"disk {d.target}: {'; '.join(d.checks)}" for d in disks if not d.verified]
            if failed:
                verification = replace(verification,
                                       problems=(*verification.problems, *failed))  # fmt: skip
            if plan.options.delete_source_disks and verification.passed:
                disks = _remove_source_copies(src, plan, disks, event)
        if split and fresh:  # they hold what the guest wrote on the destination
            event("note", f"the disk copies on {plan.destination.name} are kept "
                  f"({', '.join(fresh.values())}): {plan.vm} is split")  # fmt: skip
        elif not moved and fresh:
            _remove_partial_copies(dst, plan, fresh, event)
    if moved and verification.passed:
        status, reason = JobStatus.COMPLETED, None
    elif moved:
        status = JobStatus.FAILED
        reason = "verification failed: " + "; ".join(verification.problems)
    else:
        status = JobStatus.CANCELLED if cancelled else JobStatus.FAILED
        reason = stop_reason or migration.error or "the migration failed"
        if stop_reason and migration.error and not cancelled:
            reason = f"{stop_reason} ({migration.error})"
        if split_said is not None:
            reason = split_said
        if source_died(plan.source.name) in verification.problems:
            reason = (f"the VM died on its source {plan.source.name} during the move; vmferry "
                      f"started it nowhere ({reason})")  # fmt: skip
    return MigrationResult(
        job_id=plan.job_id,
        vm=plan.vm,
        source=plan.source.name,
        destination=plan.destination.name,
        strategy=plan.options.strategy,
        status=status,
        reason=reason,
        total_time_ms=stats.total_time_ms,
        downtime_ms=stats.downtime_ms,
        transferred_bytes=stats.transferred_bytes,
        iterations=stats.iterations,
        escalations=tuple(escalations),
        verification=verification,
        encrypted=plan.request.tls,
        guest_pause_ms=paused.pause_ms if moved and paused is not None else None,
        disks=disks,
    )


INTERRUPTED = "interrupted (Ctrl-C)"


def measured_stats(
    call_ms: int | None, samples: list[ProgressSample], pause_ms: int | None
) -> CompletedStats:
    """A completed move's figures measured by vmferry, for when libvirt keeps none (after
    post-copy): the total is the migrate call's time; the downtime the guest's pause (the
    pause and resume events); the bytes what the source had sent at its last statistics
    plus what was left then (post-copy sends each page left exactly once)."""
    last = samples[-1] if samples else None
    sent = None if last is None else last.memory_processed_bytes + last.memory_remaining_bytes
    return CompletedStats(call_ms, pause_ms, sent, last.iteration if last else None)


def _fmt_ms(value: int | None) -> str:
    if value is None:
        return "unknown"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value} ms"


def _fmt_mib(value: int | None) -> str:
    return "bytes unknown" if value is None else f"{value / 2**20:.0f} MiB"


def _watch_pause(plan: LivePlan, event: Callable[..., None]) -> PauseWatch | None:
    """Listen for the guest's pause and resume on both hosts; a host that will not give its
    events leaves the pause unmeasured (an event says why), never the move undone."""
    watch = PauseWatch(plan.vm, plan.source, plan.destination)
    try:
        watch.start()
    except VmferryError as exc:
        event("note", f"the guest's pause is not measured: {exc.message}")
        return None
    return watch


def source_died(source: str) -> str:
    """The problem a failed move has when the VM no longer runs on its source."""
    return f"the source copy on {source} is not running"


@contextlib.contextmanager
def ctrl_c_flag() -> Iterator[threading.Event]:
    """While the migration is driven, the first Ctrl-C (SIGINT) only sets the flag the loop
    checks; a second one raises KeyboardInterrupt as usual.

    Raised at a random point, KeyboardInterrupt can land inside a libvirt call, whose
    binding then fails with a SystemError instead and leaves the migration running without
    anyone to abort or record it. Outside the main thread signals cannot be caught: the
    flag then stays clear and KeyboardInterrupt is handled where it is raised.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def on_sigint(_signum: int, _frame: object) -> None:
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _apply(migration: RunningMigration, escalation: Escalation, state: PolicyState,
           event: Callable[..., None]) -> None:  # fmt: skip
    step = escalation.step
    if step is EscalationStep.DOWNTIME:
        try:
            got: int | None = migration.set_downtime(state.downtime_ms)
        except VmferryError as exc:  # the migration may just have ended; not worth an abort
            event("note", f"downtime limit not raised: {exc.message}")
            got = None
        event("escalation", f"downtime limit raised to {got} ms: {escalation.reason}",
              step=str(step), value=got)  # fmt: skip
    elif step is EscalationStep.THROTTLE:
        try:
            now: dict[str, int] | None = migration.set_throttle(
                *throttle_parameters(state.throttle_level)
            )
        except VmferryError as exc:  # e.g. libvirt did not answer: go on watching
            event("note", f"throttle not raised: {exc.message}")
            now = None
        event("escalation", f"auto-converge throttle up to {escalation.value}%: "
              f"{escalation.reason}", step=str(step), qemu=now)  # fmt: skip
    elif step is EscalationStep.POSTCOPY:
        migration.start_postcopy()
        event("escalation", f"switched to post-copy: {escalation.reason}", step=str(step))
    else:
        _abort(migration, event, escalation.reason)


ABORT_GRACE_S = 10.0  # an aborted migration whose links work ends within a second


class _StuckAbort:
    """Ends an aborted migration that does not end: after ``ABORT_GRACE_S`` its network
    connections are closed (:meth:`RunningMigration.yank_links`), once. Seen in the lab: a
    `--copy-storage` move whose link to the destination was cut, aborted when its disks'
    copy stalled, hung in the disk mirror's NBD send for as long as the link stayed cut.
    Never in post-copy: there the destination runs the guest and needs every page."""

    def __init__(self, destination: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.destination = destination
        self.clock = clock
        self.since: float | None = None
        self.tried = False

    def check(self, migration: RunningMigration, event: Callable[..., None]) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
        if self.tried or migration.in_postcopy or now - self.since < ABORT_GRACE_S:
            return
        self.tried = True
        try:
            closed = migration.yank_links()
        except VmferryError as exc:
            event("note", f"the aborted migration has not ended after {ABORT_GRACE_S:g} s, "
                  f"and its connections could not be closed: {exc.message}")  # fmt: skip
            return
        if closed:
            event("status", f"the aborted migration has not ended after {ABORT_GRACE_S:g} s "
                  f"(a connection to {self.destination} hangs): closed {', '.join(closed)}",
                  closed=closed)  # fmt: skip


def _abort_on_new_connection(source: LibvirtHost, request: MigrationRequest,
                             event: Callable[..., None], reason: str) -> None:  # fmt: skip
    """Abort through a connection of its own: the engine's connection to the source may be
    the one that hangs."""
    event("status", f"aborting the migration on a new connection: {reason}")
    try:
        with LibvirtHost.connect(source.name, source.uri) as fresh:
            RunningMigration(fresh, request).abort()
    except VmferryError as exc:
        event("note", f"the abort could not be sent: {exc.message}")


def _abort(migration: RunningMigration, event: Callable[..., None], reason: str) -> None:
    if migration.in_postcopy:
        event("note", f"{reason}: post-copy is running and cannot be aborted safely; "
              "letting it finish")  # fmt: skip
        return
    migration.abort()
    event("status", f"aborting the migration: {reason}; the source keeps running")
    if migration.abort_unanswered:
        _abort_on_new_connection(migration.source, migration.request, event, reason)


def _before_copy(src: LibvirtHost, plan: LivePlan) -> tuple[list[Disk], dict[str, str | None]]:
    """The VM's disks on the source and the path of each one to copy (``--copy-storage``);
    nothing when no disk is copied. Never raises: what it cannot read is judged after."""
    if not plan.request.copy_disks:
        return [], {}
    try:
        disks = list(src.get_vm(plan.vm).spec.disks)
    except VmferryError:
        return [], {}
    return disks, {d.target: src.disk_path(d) for d in disks if d.target in plan.request.copy_disks}


def _with_dest_xml(src: LibvirtHost, request: MigrationRequest) -> MigrationRequest:
    """``--to-pool``: the request with the definition the destination starts the VM with,
    each copied disk at its path in that pool. Unchanged without ``copy_paths``."""
    if not request.copy_paths:
        return request
    paths = {target: (path, None) for target, path in request.copy_paths}
    return replace(request, dest_xml=with_disk_files(migratable_xml(src, request.vm), paths))


def _after_copy(
    dst: LibvirtHost, plan: LivePlan, copies: tuple[list[Disk], dict[str, str | None]]
) -> tuple[DiskCopy, ...]:
    """Each copied disk as the destination has it now, judged against the source's."""
    before, source_paths = copies
    try:
        after: list[Disk] | None = list(dst.get_vm(plan.vm).spec.disks)
    except VmferryError:
        after = None
    paths = {d.target: dst.disk_path(d) for d in after or ()}
    judged = judge_copies(plan.request.copy_disks, before, source_paths, after, paths,
                          source=plan.source.name, destination=plan.destination.name)  # fmt: skip
    return tuple(_in_place(d, dict(plan.request.copy_paths)) for d in judged)


def _in_place(disk: DiskCopy, wanted: dict[str, str]) -> DiskCopy:
    """A copy judged good is not verified if it is not where ``--to-pool`` put it."""
    want = wanted.get(disk.target)
    if not disk.verified or want is None or disk.destination_path == want:
        return disk
    return replace(
        disk,
        verified=False,
        checks=(*disk.checks, f"{disk.target} is at {disk.destination_path}, not {want}"),
    )


def _new_on(dst: LibvirtHost, paths: dict[str, str | None]) -> dict[str, str]:
    """Of the disks to copy (target: path), those whose path the destination has no file at
    yet: what libvirt creates there for the copy, and the only files a failed move may
    remove. A path it cannot tell about counts as there (never removed)."""
    fresh = {}
    for target, path in paths.items():
        if path is None:
            continue
        try:
            if not volume_exists(dst, path):
                fresh[target] = path
        except VmferryError:
            continue
    return fresh


#: How long a failed ``--copy-storage`` move waits for the destination's libvirt to answer
#: again (a libvirtd restarted by systemd), and for a leftover transient copy of the VM there
#: to go, before it leaves its partial disk copies, named.
PARTIAL_RETRY_S = 30.0


def _remove_partial_copies(
    dst: LibvirtHost, plan: LivePlan, fresh: dict[str, str], event: Callable[..., None]
) -> None:
    """After a failed ``--copy-storage`` move: remove the partial copies libvirt created on
    the destination (paths with no file before the move), unless the VM is defined there
    (then they may be its disks: noted and left). The VM runs on its source disks. When the
    destination's libvirt stopped answering (killed during the move), a new connection is
    tried for up to :data:`PARTIAL_RETRY_S`."""
    try:
        dst.list_vms()
    except VmferryError as exc:
        event("note", f"{plan.destination.name} does not answer ({exc.message}): waiting up to "
              f"{PARTIAL_RETRY_S:g} s to remove the partial disk copies there")  # fmt: skip
        deadline = time.monotonic() + PARTIAL_RETRY_S
        while True:
            try:
                with LibvirtHost.connect(plan.destination.name, plan.destination.uri,
                                         own=True) as again:  # fmt: skip
                    _remove_partial_on(again, plan, fresh, event, deadline)
                    return
            except HostUnreachableError as unreachable:
                if time.monotonic() >= deadline:
                    event("note", f"the partial disk copies on {plan.destination.name} are left "
                          f"({', '.join(fresh.values())}): it does not answer: "
                          f"{unreachable.message}")  # fmt: skip
                    return
                time.sleep(2.0)
    _remove_partial_on(dst, plan, fresh, event, time.monotonic() + PARTIAL_RETRY_S)


def _remove_partial_on(dst: LibvirtHost, plan: LivePlan, fresh: dict[str, str],
                       event: Callable[..., None], deadline: float) -> None:  # fmt: skip
    """:func:`_remove_partial_copies` on a destination that answers. A transient copy of the
    VM there (the failed incoming one, which libvirt removes) is waited for until
    ``deadline``."""
    try:
        there = domain_view(dst, plan.vm)
        while there.exists and not there.persistent and not there.running:
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
            there = domain_view(dst, plan.vm)
    except VmferryError as exc:
        event("note", f"the partial disk copies on {plan.destination.name} are left "
              f"({', '.join(fresh.values())}): {exc.message}")  # fmt: skip
        return
    if there.exists:
        event("note", f"{plan.vm} is defined on {plan.destination.name}: its disk copies "
              f"there are left ({', '.join(fresh.values())})")  # fmt: skip
        return
    for target, path in fresh.items():
        try:
            if not volume_exists(dst, path):
                event("cleanup", f"disk {target}: no partial copy is left on "
                      f"{plan.destination.name} ({path})", target=target, path=path)  # fmt: skip
                continue
            delete_volume(dst, path)
        except VmferryError as exc:
            event("note", f"the partial copy of disk {target} ({path}) is left on "
                  f"{plan.destination.name}: {exc.message}")  # fmt: skip
            continue
        event("cleanup", f"removed the partial copy of disk {target} ({path}) from "
              f"{plan.destination.name}", target=target, path=path)  # fmt: skip


def _remove_source_copies(
    src: LibvirtHost, plan: LivePlan, disks: tuple[DiskCopy, ...], event: Callable[..., None]
) -> tuple[DiskCopy, ...]:
    """``--delete-source-disks``: remove the source's copy of each verified disk, now that
    the VM runs on its copies at the destination; a copy that cannot be removed is noted
    and left (the move stands)."""
    done = []
    for disk in disks:
        if disk.source_path is None:
            done.append(disk)
            continue
        try:
            delete_volume(src, disk.source_path)
        except VmferryError as exc:
            event("note", f"the source's copy of disk {disk.target} ({disk.source_path}) is "
                  f"left on {plan.source.name}: {exc.message}")  # fmt: skip
            done.append(disk)
            continue
        event("progress", f"removed the source's copy of disk {disk.target} "
              f"({disk.source_path}) from {plan.source.name}")  # fmt: skip
        done.append(replace(disk, source_removed=True))
    return tuple(done)


def _split_reason(dst: LibvirtHost, plan: LivePlan, error: str | None) -> str:
    """:func:`~vmferry.engine.postcopy.split_reason` with the destination's libvirt version
    (unknown when the destination does not answer)."""
    try:
        there: HostInfo | None = dst.info()
    except VmferryError:
        there = None
    return split_reason(plan.vm, plan.source.name, plan.destination.name, error,
                        there.libvirt_version if there is not None else None,
                        there is not None and postcopy_resume_crashes(there))  # fmt: skip


def _verify(src: LibvirtHost, dst: LibvirtHost, vm: str, moved: bool, report: WitnessReport,
            require: bool, *, split: bool = False) -> Verification:  # fmt: skip
    """Where is the VM now? Never leave two running copies (an orphan incoming domain on
    the destination is destroyed when the source copy is running), and never destroy a
    copy of a VM ``split`` by a post-copy move that broke off.

    A host whose connection broke during the migration (its libvirtd died or restarted)
    is asked once more on a new connection; if it still does not answer, that is one of
    the problems found, not a crash."""
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        src_answered, on_src = _look(src, vm, stack, problems)
        dst_answered, on_dst = _look(dst, vm, stack, problems)
        src_running = on_src is not None and on_src.state is VmState.RUNNING
        active_on_dst = on_dst is not None and on_dst.state is not VmState.SHUT_OFF
        if (not moved and not split and src_running and dst_answered is not None
                and active_on_dst):  # fmt: skip
            try:
                dst_answered.destroy(vm)  # the incoming copy of a failed migration
                on_dst = None
            except NotFoundError:
                on_dst = None  # it went away by itself
            except VmferryError as exc:
                problems.append(f"the incoming copy on {dst.name} is left: {exc.message}")
    if moved:
        if dst_answered is not None and (on_dst is None or on_dst.state is not VmState.RUNNING):
            problems.append(f"not running on {dst.name}")
        if src_answered is not None and on_src is not None:
            problems.append(f"still defined on {src.name}")
    elif split:
        problems.append(f"{vm} is split between {src.name} and {dst.name} (post-copy broke off)")
    elif src_answered is not None and not src_running:
        problems.append(source_died(src.name))
    return verification(
        report,
        running_on_destination=on_dst is not None and on_dst.state is VmState.RUNNING,
        absent_on_source=src_answered is not None and on_src is None,
        problems=problems,
        require=require,
    )


def _source_state(src: LibvirtHost, vm: str) -> tuple[bool, bool]:
    """After a failed move: whether the source answered, and whether ``vm`` runs there (a
    VM whose QEMU died runs nowhere, and no witness need wait for it)."""
    with contextlib.ExitStack() as stack:
        answered, record = _look(src, vm, stack, [])
    return answered is not None, record is not None and record.state is VmState.RUNNING


def _look(host: LibvirtHost, vm: str, stack: contextlib.ExitStack,
          problems: list[str]) -> tuple[LibvirtHost | None, VmRecord | None]:  # fmt: skip
    """``host``'s record of ``vm`` (None: absent) and the connection that answered
    (None, with a problem noted, when the host does not answer)."""
    try:
        return host, _record(host, vm)
    except HostUnreachableError:
        pass
    try:  # the connection broke: one new attempt
        again = stack.enter_context(LibvirtHost.connect(host.name, host.uri))
        return again, _record(again, vm)
    except HostUnreachableError as exc:
        problems.append(f"could not look for {vm} on {host.name}: {exc.message}")
        return None, None


def _record(host: LibvirtHost, vm: str) -> VmRecord | None:
    return {r.spec.name: r for r in host.list_vms()}.get(vm)


def _describe(request: MigrationRequest) -> dict[str, object]:
    return {
        "destination_uri": request.destination_uri,
        "migration_uri": request.migration_uri,
        "bandwidth_mib_s": request.bandwidth_mib_s,
        "postcopy_allowed": request.allow_postcopy,
        "unsafe": request.unsafe,
        "copy_disks": list(request.copy_disks),
        "parallel": request.parallel,
        "compression": request.compression,
    }
