"""Carry out what reconciling an orphaned job decided: the repairs of a warm or cold move
(:mod:`vmferry.engine.offline_reconcile`), and the job's final record.

:func:`vmferry.service.jobs.reconcile_job` decides; this module touches the hosts and the
store. Repairs run in order and stop at the first that fails: the job then stays
unfinished, with an event saying what was done and what failed, and resuming it again
decides afresh from what the hosts report.
"""

from __future__ import annotations

from collections.abc import Callable

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import define_xml_of, delete_volume, restore, volume_exists
from vmferry.drivers.libvirt_pull_backup import delete_checkpoints, end_pull, resume_thawed
from vmferry.engine.offline import checkpoint_prefix
from vmferry.engine.offline_reconcile import OfflineDecision, Repair, copies_of
from vmferry.errors import HostUnreachableError, VmferryError
from vmferry.model.migration import Job, JobStatus, MigrationResult
from vmferry.store.db import Store

__all__ = ["apply_repairs", "finish_reconciled", "state_file_exists"]


def state_file_exists(
    source: LibvirtHost | None, path: str | None, unreachable: dict[str, str]
) -> bool | None:
    """Whether the warm move's state file is still there (``None``: no file recorded, or
    the source did not answer)."""
    if source is None or path is None:
        return None
    try:
        return volume_exists(source, path)
    except HostUnreachableError as exc:
        unreachable[source.name] = exc.message
        return None
    except VmferryError:
        return None


def apply_repairs(
    store: Store,
    job: Job,
    decision: OfflineDecision,
    source: LibvirtHost | None,
    destination: LibvirtHost | None,
    state_path: str | None,
    seen: dict[str, object],
) -> bool:
    """Run ``decision.repairs`` in order, each recorded as a job event; ``False`` (and a
    note) at the first that fails, leaving the rest undone."""
    vm = job.vm

    def need(host: LibvirtHost | None) -> LibvirtHost:
        if host is None:  # decide_offline repairs nothing while a host did not answer
            raise VmferryError(f"job {job.id}: no connection for a repair")
        return host

    def path() -> str:
        if state_path is None:
            raise VmferryError(f"job {job.id}: no state file was recorded")
        return state_path

    actions: dict[Repair, Callable[[], None]] = {
        Repair.UNDEFINE_ON_DESTINATION: lambda: need(destination).undefine(vm),
        Repair.DEFINE_ON_DESTINATION: lambda: need(destination).define_xml(
            define_xml_of(need(source), vm)
        ),
        Repair.UNDEFINE_ON_SOURCE: lambda: need(source).undefine(vm),
        Repair.RESTORE_ON_SOURCE: lambda: restore(need(source), path(), None),
        Repair.START_ON_SOURCE: lambda: need(source).start(vm),
        Repair.REMOVE_STATE_FILE: lambda: delete_volume(need(source), path()),
        Repair.END_BACKUP_ON_SOURCE: lambda: end_pull(need(source), vm),
        Repair.RESUME_ON_SOURCE: lambda: resume_thawed(need(source), vm),
        Repair.DELETE_COPIES: lambda: _delete_all(need(destination), copies_of(job)),
        Repair.DELETE_CHECKPOINTS: lambda: _no_result(
            delete_checkpoints(need(source), vm, checkpoint_prefix(job.id))
        ),
        Repair.DESTROY_ON_SOURCE: lambda: need(source).destroy(vm),
    }
    for repair in decision.repairs:
        try:
            actions[repair]()
        except VmferryError as exc:
            store.add_event(job.id, "note", f"repair {repair} failed: {exc.message}; stopped "
                            "there; resume the job again once that is fixed",
                            {**seen, "repair": str(repair)})  # fmt: skip
            return False
        store.add_event(job.id, "status", f"repaired: {repair}", {"repair": str(repair)})
    return True


def _delete_all(host: LibvirtHost, paths: list[str]) -> None:
    for path in paths:
        delete_volume(host, path)


def _no_result(_value: object) -> None:
    return None


def finish_reconciled(store: Store, job: Job, status: JobStatus, reason: str) -> Job:
    """Record the end a reconciliation decided (once: a job another resume or the engine
    finished first is returned as it is)."""
    if job.status is JobStatus.PENDING and status is JobStatus.COMPLETED:
        store.set_status(job.id, JobStatus.RUNNING)  # a pending job cannot complete directly
    result = MigrationResult(
        job_id=job.id,
        vm=job.vm,
        source=job.source,
        destination=job.destination,
        strategy=job.options.strategy,
        status=status,
        reason=reason,
        total_time_ms=None,
        downtime_ms=None,
        transferred_bytes=None,
        iterations=None,
    )
    try:
        return store.finish(job.id, result)
    except VmferryError:
        latest = store.get_job(job.id)
        if latest.status.finished:
            return latest
        raise
