"""The job state machine: which status changes are allowed (a pure function).

::

    pending --> running --> completed
       |           |------> failed
       |           '------> cancelled
       |------------------> failed
       '------------------> cancelled

A finished status (completed, failed, cancelled) is terminal. Setting the same finished
status again is allowed and changes nothing, so reconciling a job twice is harmless.
"""

from __future__ import annotations

from vmferry.model.migration import JobStatus


class IllegalTransitionError(ValueError):
    """A job status change the state machine does not allow (the store turns it into a
    VmferryError for the user)."""


__all__ = ["ALLOWED", "transition"]

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def transition(current: JobStatus, new: JobStatus) -> JobStatus:
    """The status a job in ``current`` has after being set to ``new``.

    Returns ``new`` for an allowed change and ``current`` when a finished job is set to the
    status it already has (a no-op: compare the result with ``current`` to know whether
    anything changed). Raises :class:`IllegalTransitionError` for any other change.
    """
    if new == current and current.finished:
        return current
    if new in ALLOWED[current]:
        return new
    if current.finished:
        raise IllegalTransitionError(
            f"a job that finished as {current} cannot become {new}: a finished job is final "
            "(start a new job to try again)"
        )
    allowed = " or ".join(sorted(ALLOWED[current]))
    raise IllegalTransitionError(
        f"a {current} job cannot become {new}; it can only become {allowed}"
    )
