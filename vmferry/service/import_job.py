"""An import as a job (kind ``import``), whoever runs it (`vmferry import`, the server, a
worker).

The job is made before the import reads anything (pending, owned by the caller's lease),
and its end is one ``import`` event whose data is the import's document
(:func:`vmferry.service.import_doc.outcome_json`: the domain's name, its host, its pool and
the volumes the import made) plus the job's status.
`vmferry rollback` of one: :mod:`vmferry.service.import_rollback`.

:class:`ImportJobRun` runs an import as its job (`vmferry import`, a plan's import item):
the job made when the import begins to change things, a warm import's ``warm`` event and
its rounds as ``progress`` events, its cutover when due (``at``, or `vmferry job cutover`),
a `vmferry job cancel` seen while it copies (at most once a second, from its progress:
:class:`ImportCancelledError`) and its end recorded however it ends.
"""

from __future__ import annotations

import getpass
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from vmferry.errors import VmferryError
from vmferry.imports.mapping import ImportPlan
from vmferry.model.migration import Job, JobStatus, MigrationOptions
from vmferry.model.vsphere import VsphereVmRef
from vmferry.service.import_doc import outcome_json
from vmferry.service.import_vm import (
    DiskProgressFn,
    ImportBlockedError,
    ImportCancelledError,
    ImportFailedError,
    ImportOutcome,
    ImportRequest,
    NoteFn,
    import_vm,
)
from vmferry.service.lease import owner_alive, process_lease
from vmferry.service.warm_cutover import cutover_poll
from vmferry.store.db import Store, open_store

__all__ = [
    "ImportJobRun",
    "end_import_job",
    "import_document",
    "make_import_job",
    "reconcile_import",
]


def make_import_job(store: Store, request: ImportRequest, name: str, by: str | None = None) -> str:
    """The import's job, pending, owned by this process's lease (one unfinished job per VM
    name: a second raises AlreadyExistsError). A running import of that name whose process
    died (killed, the machine restarted) is first recorded as failed
    (:func:`reconcile_import`); what it left then blocks the new import by name."""
    for earlier in store.unfinished_jobs(name):
        if (
            earlier.kind == "import"
            and earlier.status is JobStatus.RUNNING
            and earlier.owner_id is not None
            and not owner_alive(store, earlier)
        ):
            reconcile_import(store, earlier)
    source = request.source
    label = source.name if isinstance(source, Path) else str(source)
    job = store.create_job("import", name, label[:255], request.to, MigrationOptions())
    store.set_owner(job.id, process_lease(store))
    who = by or getpass.getuser()
    store.add_event(job.id, "import", f"import {request.source} -> {request.to} by {who}",
                    {"source": str(request.source), "to": request.to, "name": name,
                     "start": request.start})  # fmt: skip
    return job.id


def end_import_job(store: Store, job_id: str, doc: dict[str, Any] | None, status: JobStatus,
                   reason: str | None = None) -> None:  # fmt: skip
    """Record the import's end: its document (when it got that far) and its status."""
    if doc is not None:
        said = (f"{doc['vm']} on {doc['destination']}" if status is JobStatus.COMPLETED
                else str(doc["reason"]))  # fmt: skip
        store.add_event(job_id, "import", f"import {doc['status']}: {said}", doc)
    store.set_status(job_id, status, reason)


def import_document(job: Job) -> dict[str, Any] | None:
    """The import's document recorded at its end, or None."""
    docs = [e.data for e in job.events if e.kind == "import" and "status" in e.data]
    return dict(docs[-1]) if docs else None


def reconcile_import(store: Store, job: Job) -> Job:
    """An import whose process died before it recorded its end: failed, saying what may be
    left (its partial volumes keep their suffix; a domain defined in its last step)."""
    store.add_event(job.id, "note", "resuming: the import's process is gone")
    store.set_status(job.id, JobStatus.FAILED, "vmferry was interrupted during the import; "
                     f"on {job.destination}, volumes named *.vmferry-part may be left in the "
                     f"pool, and a domain {job.vm} if it got as far as defining it")  # fmt: skip
    return store.get_job(job.id)


def _quiet(*_args: object) -> None:
    return None


CANCEL_POLL_S = 1.0  # how often a copying import looks at its job for a cancel


class ImportJobRun:
    """One import run as its job. ``at``: when a warm import cuts over (None: at `vmferry
    job cutover`); ``job_id`` is known once the import began to change things (nothing is
    made for bad input or a blocked dry run)."""

    def __init__(self, request: ImportRequest, at: datetime | None = None,
                 store: Store | None = None, by: str | None = None) -> None:  # fmt: skip
        self.request, self.at, self.by = request, at, by
        self._store = store
        self.job_id: str | None = None
        source = request.source
        self.warm = isinstance(source, VsphereVmRef) and source.strategy == "warm"

    @property
    def store(self) -> Store:
        """The store, opened when first needed (a dry run or bad input never opens it)."""
        if self._store is None:
            self._store = open_store()
        return self._store

    def run(self, note: NoteFn = _quiet,
            on_disk_progress: DiskProgressFn = _quiet) -> ImportOutcome:  # fmt: skip
        """The import (:func:`vmferry.service.import_vm.import_vm`), its job ended with its
        document and status whatever happens; its exceptions are raised on."""

        def begin(plan: ImportPlan) -> None:
            self.job_id = make_import_job(self.store, self.request, plan.name, self.by)
            self.store.set_status(self.job_id, JobStatus.RUNNING)
            if self.warm:
                self._warm_began(plan.name, note)

        def noted(message: str) -> None:  # a warm import's rounds are in its job too
            note(message)
            if self.warm and self.job_id is not None:
                self.store.add_event(self.job_id, "progress", message)

        due = None
        if self.warm:
            due = cutover_poll(self.store, lambda: self.job_id, self.at)
        polled = [time.monotonic()]

        def progress(index: int, pct: float) -> None:  # a cancel is seen while it copies
            on_disk_progress(index, pct)
            if self.job_id is not None and time.monotonic() - polled[0] >= CANCEL_POLL_S:
                polled[0] = time.monotonic()
                if self.store.is_cancel_requested(self.job_id):
                    raise ImportCancelledError(
                        f"job {self.job_id} was cancelled: what the import made on "
                        f"{self.request.to} is removed"
                    )

        try:
            outcome = import_vm(self.request, note=noted, on_disk_progress=progress,
                                on_begin=begin, cutover_due=due)  # fmt: skip
        except (ImportBlockedError, ImportFailedError) as exc:
            self._end(outcome_json(exc.outcome), JobStatus.FAILED, exc.outcome.reason)
            raise
        except KeyboardInterrupt:
            self._end(None, JobStatus.CANCELLED, "interrupted (Ctrl-C)")
            raise
        except ImportCancelledError as exc:
            self._end(None, JobStatus.CANCELLED, exc.message)
            raise
        except VmferryError as exc:
            self._end(None, JobStatus.FAILED, exc.message.splitlines()[0])
            raise
        except BaseException as exc:
            self._end(None, JobStatus.FAILED, f"internal error: {type(exc).__name__}")
            raise
        self._end(outcome_json(outcome), JobStatus.COMPLETED)
        return outcome

    def _warm_began(self, name: str, note: NoteFn) -> None:
        assert self.job_id is not None and isinstance(self.request.source, VsphereVmRef)
        interval = self.request.source.precopy_interval_s
        at = self.at
        when = f"at {at.isoformat(timespec='minutes')}" if at else "at `vmferry job cutover`"
        self.store.add_event(self.job_id, "warm", f"warm import: its changes copied every "
                             f"{interval:g} s, cutover {when}",
                             {"precopy_interval_s": interval,
                              "cutover_at": at.isoformat() if at else None})  # fmt: skip
        note(f"job {self.job_id}: `vmferry job cutover {self.job_id}` cuts over, "
             f"`vmferry job cancel {self.job_id}` stops it and leaves "
             f"{self.request.source.vm} running")  # fmt: skip

    def _end(self, doc: dict[str, Any] | None, status: JobStatus,
             reason: str | None = None) -> None:  # fmt: skip
        if self.job_id is not None:
            end_import_job(self.store, self.job_id, doc, status, reason)
