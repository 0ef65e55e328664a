"""`vmferry rollback JOB`, and `migrate --rollback`: a move undone, the VM back where it was
(docs/storage.md).

A move that ended with the VM on its destination (completed, or failed its verification
there) is undone by moving the VM back live to the job's source, as a new ``migrate`` job;
the first job records it (a ``rollback`` event naming the new job). Rolling back twice
changes nothing more: a job whose rollback completed, or whose VM already runs on its
source, is left as it is. A warm or cold move with a kept ``--backup`` is undone from that
backup instead (:mod:`vmferry.service.restore`): the VM back on the source as the backup
took it, nothing moved back over the network. An import job is undone by removing the
imported VM and its volumes (:mod:`vmferry.service.import_rollback`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vmferry.engine.offline_reconcile import started_off
from vmferry.errors import BadInputError, BlockedError
from vmferry.model.backup import DiskBackup
from vmferry.model.migration import Job, JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.model.vsphere import VsphereSource
from vmferry.service.locate import locate
from vmferry.service.restore import kept_backups, restore_from_backup
from vmferry.store.db import Store, open_store

__all__ = ["Rollback", "needs_rollback", "roll_back"]

NoteFn = Callable[[str], None]
PasswordFn = Callable[[VsphereSource], str]  # a vSphere source's password (env, or asked)


def _quiet(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class Rollback:
    job_id: str  # the job rolled back
    vm: str
    source: str  # where the VM is back (or was all along)
    status: str  # rolled-back | already-rolled-back | failed
    rollback_job_id: str | None  # the move back (None: nothing had to move)
    reason: str | None = None


def needs_rollback(result: MigrationResult) -> bool:
    """A move that failed after the VM reached its destination (its verification failed):
    what `--rollback` undoes. A move that failed earlier left the VM on its source."""
    return (
        result.status is JobStatus.FAILED
        and result.verification is not None
        and result.verification.on_destination
    )


def roll_back(job_id: str, *, note: NoteFn = _quiet, store: Store | None = None,
              vsphere_password: PasswordFn | None = None) -> Rollback:  # fmt: skip
    """Move the VM of move ``job_id`` back to that move's source (see the module docstring);
    ``vsphere_password`` gives a vSphere source's password, for an import that powered its
    source VM off."""
    from vmferry.service.migrate import migrate  # here: migrate's --rollback calls this module

    store = store or open_store()
    job = store.get_job(job_id)
    if job.kind == "import":  # the imported VM removed from its host
        from vmferry.service.import_rollback import roll_back_import

        return roll_back_import(store, job, note, vsphere_password)
    if job.kind != "migrate":
        raise BadInputError(f"job {job_id} is a {job.kind} job; only moves and imports are "
                            "rolled back")  # fmt: skip
    if not job.status.finished:
        raise BadInputError(f"job {job_id} has not ended ({job.status}); wait for it or "
                            f"`vmferry job cancel {job_id}`")  # fmt: skip
    done = [e for e in job.events if e.kind == "rollback" and e.data.get("status") == "completed"]
    if done:
        by = done[-1].data.get("job_id")
        return Rollback(job_id, job.vm, job.source, "already-rolled-back",
                        None if by is None else str(by), "rolled back before")  # fmt: skip
    where = locate(job.vm).host.name
    if where == job.source:
        return Rollback(job_id, job.vm, job.source, "already-rolled-back", None,
                        f"{job.vm} runs on {job.source} already")  # fmt: skip
    if where != job.destination:
        raise BlockedError(f"{job.vm} runs on {where} now, neither {job.source} nor "
                           f"{job.destination}: job {job_id} is not the move to undo")  # fmt: skip
    note(f"rolling back job {job_id}: {job.vm} {job.destination} -> {job.source}")
    backups = kept_backups(store, job)
    if job.options.strategy.offline and backups:  # warm, cold: restored from the backup
        return _restore(store, job, backups, note)
    off = started_off(job)  # a VM that was off goes back cold, and stays off
    options = MigrationOptions(Strategy.COLD if off else Strategy.LIVE,
                               job.options.max_downtime_ms, job.options.timeout_s,
                               job.options.copy_storage and not off, job.options.bandwidth_mib_s,
                               tls=job.options.tls)  # fmt: skip
    back = migrate(job.vm, job.source, options, note=note).result
    ok = back.status is JobStatus.COMPLETED
    is_there = f"is on {job.source} again, off" if off else f"runs on {job.source} again"
    message = (f"rolled back by job {back.job_id}: {job.vm} {is_there}" if ok
               else f"rollback by job {back.job_id} {back.status}: {back.reason}")  # fmt: skip
    store.add_event(job_id, "rollback", message,
                    {"job_id": back.job_id, "status": str(back.status)})  # fmt: skip
    note(message)
    return Rollback(job_id, job.vm, job.source, "rolled-back" if ok else "failed", back.job_id,
                    None if ok else back.reason)  # fmt: skip


def _restore(store: Store, job: Job, backups: list[DiskBackup], note: NoteFn) -> Rollback:
    done = restore_from_backup(store, job, backups, note)
    if done.ok:
        again = "is on {} again, off" if started_off(job) else "runs on {} again"
        message = f"restored from its backup: {job.vm} {again.format(job.source)}" + (
            f"; left in place: {', '.join(done.left)}" if done.left else ""
        )
    else:
        message = f"rollback from the backup failed: {done.reason}"
    store.add_event(job.id, "rollback", message, {
        "status": "completed" if done.ok else "failed", "restored": done.restored,
        "left": list(done.left), "job_id": None})  # fmt: skip
    note(message)
    return Rollback(job.id, job.vm, job.source, "rolled-back" if done.ok else "failed", None,
                    done.reason)  # fmt: skip
