"""The cutover of a warm import: asked for with `vmferry job cutover ID`, or due at a time.

A warm import's job carries a ``warm`` event from its start (what `job cutover` checks);
`job cutover` adds a ``cutover`` event; the import's process polls its job
(:func:`cutover_poll`) between its copies of the changes, and also sees a `vmferry job
cancel` there (the import then stops, removes its snapshots and partial copies, and leaves
the VM running).
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from datetime import datetime

from vmferry.errors import BadInputError
from vmferry.model.migration import Job
from vmferry.service.import_vm import ImportCancelledError
from vmferry.store.db import Store, open_store

__all__ = ["WarmCancelledError", "cutover_poll", "is_warm", "parse_cutover_at", "request_cutover"]


class WarmCancelledError(ImportCancelledError):
    """`vmferry job cancel` stopped a warm import before its cutover (exit 1: nothing
    moved, the source VM runs as before)."""


def is_warm(job: Job) -> bool:
    return job.kind == "import" and any(e.kind == "warm" for e in job.events)


def request_cutover(job_id: str, by: str | None = None) -> Job:
    """Ask the warm import ``job_id`` to cut over at its next check (within a second or so).

    One line, exit 2, for a job that is no warm import or has finished; asking twice is
    harmless."""
    with open_store() as store:
        job = store.get_job(job_id)
        if not is_warm(job):
            what = "a cold import" if job.kind == "import" else f"a {job.kind} job"
            raise BadInputError(
                f"job {job_id} is no warm import ({what}): only "
                "`vmferry import vsphere://... --strategy warm` cuts over"
            )
        if job.status.finished:
            raise BadInputError(f"job {job_id} has finished ({job.status}): nothing to cut over")
        if not any(e.kind == "cutover" for e in job.events):
            store.add_event(job_id, "cutover", f"cutover requested by {by or getpass.getuser()}")
        return store.get_job(job_id)


def cutover_poll(store: Store, job_id: Callable[[], str | None], at: datetime | None,
                 now: Callable[[], datetime] = lambda: datetime.now().astimezone()
                 ) -> Callable[[], bool]:  # fmt: skip
    """What the warm import asks between its rounds: is the cutover due (``at`` reached, or
    requested on the job ``job_id()`` in ``store``)? A cancel requested on the job raises
    WarmCancelledError."""

    def due() -> bool:
        if at is not None and now() >= at:
            return True
        current = job_id()
        if current is None:
            return False
        job = store.get_job(current)
        if job.cancel_requested:
            raise WarmCancelledError(f"job {current} was cancelled before its cutover: the "
                                     "source VM runs as before, nothing was defined")  # fmt: skip
        return any(e.kind == "cutover" for e in job.events)

    return due


def parse_cutover_at(text: str, now: datetime | None = None) -> datetime:
    """``--cutover-at``: an ISO date and time (local time when it names no zone), not in
    the past; one line, exit 2, otherwise."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadInputError(f"--cutover-at {text!r}: expected an ISO date and time, "
                            "e.g. 2026-12-24T22:00") from exc  # fmt: skip
    if at.tzinfo is None:
        at = at.astimezone()  # local time
    if at < (now or datetime.now().astimezone()):
        raise BadInputError(f"--cutover-at {text}: that time has passed")
    return at
