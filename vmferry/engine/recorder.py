"""A move's record in the store, kept by a thread of its own so that a store that is locked or
gone for a while never stalls or stops the move.

The engine's loop hands each event and status to :class:`JobRecorder` and goes on at once; a
writer thread writes them in order, each with the time it happened. When a write fails
(SQLite busy past its timeout, PostgreSQL restarting), the writer keeps the rest queued and
tries again, every ``retry_s``; once the store answers the record catches up. The writer also
reads the job's cancel flag for the loop. At the end, :meth:`JobRecorder.finish` waits up to
``catch_up_s`` for the queue to drain and the result to be written; if the store is still
gone then, it raises :class:`StoreUnavailableError`: the move's outcome stands, its record
is behind, and `vmferry job resume` settles the job from the hosts once the store is back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from vmferry.errors import VmferryError
from vmferry.model.migration import JobStatus, MigrationResult
from vmferry.store.db import Store, utc_now

log = logging.getLogger(__name__)


class StoreUnavailableError(VmferryError):
    """The store did not take a finished move's record in time."""


@dataclass(frozen=True)
class _Event:
    kind: str
    message: str
    data: dict[str, object]
    at: datetime


@dataclass(frozen=True)
class _Status:
    status: JobStatus


_Op = _Event | _Status


class JobRecorder:
    """Writes one job's events and status from a thread (see the module docstring)."""

    def __init__(self, store: Store, job_id: str, *, retry_s: float = 1.0,
                 cancel_poll_s: float = 0.25, catch_up_s: float = 60.0,
                 clock: Callable[[], datetime] = utc_now) -> None:  # fmt: skip
        self.store = store
        self.job_id = job_id
        self.retry_s = retry_s
        self.cancel_poll_s = cancel_poll_s
        self.catch_up_s = catch_up_s
        self.clock = clock
        self._queue: queue.Queue[_Op | None] = queue.Queue()
        self._pending: list[_Op] = []  # taken from the queue, not written yet (writer only)
        self._cancel = threading.Event()
        self._stop = threading.Event()
        self._drained = threading.Event()
        self._outage: str | None = None  # the store's last error while it is failing
        self.outages = 0  # how many times the store stopped answering
        self._thread = threading.Thread(target=self._run, name=f"record-{job_id}", daemon=True)
        self._thread.start()

    # -- the loop's side: never blocks on the store ---------------------------------------

    def event(self, kind: str, message: str, data: dict[str, object] | None = None) -> None:
        self._queue.put(_Event(kind, message, dict(data or {}), self.clock()))

    def status(self, status: JobStatus) -> None:
        self._queue.put(_Status(status))

    def cancel_requested(self) -> bool:
        """The job's cancel flag as last read (False while the store does not answer)."""
        return self._cancel.is_set()

    @property
    def behind(self) -> str | None:
        """Why the record is behind the move right now (None: it is up to date)."""
        return self._outage

    def finish(
        self, result: MigrationResult, settle: Callable[[MigrationResult], None] | None = None
    ) -> None:
        """Write what is queued, run ``settle`` (the work after the move whose events belong
        to the job: they are written before it ends), then the result; raise
        :class:`StoreUnavailableError` when the store has not taken them within
        ``catch_up_s`` (``settle`` not run)."""
        deadline = time.monotonic() + max(0.0, self.catch_up_s)
        failed: BaseException | None = None
        self._queue.put(None)  # the writer drains and stops
        self._thread.join(timeout=self.catch_up_s)
        while True:
            if self._drained.is_set():
                if settle is not None:
                    began = time.monotonic()
                    try:
                        settle(result)
                    except BaseException as exc:  # the result is written all the same
                        failed = exc
                    settle = None
                    deadline += time.monotonic() - began  # its time is not the store's
                try:
                    self.store.finish(self.job_id, result)
                except SQLAlchemyError as exc:
                    self._lost(exc)
                else:
                    if failed is not None:
                        raise failed
                    return
            if time.monotonic() >= deadline:
                self._stop.set()
                raise StoreUnavailableError(
                    f"the move {result.status} but its record could not be written: the store "
                    f"did not answer for {self.catch_up_s:g} s ({self._outage}); once it is "
                    f"back, `vmferry job resume {self.job_id}` settles the job from the hosts"
                ) from failed
            time.sleep(min(self.retry_s, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        """Stop the writer without waiting for what is queued (an error path)."""
        self._stop.set()
        self._queue.put(None)

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        last_poll = 0.0
        closing = False
        while not self._stop.is_set():
            if not closing:
                try:
                    op = self._queue.get(timeout=self.cancel_poll_s)
                    if op is None:
                        closing = True
                    else:
                        self._pending.append(op)
                    while True:  # take everything queued, in order
                        more = self._queue.get_nowait()
                        if more is None:
                            closing = True
                        else:
                            self._pending.append(more)
                except queue.Empty:
                    pass
            if not self._write_pending():
                if closing and self._stop.wait(self.retry_s):
                    return
                if not closing:
                    self._stop.wait(self.retry_s)
                continue
            if closing:
                self._drained.set()
                return
            if time.monotonic() - last_poll >= self.cancel_poll_s:
                last_poll = time.monotonic()
                self._poll_cancel()

    def _write_pending(self) -> bool:
        """Write the pending operations in order; False (the rest kept) at the first that
        the store refuses."""
        wrote = False
        while self._pending:
            op = self._pending[0]
            try:
                if isinstance(op, _Event):
                    self.store.add_event(self.job_id, op.kind, op.message, op.data, at=op.at)
                else:
                    self.store.set_status(self.job_id, op.status)
            except VmferryError as exc:  # refused for good (the job is gone): not retried
                log.warning("the store refused a record of job %s: %s", self.job_id, exc.message)
                self._pending.pop(0)
                continue
            except SQLAlchemyError as exc:
                self._lost(exc)
                return False
            self._pending.pop(0)
            wrote = True
        if wrote:
            self._outage = None
        return True

    def _poll_cancel(self) -> None:
        try:
            if self.store.is_cancel_requested(self.job_id):
                self._cancel.set()
        except SQLAlchemyError as exc:
            self._lost(exc)
            return
        self._outage = None

    def _lost(self, exc: SQLAlchemyError) -> None:
        """The store did not answer: an outage begins unless one is on already (a write or
        the cancel poll may be the first to meet it)."""
        if self._outage is None:
            self.outages += 1
            log.warning("the store did not answer (%s); the move goes on, its record will "
                        "catch up", _first_line(exc))  # fmt: skip
        self._outage = _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
