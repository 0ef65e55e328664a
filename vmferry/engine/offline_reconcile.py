"""After vmferry was killed during a warm or cold move: what to repair, and what the job's
record becomes (pure).

A live migration left behind is libvirt's to finish or fail (:mod:`vmferry.engine.reconcile`).
A warm or cold move is vmferry's own sequence of steps, so after a crash the VM can be in
between: saved to a file and running nowhere, running on the destination as a transient
domain, or shut off on the source. :func:`decide_offline` looks at the steps the job
recorded, each host's view of the VM and whether the state file is still there, and
returns the repairs that finish or undo the move:

- the move was committed (the source undefined), or the destination runs the VM while the
  source does not: **finish** it (define it on the destination if it is transient, undefine
  it on the source, remove the state file); the job completes;
- the source runs the VM: the move did not happen (remove a leftover definition on the
  destination and the state file); the job fails;
- a warm move whose VM runs nowhere, with its state file and its source definition there,
  that never ran on the destination: **restore it on the source** and remove the file; the
  job fails with the VM back where it was;
- a cold move whose VM runs nowhere and never ran on the destination: **start it on the
  source** (after removing a stopped definition on the destination); the job fails;
- a cold move of a VM that was off (``started_off``): nothing is started. Defined on the
  destination with its copies made: finish it (undefine it on the source); the job
  completes. Else the leftover definition on the destination goes; the job fails;
- a warm-incremental move that never started the VM on the destination: its pull backup
  ended on the source, the VM resumed (thawed) or started there, a leftover definition and
  the copies on the destination removed, the move's checkpoints deleted; the job fails. One
  that had started it there, with the VM running there and paused on the source: the
  backup ended, the checkpoints deleted, the paused source powered off and undefined; the
  job completes;
- anything else, or a host that did not answer: touch nothing and say why.

Safety: nothing is repaired while a host did not answer or libvirt still runs a job on the
VM (a save or restore the dead vmferry started); a warm state file is never restored once
the VM has run on the destination (its disks are newer than the file's memory), nor a cold
VM started on its source after it ran on the destination; the only running copy is never
stopped.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from vmferry.engine.reconcile import INTERRUPTED, describe
from vmferry.model.domain_view import DomainView
from vmferry.model.migration import Job, JobStatus, Strategy

__all__ = [
    "OfflineDecision",
    "Repair",
    "copies_of",
    "decide_offline",
    "recorded_steps",
    "started_off",
    "state_path_of",
]


class Repair(enum.StrEnum):
    """One repair, in the order a decision lists them."""

    UNDEFINE_ON_DESTINATION = "undefine-on-destination"  # a stopped leftover definition
    DEFINE_ON_DESTINATION = "define-on-destination"  # make the running transient copy stay
    UNDEFINE_ON_SOURCE = "undefine-on-source"
    RESTORE_ON_SOURCE = "restore-on-source"  # warm: run it again from the state file
    START_ON_SOURCE = "start-on-source"  # cold: boot it again where it was
    REMOVE_STATE_FILE = "remove-state-file"
    END_BACKUP_ON_SOURCE = "end-backup-on-source"  # warm-incremental: its pull backup
    RESUME_ON_SOURCE = "resume-on-source"  # warm-incremental: unpause it, thaw its disks
    DELETE_COPIES = "delete-copies"  # warm-incremental: the raw copies on the destination
    DELETE_CHECKPOINTS = "delete-checkpoints"  # warm-incremental: the move's checkpoints
    DESTROY_ON_SOURCE = "destroy-on-source"  # warm-incremental: the paused source copy


@dataclass(frozen=True)
class OfflineDecision:
    """``action``: ``leave``, ``wait``, ``complete``, ``fail`` or ``unknown``; ``status``
    is what the job becomes once every repair succeeded (``None``: the record stays)."""

    action: str
    reason: str
    status: JobStatus | None = None
    repairs: tuple[Repair, ...] = ()


def recorded_steps(job: Job) -> list[str]:
    """The steps the move recorded (``data["step"]`` of its events), in order."""
    return [str(e.data["step"]) for e in job.events if isinstance(e.data.get("step"), str)]


def started_off(job: Job) -> bool:
    """Whether the job is a cold move of a VM that was off (its engine said so first)."""
    return any(e.data.get("started_off") is True for e in job.events)


def state_path_of(job: Job) -> str | None:
    """The warm move's state file, as its ``saving`` event recorded it."""
    for e in job.events:
        path = e.data.get("path")
        if isinstance(path, str) and path:
            return path
    return None


def copies_of(job: Job) -> list[str]:
    """The warm-incremental move's copies on the destination, as its ``copies`` event
    recorded them."""
    for e in job.events:
        copies = e.data.get("copies")
        if isinstance(copies, dict):
            return [str(p) for p in copies.values()]
    return []


def decide_offline(
    job: Job,
    owner_alive: bool,
    steps: Sequence[str],
    source: DomainView | None,
    destination: DomainView | None,
    state_file: bool | None,
) -> OfflineDecision:
    """The repairs that bring a warm or cold ``job`` to an end (see the module's text).

    ``steps``: :func:`recorded_steps`; ``source`` / ``destination``: the hosts' views of
    the VM (``None``: no answer); ``state_file``: whether the warm move's state file exists
    (``None``: unknown, or no file for a cold move).
    """
    vm, src, dst = job.vm, job.source, job.destination
    warm = job.options.strategy is Strategy.WARM
    if job.status.finished:
        return OfflineDecision("leave", f"the job already finished as {job.status}")
    if owner_alive:
        return OfflineDecision(
            "leave", f"the vmferry process driving it (pid {job.owner_pid}) is still running"
        )
    if source is None or destination is None:
        who = src if source is None else dst
        return OfflineDecision(
            "unknown", f"{who} did not answer; nothing was touched; resume the job again later"
        )
    busy = [n for n, v in ((src, source), (dst, destination)) if v.exists and v.job_active]
    if busy and not (job.options.strategy is Strategy.WARM_INCREMENTAL and busy == [src]):
        return OfflineDecision(
            "wait", f"libvirt still runs a job on {vm} on {' and '.join(busy)} (a save or restore)"
        )
    seen = f"{src}: {describe(source)}, {dst}: {describe(destination)}"
    if job.options.strategy is Strategy.WARM_INCREMENTAL:
        return _incremental(job, steps, source, destination, seen)
    clean = (Repair.REMOVE_STATE_FILE,) if warm and state_file else ()
    given_up = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
    if source.running and destination.active:
        return OfflineDecision(
            "unknown", f"{vm} is active on both hosts ({seen}); nothing was touched: check "
            "which copy is current and destroy the other"
        )  # fmt: skip
    if "source-undefined" in steps or (destination.running and not source.active):
        repairs: list[Repair] = []
        if destination.running and not destination.persistent:
            repairs.append(Repair.DEFINE_ON_DESTINATION)
        if source.exists:
            repairs.append(Repair.UNDEFINE_ON_SOURCE)
        return OfflineDecision(
            "complete",
            f"{INTERRUPTED}the move had reached {dst} ({seen}): finished it there",
            JobStatus.COMPLETED,
            (*repairs, *clean),
        )
    leftover = (
        (Repair.UNDEFINE_ON_DESTINATION,)
        if destination.exists and not destination.active and destination.persistent
        else ()
    )
    if source.running:
        return OfflineDecision(
            "fail",
            f"{INTERRUPTED}the move did not happen: {vm} still runs on {src}",
            given_up,
            (*leftover, *clean),
        )
    if source.paused or destination.paused:  # libvirt pauses a VM it saves; once the save
        # is written the job ends a moment before the VM is stopped (seen in the lab)
        return OfflineDecision(
            "wait", f"{vm} is paused ({seen}), as a save or restore leaves it just before "
            "its end; if it stays paused, resume or destroy it by hand"
        )  # fmt: skip
    if not source.exists:
        return _undefined_on_source(vm, src, seen)
    if started_off(job):
        return _off(job, steps, source, destination, leftover, seen)
    if warm:
        if "restored" in steps:
            return OfflineDecision(
                "unknown",
                f"{INTERRUPTED}{vm} ran on {dst} and runs nowhere now ({seen}); the state file "
                "is older than its disks, so it was not restored: check the VM and start it",
                JobStatus.FAILED,
            )
        if not state_file:
            return OfflineDecision(
                "unknown",
                f"{INTERRUPTED}{vm} runs nowhere ({seen}) and its state file is not there; "
                "nothing was touched: start it where it belongs",
                JobStatus.FAILED,
            )
        return OfflineDecision(
            "fail",
            f"{INTERRUPTED}the move stopped after the save: restored {vm} on {src} from its "
            "state file",
            given_up,
            (*leftover, Repair.RESTORE_ON_SOURCE, Repair.REMOVE_STATE_FILE),
        )
    if "started" in steps:
        return OfflineDecision(
            "unknown",
            f"{INTERRUPTED}{vm} ran on {dst} and runs nowhere now ({seen}); its disks there "
            f"may be newer than on {src}, so it was not started: check the VM and start it",
            JobStatus.FAILED,
        )
    return OfflineDecision(
        "fail",
        f"{INTERRUPTED}the cold move stopped with {vm} off ({seen}): started it on {src} again"
        + ("; disk copies made on the destination were kept" if "disks-copied" in steps else ""),
        given_up,
        (*leftover, Repair.START_ON_SOURCE),
    )


def _incremental(job: Job, steps: Sequence[str], source: DomainView, destination: DomainView,
                 seen: str) -> OfflineDecision:  # fmt: skip
    """A warm-incremental move whose vmferry died (both hosts answered). A job on the source
    is the move's pull backup (ended first); nothing on the destination is busy."""
    vm, src, dst = job.vm, job.source, job.destination
    given_up = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
    ended = (Repair.END_BACKUP_ON_SOURCE,) if source.job_active else ()
    if "started" in steps or (destination.running and not source.active):
        if not destination.running:
            return OfflineDecision(
                "unknown", f"{INTERRUPTED}{vm} was started on {dst} and runs nowhere now "
                f"({seen}); its copies there may be newer than its disks on {src}, so it was "
                "not started: check the VM and start it", JobStatus.FAILED,
            )  # fmt: skip
        finish = (Repair.DESTROY_ON_SOURCE,) if source.active else ()
        there = (Repair.DELETE_CHECKPOINTS, *finish, Repair.UNDEFINE_ON_SOURCE)
        return OfflineDecision(
            "complete", f"{INTERRUPTED}{vm} runs on {dst} ({seen}): finished the move there",
            JobStatus.COMPLETED, (*ended, *(there if source.exists else ())),
        )  # fmt: skip
    if not source.exists:
        return _undefined_on_source(vm, src, seen)
    back = (Repair.RESUME_ON_SOURCE if source.paused or source.running
            else Repair.START_ON_SOURCE)  # fmt: skip
    leftover = (Repair.UNDEFINE_ON_DESTINATION,) if destination.exists else ()
    return OfflineDecision(
        "fail", f"{INTERRUPTED}the move stopped before {vm} ran on {dst} ({seen}): it runs on "
        f"{src}; the copies on {dst} and the move's checkpoints removed", given_up,
        (*ended, back, *leftover, Repair.DELETE_COPIES, Repair.DELETE_CHECKPOINTS),
    )  # fmt: skip


def _off(job: Job, steps: Sequence[str], source: DomainView, destination: DomainView,
         leftover: tuple[Repair, ...], seen: str) -> OfflineDecision:  # fmt: skip
    """A cold move of a VM that was off, off on both hosts now, defined on the source."""
    vm, src, dst = job.vm, job.source, job.destination
    if "defined" in steps and destination.exists and destination.persistent:
        return OfflineDecision(
            "complete", f"{INTERRUPTED}{vm} (off) was defined on {dst} with its disk copies "
            f"({seen}): finished the move there; it stays off", JobStatus.COMPLETED,
            (Repair.UNDEFINE_ON_SOURCE,) if source.exists else (),
        )  # fmt: skip
    given_up = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
    return OfflineDecision(
        "fail", f"{INTERRUPTED}the cold move of {vm} (off) stopped before it was defined on "
        f"{dst} ({seen}): it stays off on {src}; disk copies made on {dst} were kept",
        given_up, leftover,
    )  # fmt: skip


def _undefined_on_source(vm: str, src: str, seen: str) -> OfflineDecision:
    """The VM runs on neither host and its source no longer defines it: hands off."""
    return OfflineDecision(
        "unknown", f"{INTERRUPTED}{vm} runs on neither host and {src} no longer defines it "
        f"({seen}); nothing was touched", JobStatus.FAILED,
    )  # fmt: skip
