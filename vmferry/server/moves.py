"""Start a move through the API: :func:`vmferry.service.migrate.migrate` runs in a
background thread of the server (with SQLite, jobs run in the server's process), and the
request returns as soon as the move's job exists: the service calls ``on_job`` with its id
once its pre-flight checks let the move go ahead, and a move they block ends at once with
its finished job in its result. One start per VM at a time in this process (a lock). A move
that fails before making a job raises its error here.

With PostgreSQL (:class:`QueuedMoves`) the server only makes the job and queues it; a
`vmferry worker` runs it (:mod:`vmferry.service.queue`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from vmferry.errors import AlreadyExistsError
from vmferry.model.migration import Job, JobStatus, MigrationOptions, MigrationResult
from vmferry.server.errors import StartTimeout
from vmferry.store.db import Store

if TYPE_CHECKING:
    from procrastinate.types import JSONValue

__all__ = ["MigrateFn", "MoveStarter", "Mover", "QueuedMoves"]


class _Outcome(Protocol):
    @property
    def result(self) -> MigrationResult: ...


class MigrateFn(Protocol):
    """:func:`vmferry.service.migrate.migrate` as the server calls it (``strategy_reason``
    only for `auto`)."""

    def __call__(
        self, vm: str, to: str, options: MigrationOptions, *, on_job: Callable[[str], None],
        strategy_reason: str | None = None,
    ) -> _Outcome: ...  # fmt: skip


@dataclass
class _Run:
    ready: threading.Event = field(default_factory=threading.Event)  # a job, or the end
    job_id: str | None = None
    error: BaseException | None = None


class MoveStarter:
    """Starts moves in background threads and says which job each one made."""

    def __init__(self, store: Store, migrate: MigrateFn, *, start_wait_s: float = 180) -> None:
        self.store, self.migrate, self.start_wait_s = store, migrate, start_wait_s
        self._starting: set[str] = set()
        self._lock = threading.Lock()

    def start(
        self, vm: str, to: str, options: MigrationOptions, queue: str | None = None,
        strategy_reason: str | None = None,
    ) -> Job:  # fmt: skip
        """Start moving ``vm`` to ``to``; the move's job once it exists (it may have
        finished already: blocked by its checks). ``queue`` means nothing here;
        ``strategy_reason``: why `auto` chose ``options.strategy``."""
        del queue
        with self._lock:
            if vm in self._starting:
                raise AlreadyExistsError(f"a move of {vm} is being started through this "
                                         "server already; see GET /api/v1/jobs")  # fmt: skip
            self._starting.add(vm)
        try:
            return self._start(vm, to, options, strategy_reason)
        finally:
            with self._lock:
                self._starting.discard(vm)

    def _start(
        self, vm: str, to: str, options: MigrationOptions, strategy_reason: str | None
    ) -> Job:
        run = _Run()
        why = {} if strategy_reason is None else {"strategy_reason": strategy_reason}

        def made(job_id: str) -> None:
            run.job_id = job_id
            run.ready.set()

        def work() -> None:
            try:
                outcome = self.migrate(vm, to, options, on_job=made, **why)
                run.job_id = run.job_id or outcome.result.job_id  # blocked: only returned
            except BaseException as exc:  # handed to the request, or to the job's record
                run.error = exc
            finally:
                run.ready.set()

        threading.Thread(target=work, name=f"vmferry-move-{vm}", daemon=True).start()
        if not run.ready.wait(self.start_wait_s):
            raise StartTimeout(f"the move of {vm} is starting but its job did not appear "
                               f"within {self.start_wait_s:g} s; see GET /api/v1/jobs")  # fmt: skip
        if run.job_id is None:
            assert run.error is not None, "the service ended without a job or an error"
            raise run.error
        return self.store.get_job(run.job_id)


class Mover(Protocol):
    """How the server starts a move: in its own process, or queued for a worker."""

    def start(
        self, vm: str, to: str, options: MigrationOptions, queue: str | None = None,
        strategy_reason: str | None = None,
    ) -> Job:  # fmt: skip
        """The move's job once it exists."""
        ...


class QueuedMoves:
    """PostgreSQL: the job is made here and queued for a `vmferry worker`
    (:mod:`vmferry.service.queue`); nothing runs in the server. The database refuses a second
    unfinished job of one VM (409)."""

    def __init__(self, store: Store, locate: Callable[[str], str]) -> None:
        from vmferry.service import queue as job_queue  # procrastinate: PostgreSQL only

        self.store, self.locate, self._queue = store, locate, job_queue
        self._app = job_queue.build_app(job_queue.store_url(store), worker=False)
        self._app.open()
        job_queue.ensure_schema(store, self._app)
        self._lock = threading.Lock()  # procrastinate's sync connector: one defer at a time

    def start(
        self, vm: str, to: str, options: MigrationOptions, queue: str | None = None,
        strategy_reason: str | None = None,
    ) -> Job:  # fmt: skip
        from vmferry.service.lease import process_lease

        source = self.locate(vm)
        self.store.get_host(to)  # 404 before anything is written
        job = self.store.create_job("migrate", vm, source, to, options)
        self.store.set_owner(job.id, process_lease(self.store))  # the server's, till taken
        try:
            with self._lock:
                self._queue.defer_move(self.store, self._app, job, queue or
                                       self._queue.DEFAULT_QUEUE, strategy_reason)  # fmt: skip
        except Exception as exc:
            why = f"could not be queued: {exc}"
            result = MigrationResult(job.id, vm, source, to, options.strategy, JobStatus.FAILED,
                                     why, None, None, None, None)  # fmt: skip
            self.store.finish(job.id, result)
            raise
        return self.store.get_job(job.id)

    def queue_task(self, task: str, job_id: str, kwargs: dict[str, JSONValue],
                   queue: str | None = None) -> int:  # fmt: skip
        """Queue another kind of job's task (an import) for a worker; a ``queued`` event."""
        with self._lock:
            return self._queue.defer_job(self.store, self._app, task, job_id, kwargs,
                                         queue or self._queue.DEFAULT_QUEUE)  # fmt: skip

    def queue_plan(self, plan_id: str, queue: str | None = None) -> int:
        """Queue a run (or resume) of plan ``plan_id`` for a worker (409 while one waits)."""
        with self._lock:
            return self._queue.defer_plan(self.store, self._app, plan_id,
                                          queue or self._queue.DEFAULT_QUEUE)  # fmt: skip

    def close(self) -> None:
        self._app.close()
