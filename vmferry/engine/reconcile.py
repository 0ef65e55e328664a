"""After vmferry was interrupted mid-migration: what the job record should become (pure).

The service (:mod:`vmferry.service.jobs`) reads the job, whether its owner process lives,
and what each host reports about the VM; :func:`decide` turns that into one action:

``leave``
    the job already finished, or the vmferry process driving it is still alive.
``wait``
    libvirt still runs a job on the domain (the migration is under way): wait, then look
    again.
``complete``
    the destination runs the VM and the source does not: the migration completed.
``complete-undefine-source``
    as ``complete``, and the source still holds the VM's stopped definition while the
    destination's is persistent: remove the source's (as the move's own end does), so the
    VM is defined on one host only.
``fail``
    the source runs the VM and the destination has no active copy: the migration did not
    complete and the source is intact.
``fail-destroy-orphan``
    the source runs the VM and the destination holds a paused or running incoming copy:
    destroy that copy (so there are never two running copies), then as ``fail``.
``split``
    a host says a post-copy migration of the VM broke off: its memory is split between the
    two hosts and neither copy can run alone; touch nothing, say what recovers it, and end
    the job ``failed``.
``unknown``
    no host that answered runs the VM, or a host needed to tell did not answer: touch
    nothing and say so.

Safety rules the table keeps: a host that did not answer (``None``) never has anything
destroyed and never counts as "not running the VM"; the only copy that runs is never
destroyed (an orphan is destroyed only while the source runs the VM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vmferry.engine.postcopy import split_reason
from vmferry.model.domain_view import ABSENT, DomainView
from vmferry.model.migration import Job, JobStatus

__all__ = ["ABSENT", "Action", "Decision", "DomainView", "decide", "describe"]

Action = Literal["leave", "wait", "complete", "complete-undefine-source", "fail",
                 "fail-destroy-orphan", "split", "unknown"]  # fmt: skip

INTERRUPTED = "vmferry was interrupted; "


@dataclass(frozen=True)
class Decision:
    """What to do with an unfinished job, why, and the status to record.

    ``status`` is ``None`` when the record must stay as it is (``leave``, ``wait``, and
    ``unknown`` while a host did not answer).
    """

    action: Action
    reason: str
    status: JobStatus | None = None

    @property
    def destroys_orphan(self) -> bool:
        return self.action == "fail-destroy-orphan"

    @property
    def undefines_source(self) -> bool:
        return self.action == "complete-undefine-source"


def describe(view: DomainView | None) -> str:
    """A few words for a host's view of the VM, for reasons and events."""
    if view is None:
        return "did not answer"
    if not view.exists:
        return "absent"
    state = "running" if view.running else "paused" if view.paused else "shut off"
    if view.postcopy_failed:
        state += ", post-copy broke off"
    elif view.job_active:
        state += ", migrating"
    return state if view.persistent or not view.active else f"{state}, transient"


def decide(
    job: Job,
    owner_alive: bool,
    source: DomainView | None,
    destination: DomainView | None,
) -> Decision:
    """The action that brings ``job``'s record in line with the hosts.

    ``source`` and ``destination`` are the hosts' views of ``job.vm``; ``None`` means the
    host did not answer. ``owner_alive`` says whether the vmferry process recorded as the
    job's owner still runs. A cancelled-by-request job that did not complete ends
    ``cancelled`` instead of ``failed``.
    """
    vm, src, dst = job.vm, job.source, job.destination
    if job.status.finished:
        return Decision("leave", f"the job already finished as {job.status}")
    if owner_alive:
        return Decision(
            "leave", f"the vmferry process driving it (pid {job.owner_pid}) is still running"
        )
    if any(view is not None and view.postcopy_failed for view in (source, destination)):
        return Decision("split", INTERRUPTED + split_reason(vm, src, dst, None, None, None),
                        JobStatus.FAILED)  # fmt: skip
    migrating = [
        name
        for name, view in ((src, source), (dst, destination))
        if view is not None and view.exists and view.job_active
    ]
    if migrating:
        return Decision(
            "wait",
            f"libvirt is still migrating {vm} (a job is active on {' and '.join(migrating)})",
        )
    given_up = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
    not_done = f"{INTERRUPTED}the migration did not complete: {vm} still runs on {src}"

    if source is not None and source.exists and source.running:
        if destination is not None and destination.active:
            copy = "paused" if destination.paused else "running"
            return Decision(
                "fail-destroy-orphan",
                f"{not_done}; destroyed the {copy} incoming copy left on {dst}",
                given_up,
            )
        if destination is None:
            return Decision(
                "fail",
                f"{not_done}; {dst} did not answer, so it was not checked for a leftover "
                f"incoming copy (look with `virsh list --all` there)",
                given_up,
            )
        return Decision("fail", not_done, given_up)

    if source is None:
        return Decision(
            "unknown",
            f"cannot tell where {vm} runs: {src} did not answer ({dst}: "
            f"{describe(destination)}); nothing was touched; resume the job again when "
            f"{src} answers",
        )
    if destination is not None and destination.exists and destination.running:
        done = f"{INTERRUPTED}the migration completed: found running on {dst}"
        if source.paused:
            left = f"; a paused copy remains on {src}: destroy it there once {dst} is checked"
        elif source.exists and source.persistent and destination.persistent:
            return Decision(
                "complete-undefine-source",
                f"{done}; removed the stopped definition left on {src}",
                JobStatus.COMPLETED,
            )
        elif source.exists:
            left = (f"; a stopped definition remains on {src} (kept: {dst}'s is not "
                    "persistent)")  # fmt: skip
        else:
            left = ""
        return Decision("complete", f"{done}{left}", JobStatus.COMPLETED)
    if destination is None:
        return Decision(
            "unknown",
            f"cannot tell where {vm} runs: it is not running on {src} "
            f"({describe(source)}) and {dst} did not answer; nothing was touched; resume the "
            f"job again when {dst} answers",
        )
    return Decision(
        "unknown",
        f"{INTERRUPTED}{vm} runs on neither host ({src}: {describe(source)}, {dst}: "
        f"{describe(destination)}); nothing was touched: check the VM and start it where "
        "it belongs",
        JobStatus.FAILED,
    )
