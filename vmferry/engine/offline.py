"""Warm and cold moves: the VM stops, moves, and runs again on the destination.

WARM: save the running VM's state to a file in a directory both hosts see, restore it on
the destination from that file (running, with the domain's XML), define it there, undefine
it on the source, remove the file. COLD: ACPI shutdown (then power off only with
``force``), copy the disks only the source sees, define and start on the destination,
undefine on the source (and remove the source's disk copies only if asked). A VM that is
off when a cold move begins (``started_off``) is started nowhere: its disks are copied, it
is defined on the destination, still off, and undefined on the source; a VM started on the
source meanwhile stops the move (its copies are removed).

Every step has an undo. :func:`undo_plan` (pure) says which undos to run given the steps
done; :func:`run_offline_move` runs the steps and, on a failure or a Ctrl-C before the move
is committed (the source undefined), the undos in order, stopping at the first that fails
so that two copies never run. Whatever happens, the job ends recorded.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from vmferry.drivers.domain_edit import with_disk_files
from vmferry.drivers.libvirt_domains import domain_view
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import (
    abort_job,
    copy_volume,
    define_xml_of,
    delete_volume,
    restore,
    restore_xml_of,
    save,
    shutdown,
    volume_exists,
)
from vmferry.drivers.libvirt_pull_backup import (
    delete_checkpoints,
    freeze,
    pause,
    resume_thawed,
)
from vmferry.drivers.threads import call_in_thread
from vmferry.engine.incremental import copy_round, make_copies
from vmferry.engine.live import INTERRUPTED, NoteFn, ctrl_c_flag
from vmferry.errors import VmferryError
from vmferry.model import Host
from vmferry.model.migration import (
    JobStatus,
    MigrationOptions,
    MigrationResult,
    Strategy,
    Verification,
)
from vmferry.predict.incremental import Round, precopy_done
from vmferry.store.db import Store
from vmferry.verify.witness import Witness, WitnessReport, verification

T = TypeVar("T")


class Step(enum.StrEnum):
    """A step of a warm or cold move that has completed."""

    SAVED = "saved"  # warm: the state file is written; the VM is stopped on the source
    RESTORED = "restored"  # warm: it runs on the destination (transient)
    COPIES_MADE = "copies-made"  # warm-incremental: the destination's raw volumes exist
    PRECOPIED = "precopied"  # warm-incremental: the rounds while the VM runs are over
    PAUSED = "paused"  # warm-incremental: the VM is paused on the source
    SHUT_DOWN = "shut-down"  # cold: the VM is off on the source (warm-incremental: destroyed)
    DISKS_COPIED = "disks-copied"  # cold: the destination has its own copies
    DEFINED = "defined"  # persistent on the destination
    STARTED = "started"  # cold: running on the destination
    SOURCE_UNDEFINED = "source-undefined"  # the commit point: the move cannot be undone
    CLEANED = "cleaned"  # the state file, or the source's disk copies when asked, removed


WARM_STEPS = (Step.SAVED, Step.RESTORED, Step.DEFINED, Step.SOURCE_UNDEFINED, Step.CLEANED)
COLD_STEPS = (Step.SHUT_DOWN, Step.DISKS_COPIED, Step.DEFINED, Step.STARTED,
              Step.SOURCE_UNDEFINED, Step.CLEANED)  # fmt: skip
INCREMENTAL_STEPS = (Step.COPIES_MADE, Step.PRECOPIED, Step.PAUSED, Step.DISKS_COPIED,
                     Step.DEFINED, Step.STARTED, Step.SHUT_DOWN, Step.SOURCE_UNDEFINED,
                     Step.CLEANED)  # fmt: skip


class Undo(enum.StrEnum):
    """One undo action."""

    UNDEFINE_ON_DESTINATION = "undefine-on-destination"
    SAVE_ON_DESTINATION = "save-on-destination"  # warm: its newer state back into the file
    DESTROY_ON_DESTINATION = "destroy-on-destination"
    DELETE_DISK_COPIES = "delete-disk-copies"
    RESTORE_ON_SOURCE = "restore-on-source"  # warm: run it again from the state file
    REMOVE_STATE_FILE = "remove-state-file"
    START_ON_SOURCE = "start-on-source"  # cold: boot it again where it was
    RESUME_ON_SOURCE = "resume-on-source"  # warm-incremental: unpause it, thaw its disks
    DELETE_CHECKPOINTS = "delete-checkpoints"  # warm-incremental: the move's checkpoints


def committed(done: Sequence[Step]) -> bool:
    """Pure: whether the move is past the point of no return (the source undefined)."""
    return Step.SOURCE_UNDEFINED in done


def undo_plan(
    strategy: Strategy, done: Sequence[Step], *, source_running: bool, started_off: bool = False
) -> tuple[Undo, ...]:
    """Pure: the undos, in order, that leave the VM running on the source again.

    ``done``: the steps completed, in order. ``source_running``: whether the source runs
    the VM now (it matters before the first step: a failed save leaves it running, and a
    guest may power off late after an ACPI shutdown that timed out). ``started_off``: a cold
    move of a VM that was off: it is left off, and the copies (some may be made before a
    failure) are removed. Once the move is committed nothing is undone.
    """
    if not strategy.offline:
        raise ValueError(f"{strategy} is not a warm or cold move")
    if committed(done):
        return ()
    steps = set(done)
    undos: list[Undo] = []
    if strategy is Strategy.WARM:
        if Step.SAVED not in steps:
            return ()  # libvirt resumes the VM after a failed or aborted save
        if Step.DEFINED in steps:
            undos.append(Undo.UNDEFINE_ON_DESTINATION)
        if Step.RESTORED in steps:  # it ran there: its state is newer than the file's
            undos.append(Undo.SAVE_ON_DESTINATION)
        return (*undos, Undo.RESTORE_ON_SOURCE, Undo.REMOVE_STATE_FILE)
    if Step.STARTED in steps:
        undos.append(Undo.DESTROY_ON_DESTINATION)
    if Step.DEFINED in steps:
        undos.append(Undo.UNDEFINE_ON_DESTINATION)
    if strategy is Strategy.WARM_INCREMENTAL:
        if Step.COPIES_MADE in steps:
            undos.append(Undo.DELETE_DISK_COPIES)
        if Step.SHUT_DOWN in steps or (Step.PAUSED not in steps and not source_running):
            undos.append(Undo.START_ON_SOURCE)
        elif Step.PAUSED in steps:
            undos.append(Undo.RESUME_ON_SOURCE)
        if Step.COPIES_MADE in steps:  # with the VM running again: its bitmaps go too
            undos.append(Undo.DELETE_CHECKPOINTS)
        return tuple(undos)
    if started_off:  # it was off and stays so, wherever the move stopped
        return (*undos, Undo.DELETE_DISK_COPIES)
    if Step.DISKS_COPIED in steps:
        undos.append(Undo.DELETE_DISK_COPIES)
    if Step.SHUT_DOWN in steps or not source_running:
        undos.append(Undo.START_ON_SOURCE)
    return tuple(undos)


@dataclass(frozen=True)
class DiskCopy:
    """A disk only the source sees: copied into ``pool`` on the destination (same path)."""

    target: str
    path: str
    format: str
    pool: str


@dataclass(frozen=True)
class OfflinePlan:
    job_id: str
    vm: str
    source: Host
    destination: Host
    options: MigrationOptions
    state_dir: str | None = None  # warm: proven shared by the caller
    copies: tuple[DiskCopy, ...] = ()  # cold
    started_off: bool = False  # cold: the VM was off when the move began; it stays off


class _Cancelled(Exception):
    """Ctrl-C or `vmferry job cancel` before the move was committed."""


@dataclass
class _Run:
    """What the move has done so far (for the undo and the result)."""

    done: list[Step]
    state_path: str | None = None
    copied: tuple[str, ...] = ()
    paused_at: float | None = None
    running_at: float | None = None


def _quiet(*_args: object) -> None:
    return None


def run_offline_move(
    plan: OfflinePlan,
    store: Store,
    witness: Witness,
    *,
    note: NoteFn = _quiet,
    poll_s: float = 0.25,
    settle: Callable[[MigrationResult], None] | None = None,
) -> MigrationResult:
    """Run a warm or cold ``plan`` to its end and record it; unless the move completed,
    the VM is left running on the source whenever the undos can do it. ``settle`` runs once
    the outcome is known and before the job ends."""
    strategy = plan.options.strategy
    if not strategy.offline:
        raise ValueError(f"{strategy} is not a warm or cold move")

    def event(kind: str, message: str, **data: object) -> None:
        store.add_event(plan.job_id, kind, message, dict(data))
        note(message)

    run = _Run(done=[])
    failure: str | None = None
    cancelled = False
    started = time.monotonic()
    with (
        ctrl_c_flag() as interrupted,
        LibvirtHost.connect(plan.source.name, plan.source.uri) as src,
        LibvirtHost.connect(plan.destination.name, plan.destination.uri) as dst,
    ):

        def stop_requested() -> str | None:
            if interrupted.is_set():
                return INTERRUPTED
            if store.is_cancel_requested(plan.job_id):
                return "cancelled by `vmferry job cancel`"
            return None

        def checkpoint() -> None:
            why = stop_requested()
            if why is not None and not committed(run.done):
                raise _Cancelled(why)

        try:
            witness.start()
            store.set_status(plan.job_id, JobStatus.RUNNING)
            steps = {
                Strategy.WARM: _warm,
                Strategy.COLD: _cold,
                Strategy.WARM_INCREMENTAL: _incremental,
            }[strategy]
            steps(plan, src, dst, run, event, checkpoint, stop_requested, poll_s)
        except _Cancelled as exc:
            failure, cancelled = str(exc), True
        except Exception as exc:  # a step failed: undo, record
            failure = (
                exc.message if isinstance(exc, VmferryError) else f"{type(exc).__name__}: {exc}"
            )
        if failure is not None and committed(run.done):
            event("note", f"after the move was committed: {failure}")
            failure = None
        if failure is not None:
            event("status", f"{'cancelled' if cancelled else 'failed'} after "
                  f"{', '.join(run.done) or 'no step'}: {failure}; undoing")  # fmt: skip
            _undo(plan, src, dst, run, event)
        moved = failure is None
        report = witness.finish(moved)
        verification = _verify(src, dst, plan, moved, report, run.copied)
    if moved and verification.passed:
        status, reason = JobStatus.COMPLETED, None
    elif moved:
        status, reason = (
            JobStatus.FAILED,
            "verification failed: " + "; ".join(verification.problems),
        )
    else:
        status = JobStatus.CANCELLED if cancelled else JobStatus.FAILED
        reason = failure
    downtime = None
    if run.paused_at is not None and run.running_at is not None:
        downtime = round((run.running_at - run.paused_at) * 1000)
    result = MigrationResult(
        job_id=plan.job_id,
        vm=plan.vm,
        source=plan.source.name,
        destination=plan.destination.name,
        strategy=strategy,
        status=status,
        reason=reason,
        total_time_ms=round((time.monotonic() - started) * 1000),
        downtime_ms=downtime if moved else None,
        transferred_bytes=None,
        iterations=None,
        verification=verification,
    )
    try:
        if settle is not None:
            settle(result)
    finally:  # the result is written whatever settle met
        store.finish(plan.job_id, result)
    return result


EventFn = Callable[..., None]


def _blocking(call: Callable[[], T], stop: Callable[[], str | None], on_stop: Callable[[], None],
              poll_s: float) -> T:  # fmt: skip
    """Run a blocking libvirt call in a thread; when a stop is requested meanwhile, call
    ``on_stop`` once (e.g. abort the job) and still wait for the call to return."""
    worker, outcome = call_in_thread(call, "vmferry-offline-step")
    asked = False
    while worker.is_alive():
        worker.join(poll_s)
        if not asked and stop() is not None:
            asked = True
            on_stop()
    return outcome.result()


def _warm(
    plan: OfflinePlan,
    src: LibvirtHost,
    dst: LibvirtHost,
    run: _Run,
    event: EventFn,
    checkpoint: Callable[[], None],
    stop: Callable[[], str | None],
    poll_s: float,
) -> None:
    assert plan.state_dir is not None
    vm = plan.vm
    restore_xml, define_xml = restore_xml_of(src, vm), define_xml_of(src, vm)
    path = f"{plan.state_dir.rstrip('/')}/vmferry-{vm}-{plan.job_id[:8]}.save"
    run.state_path = path
    checkpoint()
    event("status", f"saving {vm} on {src.name} to {path} (the VM stops now)", path=path)
    run.paused_at = time.monotonic()
    _blocking(lambda: save(src, vm, path), stop, lambda: abort_job(src, vm), poll_s)
    run.done.append(Step.SAVED)
    event("progress", f"saved in {time.monotonic() - run.paused_at:.1f} s", step=Step.SAVED)
    checkpoint()
    event("status", f"restoring {vm} on {dst.name} from {path}")
    _blocking(lambda: restore(dst, path, restore_xml), stop, _quiet, poll_s)
    run.running_at = time.monotonic()
    run.done.append(Step.RESTORED)
    event("progress", f"{vm} runs on {dst.name}; downtime "
          f"{(run.running_at - run.paused_at) * 1000:.0f} ms", step=Step.RESTORED)  # fmt: skip
    checkpoint()
    dst.define_xml(define_xml)
    run.done.append(Step.DEFINED)
    checkpoint()
    src.undefine(vm)
    run.done.append(Step.SOURCE_UNDEFINED)
    event("progress", f"{vm} defined on {dst.name} and undefined on {src.name}",
          step=Step.SOURCE_UNDEFINED)  # fmt: skip
    delete_volume(src, path)
    run.done.append(Step.CLEANED)


def checkpoint_prefix(job_id: str) -> str:
    """The names of a warm-incremental move's checkpoints start with this."""
    return f"vmferry-{job_id[:8]}-"


def _drop_checkpoints(src: LibvirtHost, plan: OfflinePlan, event: EventFn) -> None:
    gone = delete_checkpoints(src, plan.vm, checkpoint_prefix(plan.job_id))
    if gone:
        event("progress", f"deleted checkpoints {', '.join(gone)} of {plan.vm} on {src.name}")


def _power_off_source(src: LibvirtHost, plan: OfflinePlan, run: _Run, event: EventFn) -> None:
    """The paused source: its checkpoints deleted while it is active (their bitmaps go too),
    then powered off."""
    _drop_checkpoints(src, plan, event)
    src.destroy(plan.vm)
    run.done.append(Step.SHUT_DOWN)


def _incremental(
    plan: OfflinePlan,
    src: LibvirtHost,
    dst: LibvirtHost,
    run: _Run,
    event: EventFn,
    checkpoint: Callable[[], None],
    stop: Callable[[], str | None],
    poll_s: float,
) -> None:
    """Rounds while the VM runs, then the cutover (vmferry.engine.incremental)."""
    vm, options = plan.vm, plan.options
    define_xml = define_xml_of(src, vm)
    copied = {c.target for c in plan.copies}
    kept = [d for d in src.get_vm(vm).spec.disks if d.target not in copied and d.source]
    others = [d.target for d in kept]
    # a writable disk both hosts open (shared storage): QEMU's image lock lets one process
    # hold it, so the source is powered off before the destination starts
    shared = [d.target for d in kept if not (d.readonly or d.removable or d.shareable)]
    checkpoint()
    made = make_copies(src, dst, [(c.target, c.path, c.pool) for c in plan.copies])
    run.copied = tuple(made.values())
    run.done.append(Step.COPIES_MADE)
    event("status", f"copying {', '.join(made)} of {vm} while it runs, into "
          f"{', '.join(made.values())} on {dst.name}", copies=made)  # fmt: skip
    prefix = checkpoint_prefix(plan.job_id)
    rate = None if options.bandwidth_mib_s is None else options.bandwidth_mib_s * 2**20
    rounds: list[Round] = []
    since: str | None = None
    while True:
        name = f"{prefix}{len(rounds)}"
        began = time.monotonic()
        moved = copy_round(src, dst, vm, made, others, checkpoint=name, since=since,
                           check=checkpoint, rate_bytes_s=rate)  # fmt: skip
        rounds.append(Round(len(rounds), moved, time.monotonic() - began))
        since = name
        event("progress", f"round {rounds[-1].number}: {moved / 2**20:.1f} MiB in "
              f"{rounds[-1].seconds:.1f} s ({'whole disks' if len(rounds) == 1 else 'changes'})",
              round=rounds[-1].number, copied_bytes=moved,
              seconds=round(rounds[-1].seconds, 3))  # fmt: skip
        why = precopy_done(rounds, options.max_downtime_ms)
        if why is not None:
            break
    run.done.append(Step.PRECOPIED)
    event("status", f"cutover: {why}")
    checkpoint()
    run.done.append(Step.PAUSED)  # from here an undo resumes and thaws it (either may be moot)
    frozen = freeze(src, vm)
    event("status", f"{vm}'s filesystems " + ("frozen through its guest agent" if frozen is None
          else f"not frozen ({frozen}): its disks are copied as after a power cut"))  # fmt: skip
    run.paused_at = time.monotonic()
    pause(src, vm)
    began = time.monotonic()
    last = copy_round(src, dst, vm, made, others, checkpoint=None, since=since, check=checkpoint)
    run.done.append(Step.DISKS_COPIED)
    event("progress", f"last round: {last / 2**20:.1f} MiB in {time.monotonic() - began:.1f} s "
          f"with {vm} paused", round=len(rounds), copied_bytes=last,
          seconds=round(time.monotonic() - began, 3), last=True)  # fmt: skip
    checkpoint()
    if shared:
        _power_off_source(src, plan, run, event)
    dst.define_xml(with_disk_files(define_xml, {t: (p, "raw") for t, p in made.items()}))
    run.done.append(Step.DEFINED)
    checkpoint()
    dst.start(vm)  # a source still paused sends nothing, and its copied disks are its own
    run.running_at = time.monotonic()
    run.done.append(Step.STARTED)
    event("progress", f"{vm} started on {dst.name}; stopped for "
          f"{(run.running_at - run.paused_at) * 1000:.0f} ms (then it boots)",
          step=Step.STARTED)  # fmt: skip
    if not shared:
        _power_off_source(src, plan, run, event)
    checkpoint()
    src.undefine(vm)
    run.done.append(Step.SOURCE_UNDEFINED)
    if options.delete_source_disks:
        for copy in plan.copies:
            delete_volume(src, copy.path)
            event("progress", f"removed the source's copy of disk {copy.target} ({copy.path})")
    run.done.append(Step.CLEANED)


def _cold(
    plan: OfflinePlan,
    src: LibvirtHost,
    dst: LibvirtHost,
    run: _Run,
    event: EventFn,
    checkpoint: Callable[[], None],
    stop: Callable[[], str | None],
    poll_s: float,
) -> None:
    vm, options = plan.vm, plan.options
    define_xml = define_xml_of(src, vm)
    checkpoint()
    if plan.started_off:
        _still_off(src, vm, "began")
        event("status", f"{vm} is off on {src.name}: its disks are copied and it is defined "
              f"on {dst.name}, where it stays off", started_off=True)  # fmt: skip
    else:
        _shut_down(plan, src, event, checkpoint, run, poll_s)
    copied: list[str] = []
    try:
        for copy in plan.copies:
            checkpoint()
            event("status", f"copying disk {copy.target} ({copy.path}, {copy.format}) into "
                  f"pool {copy.pool} on {dst.name}")  # fmt: skip
            copied.append(copy_volume(src, dst, copy.path, copy.format, copy.pool))
            event("progress", f"copied disk {copy.target} to {copied[-1]} on {dst.name}",
                  target=copy.target, copied_path=copied[-1])  # fmt: skip
    finally:
        run.copied = tuple(copied)
    run.done.append(Step.DISKS_COPIED)
    checkpoint()
    if options.to_pool is not None:  # the copies are files of another pool: name them
        moved = {c.target: (path, None) for c, path in zip(plan.copies, copied, strict=True)}
        define_xml = with_disk_files(define_xml, moved)
    if plan.started_off:  # nobody started it on the source while it was copied
        _still_off(src, vm, "was copied")
    dst.define_xml(define_xml)
    run.done.append(Step.DEFINED)
    checkpoint()
    if not plan.started_off:
        dst.start(vm)
        run.running_at = time.monotonic()
        run.done.append(Step.STARTED)
        stopped = run.running_at - (run.paused_at or run.running_at)
        event("progress", f"{vm} started on {dst.name}; downtime {stopped * 1000:.0f} ms",
              step=Step.STARTED)  # fmt: skip
        checkpoint()
    src.undefine(vm)
    run.done.append(Step.SOURCE_UNDEFINED)
    if options.delete_source_disks:
        for copy in plan.copies:
            delete_volume(src, copy.path)
            event("progress", f"removed the source's copy of disk {copy.target} ({copy.path})")
    run.done.append(Step.CLEANED)


def _shut_down(plan: OfflinePlan, src: LibvirtHost, event: EventFn,
               checkpoint: Callable[[], None], run: _Run, poll_s: float) -> None:  # fmt: skip
    """ACPI shutdown, then power off with ``--force`` after the timeout."""
    vm, options = plan.vm, plan.options
    event("status", f"shutting {vm} down on {src.name} (ACPI, up to "
          f"{options.shutdown_timeout_s:g} s)")  # fmt: skip
    run.paused_at = time.monotonic()
    shutdown(src, vm)
    deadline = run.paused_at + options.shutdown_timeout_s
    while domain_view(src, vm).running or domain_view(src, vm).paused:
        checkpoint()
        if time.monotonic() >= deadline:
            if not options.force:
                raise VmferryError(f"{vm} did not power off within {options.shutdown_timeout_s:g}"
                                   " s of the ACPI shutdown; re-run with --force to power it "
                                   "off, or shut it down from inside")  # fmt: skip
            event("status", f"{vm} ignored the ACPI shutdown; powering it off (--force)")
            src.destroy(vm)
            break
        time.sleep(poll_s)
    run.done.append(Step.SHUT_DOWN)
    event("progress", f"{vm} is off on {src.name}", step=Step.SHUT_DOWN)


def _still_off(src: LibvirtHost, vm: str, when: str) -> None:
    """A VM moved while off must be off still: started on its source meanwhile, the move
    stops (its undo removes the copies) rather than carry disks the guest is writing."""
    if domain_view(src, vm).active:
        raise VmferryError(f"{vm} was started on {src.name} after the move {when}; it was "
                           "moved as a VM that is off: move it again as it is now")  # fmt: skip


def _undo(plan: OfflinePlan, src: LibvirtHost, dst: LibvirtHost, run: _Run, event: EventFn) -> None:
    """Run the undo plan; stop at the first undo that fails (so two copies never run)."""
    try:
        source_running = domain_view(src, plan.vm).running
    except VmferryError:
        source_running = False
    path, vm = run.state_path or "", plan.vm

    def delete_copies() -> None:
        for copy in run.copied:
            delete_volume(dst, copy)

    actions: dict[Undo, Callable[[], None]] = {
        Undo.UNDEFINE_ON_DESTINATION: lambda: dst.undefine(vm),
        Undo.SAVE_ON_DESTINATION: lambda: save(dst, vm, path),
        Undo.DESTROY_ON_DESTINATION: lambda: dst.destroy(vm),
        Undo.DELETE_DISK_COPIES: delete_copies,
        Undo.RESTORE_ON_SOURCE: lambda: restore(src, path, None),
        Undo.REMOVE_STATE_FILE: lambda: delete_volume(src, path),
        Undo.START_ON_SOURCE: lambda: src.start(vm),
        Undo.RESUME_ON_SOURCE: lambda: resume_thawed(src, vm),
        Undo.DELETE_CHECKPOINTS: lambda: _drop_checkpoints(src, plan, event),
    }
    for undo in undo_plan(plan.options.strategy, run.done, source_running=source_running,
                          started_off=plan.started_off):  # fmt: skip
        try:
            actions[undo]()
        except VmferryError as exc:
            event("note", f"undo {undo} failed: {exc.message}; stopped undoing", undo=str(undo))
            return
        event("status", f"undone: {undo}", undo=str(undo))


def _verify(src: LibvirtHost, dst: LibvirtHost, plan: OfflinePlan, moved: bool,
            report: WitnessReport, copied: Sequence[str]) -> Verification:  # fmt: skip
    """Where the VM runs now (or, moved while off, is defined off with its disk copies),
    with what the witness saw."""
    vm = plan.vm
    problems: list[str] = []
    views = {}
    for host in (src, dst):
        try:
            views[host.name] = domain_view(host, vm)
        except VmferryError as exc:
            problems.append(f"could not look for {vm} on {host.name}: {exc.message}")
    on_src, on_dst = views.get(src.name), views.get(dst.name)
    running_dst = on_dst is not None and on_dst.running
    absent_src = on_src is not None and not on_src.exists
    left_off = False
    if moved and plan.started_off:
        left_off = on_dst is not None and on_dst.exists and not on_dst.active
        if on_dst is not None and not on_dst.exists:
            problems.append(f"not defined on {dst.name}")
        elif on_dst is not None and on_dst.active:
            problems.append(f"it was off, and it is active on {dst.name}")
        for path in copied:
            try:
                if not volume_exists(dst, path):
                    problems.append(f"its disk copy {path} is not on {dst.name}")
            except VmferryError as exc:
                problems.append(f"could not look for its disk copy {path}: {exc.message}")
    elif moved and not running_dst:
        problems.append(f"not running on {dst.name}")
    if moved:
        if on_src is not None and on_src.exists:
            problems.append(f"still defined on {src.name}")
        if on_dst is not None and on_dst.exists and not on_dst.persistent:
            problems.append(f"not persistent on {dst.name}")
    elif plan.started_off:
        if on_src is not None and not on_src.exists:
            problems.append(f"no longer defined on {src.name}")
    elif on_src is not None and not on_src.running:
        problems.append(f"the source copy on {src.name} is not running")
    return verification(
        report,
        running_on_destination=running_dst,
        absent_on_source=absent_src,
        problems=problems,
        require=plan.options.require_verification,
        left_off=left_off,
    )
