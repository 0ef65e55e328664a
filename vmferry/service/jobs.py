"""Migration jobs: list, show, cancel, and resume (reconcile) a job whose vmferry died.

A job's record can fall behind the hosts when the vmferry process driving it is killed.
:func:`reconcile_job` reads what both hosts report about the VM, lets the pure
:func:`vmferry.engine.reconcile.decide` choose, and applies that: it finishes the record
(completed, failed or cancelled, with a reason), destroys an incoming copy left on the
destination only while the source runs the VM, and touches nothing when it cannot tell.
A warm or cold move is decided by :func:`vmferry.engine.offline_reconcile.decide_offline`
instead, whose repairs (finish the move, or restore or start the VM on its source)
:mod:`vmferry.service.job_repair` runs. Running it again changes nothing more.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from vmferry.drivers.libvirt_domains import destroy_domain, domain_view
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.engine.offline_reconcile import (
    OfflineDecision,
    decide_offline,
    recorded_steps,
    state_path_of,
)
from vmferry.engine.reconcile import Decision, decide, describe
from vmferry.errors import HostUnreachableError, NotFoundError, VmferryError
from vmferry.model.domain_view import DomainView
from vmferry.model.jsonable import to_jsonable
from vmferry.model.lease import OwnerState
from vmferry.model.migration import Job, JobStatus
from vmferry.service.job_repair import apply_repairs, finish_reconciled, state_file_exists
from vmferry.service.lease import owner_alive, owner_of_job
from vmferry.store.db import Store, open_store

__all__ = [
    "cancel_job",
    "get_job",
    "job_owner",
    "list_jobs",
    "owner_alive",
    "owner_of_job",
    "reconcile_job",
    "reconcile_vm",
]

POLL_S = 1.0
CANCEL_POLL_S = 0.25


def list_jobs(limit: int = 50) -> list[Job]:
    """The newest jobs first, without their events."""
    with open_store() as store:
        return store.list_jobs(limit)


def get_job(job_id: str) -> Job:
    """The job with its events; :class:`NotFoundError` for an unknown id."""
    with open_store() as store:
        return store.get_job(job_id)


def job_owner(job: Job) -> OwnerState:
    """:func:`owner_of_job` in the default store."""
    with open_store() as store:
        return owner_of_job(store, job)


def reconcile_job(job_id: str, *, wait_s: float = 60, poll_s: float = POLL_S) -> Job:
    """Bring job ``job_id``'s record in line with libvirt after its vmferry died.

    A finished job, or one whose owner still runs, is returned as it is. Otherwise both
    hosts are asked about the VM; while libvirt still migrates it, this waits (up to
    ``wait_s`` seconds) and looks again. Then it applies the decision (see
    :mod:`vmferry.engine.reconcile`) and returns the job as recorded afterwards. When it
    cannot tell yet (a host did not answer, the migration still runs), the job stays
    unfinished and an event says why.
    """
    with open_store() as store:
        job = store.get_job(job_id)
        if job.status.finished or owner_alive(store, job):
            return job
        if job.kind == "move-storage":  # a disk moved within its host: no migration to find
            from vmferry.service.move_storage import reconcile_storage_move

            return reconcile_storage_move(store, job)
        if job.kind == "ha-restart":  # a VM started from its definition: where is it?
            from vmferry.service.ha import reconcile_restart

            return reconcile_restart(store, job)
        if job.kind == "import":  # no migration to find: say what may be left
            from vmferry.service.import_job import reconcile_import

            return reconcile_import(store, job)
        if job.kind == "rehearse":  # a throw-away copy: remove what it made
            from vmferry.service.rehearse import reconcile_rehearsal

            return reconcile_rehearsal(store, job)
        with ExitStack() as stack:
            unreachable: dict[str, str] = {}
            source = _connect(store, job.source, stack, unreachable)
            destination = _connect(store, job.destination, stack, unreachable)
            offline = job.options.strategy.offline
            state_path = state_path_of(job) if offline else None
            deadline = time.monotonic() + wait_s
            announced = False
            while True:
                views = _view(source, job.vm, unreachable), _view(destination, job.vm, unreachable)
                decision: Decision | OfflineDecision
                if offline:
                    state_file = state_file_exists(source, state_path, unreachable)
                    steps = recorded_steps(job)
                    alive = owner_alive(store, job)
                    decision = decide_offline(job, alive, steps, *views, state_file)
                else:
                    decision = decide(job, owner_alive(store, job), *views)
                if decision.action != "wait" or time.monotonic() >= deadline:
                    break
                if not announced:
                    store.add_event(job.id, "note", f"resuming: {decision.reason}; waiting up "
                                    f"to {wait_s:g} s for it to end")  # fmt: skip
                    announced = True
                time.sleep(poll_s)
                job = store.get_job(job_id)  # another resume may have finished it
            hosts = source, destination
            return _apply(store, job, decision, views, hosts, state_path, unreachable, wait_s)


def reconcile_vm(vm: str, *, wait_s: float = 60) -> list[Job]:
    """Reconcile VM ``vm``'s unfinished jobs whose owner is dead (the engine calls this
    before it touches the VM); returns those jobs as recorded afterwards."""
    with open_store() as store:
        orphaned = [job for job in store.unfinished_jobs(vm) if not owner_alive(store, job)]
    return [reconcile_job(job.id, wait_s=wait_s) for job in orphaned]


def cancel_job(job_id: str, *, wait_s: float = 30, poll_s: float = CANCEL_POLL_S) -> Job:
    """Cancel job ``job_id``.

    When its vmferry process runs, ask it to cancel and wait (up to ``wait_s`` seconds)
    for the job to finish; the source keeps running. When that process is gone, record the
    request and reconcile the job instead (a migration that did not complete then ends
    ``cancelled``). A finished job is returned as it is.
    """
    with open_store() as store:
        job = store.get_job(job_id)
        if job.status.finished:
            return job
        job = store.request_cancel(job_id)
        if job.status is JobStatus.PENDING and any(e.kind == "queued" for e in job.events):
            from vmferry.service.queue import cancel_queued  # procrastinate: queued jobs only

            cancelled = cancel_queued(store, job)
            if cancelled is not None:  # no worker had taken it
                return cancelled
        if owner_alive(store, job):
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                time.sleep(poll_s)
                job = store.get_job(job_id)
                if job.status.finished or not owner_alive(store, job):
                    break
            if job.status.finished or owner_alive(store, job):
                return job
    return reconcile_job(job_id, wait_s=wait_s)


# -- internals ---------------------------------------------------------------------------


def _connect(
    store: Store, host_name: str, stack: ExitStack, unreachable: dict[str, str]
) -> LibvirtHost | None:
    try:
        host = store.get_host(host_name)
        return stack.enter_context(LibvirtHost.connect(host.name, host.uri))
    except (HostUnreachableError, NotFoundError) as exc:
        unreachable[host_name] = exc.message
        return None


def _view(conn: LibvirtHost | None, vm: str, unreachable: dict[str, str]) -> DomainView | None:
    if conn is None:
        return None
    try:
        return domain_view(conn, vm)
    except HostUnreachableError as exc:
        unreachable[conn.name] = exc.message
        return None


def _apply(
    store: Store,
    job: Job,
    decision: Decision | OfflineDecision,
    views: tuple[DomainView | None, DomainView | None],
    hosts: tuple[LibvirtHost | None, LibvirtHost | None],
    state_path: str | None,
    unreachable: dict[str, str],
    wait_s: float,
) -> Job:
    seen = _seen(job, decision.action, views, unreachable)
    if decision.action == "leave":
        return store.get_job(job.id)
    if decision.status is None:  # wait ran out, or a host did not answer
        waited = f" (waited {wait_s:g} s)" if decision.action == "wait" else ""
        store.add_event(job.id, "note", f"not resumed{waited}: {decision.reason}", seen)
        return store.get_job(job.id)
    if isinstance(decision, OfflineDecision):  # a warm or cold move: its repairs first
        if not apply_repairs(store, job, decision, *hosts, state_path, seen):
            return store.get_job(job.id)  # stays unfinished; the note says what failed
        store.add_event(job.id, "note", f"resumed: {decision.action}", seen)
    elif decision.destroys_orphan:
        destination = hosts[1]
        if destination is None:  # pragma: no cover - decide() never asks for it then
            raise VmferryError(f"job {job.id}: no connection to {job.destination}")
        destroyed = destroy_domain(destination, job.vm)
        what = "destroyed" if destroyed else "found already gone"
        store.add_event(job.id, "note", f"{what}: the incoming copy of {job.vm} on "
                        f"{job.destination}", seen)  # fmt: skip
    elif decision.undefines_source:
        source = hosts[0]
        if source is None:  # pragma: no cover - decide() never asks for it then
            raise VmferryError(f"job {job.id}: no connection to {job.source}")
        try:
            source.undefine(job.vm)
        except VmferryError as exc:  # the move completed all the same: say what is left
            store.add_event(job.id, "note", f"the stopped definition of {job.vm} on "
                            f"{job.source} could not be removed: {exc.message}", seen)  # fmt: skip
            reason = decision.reason.replace("removed the stopped definition left",
                                             "a stopped definition remains")  # fmt: skip
            return finish_reconciled(store, job, decision.status, reason)
        store.add_event(job.id, "note", f"removed: the stopped definition of {job.vm} on "
                        f"{job.source}", seen)  # fmt: skip
    else:
        store.add_event(job.id, "note", f"resumed: {decision.action}", seen)
    return finish_reconciled(store, job, decision.status, decision.reason)


def _seen(
    job: Job, action: str, views: tuple[DomainView | None, DomainView | None],
    unreachable: dict[str, str],
) -> dict[str, object]:  # fmt: skip
    source_view, destination_view = views
    return {
        "action": action,
        "hosts": {job.source: describe(source_view), job.destination: describe(destination_view)},
        "source": to_jsonable(source_view),
        "destination": to_jsonable(destination_view),
        "unreachable": unreachable,
    }
