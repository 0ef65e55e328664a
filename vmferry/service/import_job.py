"""An import as a job (kind ``import``), whoever runs it (`vmferry import`, the server, a
worker).

The job is made before the import reads anything (pending, owned by the caller's lease),
and its end is one ``import`` event whose data is the import's document
(:func:`vmferry.service.import_doc.outcome_json`: the domain's name, its host, its pool and
the volumes the import made) plus the job's status.
`vmferry rollback` of one: :mod:`vmferry.service.import_rollback`.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from vmferry.model.migration import Job, JobStatus, MigrationOptions
from vmferry.service.import_vm import ImportRequest
from vmferry.service.lease import process_lease
from vmferry.store.db import Store

__all__ = ["end_import_job", "import_document", "make_import_job", "reconcile_import"]


def make_import_job(store: Store, request: ImportRequest, name: str, by: str | None = None) -> str:
    """The import's job, pending, owned by this process's lease (one unfinished job per VM
    name: a second raises AlreadyExistsError)."""
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
