"""Jobs on PostgreSQL: procrastinate carries each move the server queues to a `vmferry worker`.

Data flow (docs/architecture.md, "Workers"):

- **Queue.** ``POST /api/v1/migrations`` on a PostgreSQL store makes the job (``pending``,
  owned by the server's lease; the unique index of migration 0013 refuses a second unfinished
  job of one VM, which is the API's 409), records a ``queued`` event, and defers the task
  ``vmferry.run_move(job_id)`` on a queue (``vmferry`` unless the request names one).
- **Work.** A worker takes it (procrastinate's locking: one worker per task), hands the job
  to its own lease and runs :func:`vmferry.service.migrate.migrate` on it: the same checks,
  move, verification and record as `vmferry migrate`. Events and the end are in the store,
  where the API reads them.
- **Plans.** ``POST /plans/{id}/run`` (and ``resume``) on PostgreSQL queue
  ``vmferry.run_plan(plan_id)`` (one waiting run per plan: procrastinate's queueing lock);
  a worker runs the whole plan as `vmferry plan run` does, its moves in threads of that
  worker under its lease. Pause and cancel are the plan's store flags, which reach it. A
  worker told to stop pauses its plans; one killed leaves them to `plan resume`, which
  reconciles the jobs it left first.
- **Cancel.** The store's cancel flag reaches the engine in whichever worker runs the job; a
  job no worker took yet is cancelled in the queue (``todo`` -> ``cancelled``) and finished
  ``cancelled`` at once. A worker told to stop (SIGTERM, Ctrl-C) waits ``stop_timeout_s`` for
  its moves, then procrastinate aborts them and each abort becomes a cancel: the source keeps
  running.
- **Supervise.** procrastinate's worker stops when its database connection fails (a
  PostgreSQL restart): it lets its running moves finish (their own store connections come
  back), and :func:`run_worker` starts it again every :data:`RESTART_S` seconds until the
  database answers. Its stop timeout is vmferry's own: on SIGTERM or Ctrl-C no new move
  starts; after ``stop_timeout_s`` the moves it still runs are cancelled through the store
  (a second signal cancels them at once).
- **Reconcile.** A worker killed (SIGKILL) stops renewing its lease. Every worker runs the
  periodic task ``vmferry.reconcile`` (every :data:`RECONCILE_EVERY_S` seconds, one at a
  time): unfinished jobs whose owner is gone are reconciled (:func:`reconcile_job`: source
  running, or destination confirmed), and the dead worker's procrastinate task is marked
  failed, never retried: a blind second move is what reconciliation exists to avoid.

Only PostgreSQL: with SQLite the server runs moves in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.job_context import JobContext
from procrastinate.jobs import Status
from procrastinate.types import JSONValue
from procrastinate.worker import Worker
from sqlalchemy import text
from sqlalchemy.engine import make_url

from vmferry.errors import AlreadyExistsError, BadInputError, VmferryError
from vmferry.model.migration import Job, JobStatus, MigrationResult
from vmferry.service.jobs import owner_alive, reconcile_job
from vmferry.service.lease import process_lease
from vmferry.store.db import Store, open_store

__all__ = [
    "DEFAULT_QUEUE",
    "RECONCILE_EVERY_S",
    "RUN_MOVE",
    "QueuedMove",
    "build_app",
    "cancel_queued",
    "conninfo",
    "defer_job",
    "defer_move",
    "ensure_schema",
    "queued_task_id",
    "reconcile_orphans",
    "run_worker",
    "store_url",
]

log = logging.getLogger("vmferry.worker")

DEFAULT_QUEUE = "vmferry"
RUN_MOVE = "vmferry.run_move"
RUN_PLAN = "vmferry.run_plan"
RECONCILE = "vmferry.reconcile"
RECONCILE_EVERY_S = 10
_SCHEMA_LOCK = 0x766D6665  # "vmfe": one process applies procrastinate's schema at a time
ABORT_POLL_S = 1.0
RESTART_S = 2.0


def conninfo(store_url: str) -> str:
    """The libpq URI of a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://...``), for
    procrastinate; :class:`BadInputError` for any other database. Pure."""
    url = make_url(store_url)
    if url.get_backend_name() != "postgresql":
        raise BadInputError(
            f"workers need PostgreSQL; the store is {url.get_backend_name()} (set VMFERRY_DB "
            "to postgresql+psycopg://user@host/vmferry; with SQLite `vmferry server` runs "
            "jobs itself)"
        )
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def store_url(store: Store) -> str:
    """The store's URL with its password (for a connection of procrastinate's own)."""
    return store.engine.url.render_as_string(hide_password=False)


def build_app(
    store_url: str, *, worker: bool, tasks: Mapping[str, Callable[..., object]] | None = None
) -> procrastinate.App:
    """The procrastinate app on the store's database, with vmferry's tasks (and ``tasks``,
    by name: those the layers above define, given ``JobContext`` first): an async connector
    for a worker, a synchronous one for the server that defers."""
    info = conninfo(store_url)
    connector: procrastinate.BaseConnector = (
        procrastinate.PsycopgConnector(conninfo=info) if worker
        else procrastinate.SyncPsycopgConnector(conninfo=info)
    )  # fmt: skip
    app = procrastinate.App(connector=connector)
    app.task(name=RUN_MOVE, pass_context=True, queue=DEFAULT_QUEUE)(_run_move)
    app.task(name=RUN_PLAN, pass_context=True, queue=DEFAULT_QUEUE)(_run_plan)
    for name, function in (tasks or {}).items():
        app.task(name=name, pass_context=True, queue=DEFAULT_QUEUE)(function)
    app.periodic(cron=f"* * * * * */{RECONCILE_EVERY_S}", periodic_id="reconcile")(
        app.task(name=RECONCILE, pass_context=True, queue=DEFAULT_QUEUE, lock=RECONCILE)(_reconcile)
    )
    return app


def ensure_schema(store: Store, app: procrastinate.App) -> bool:
    """Apply procrastinate's schema to the store's database unless it is there (under an
    advisory lock, so workers starting together apply it once); whether it applied it.
    ``app`` must be open."""
    with store.engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SCHEMA_LOCK})
        try:
            present = connection.execute(text("SELECT to_regclass('procrastinate_jobs')"))
            if present.scalar() is not None:
                return False
            app.schema_manager.apply_schema()
            return True
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SCHEMA_LOCK})
            connection.commit()


@dataclass(frozen=True)
class QueuedMove:
    queue: str
    task_id: int


def defer_move(
    store: Store, app: procrastinate.App, job: Job, queue: str,
    strategy_reason: str | None = None,
) -> QueuedMove:  # fmt: skip
    """Queue job ``job`` (made, ``pending``) for a worker; recorded as a ``queued`` event.
    ``strategy_reason``: why `auto` chose its strategy (the worker records it). ``app`` must
    be open."""
    deferrer = app.configure_task(RUN_MOVE, queue=queue)
    task_id = deferrer.defer(job_id=job.id, strategy_reason=strategy_reason)
    queued = QueuedMove(queue, task_id)
    store.add_event(job.id, "queued", f"queued on {queue!r} for a vmferry worker (task "
                    f"{task_id})", {"queue": queue, "task_id": task_id})  # fmt: skip
    return queued


def defer_job(
    store: Store, app: procrastinate.App, task: str, job_id: str, kwargs: dict[str, JSONValue],
    queue: str,
) -> int:  # fmt: skip
    """Queue task ``task`` (registered by the workers that run it: ``build_app(tasks=)``)
    for job ``job_id``; recorded as a ``queued`` event, as a move's is."""
    task_id: int = app.configure_task(task, queue=queue).defer(job_id=job_id, **kwargs)
    store.add_event(job_id, "queued", f"queued on {queue!r} for a vmferry worker (task "
                    f"{task_id})", {"queue": queue, "task_id": task_id})  # fmt: skip
    return task_id


def defer_plan(store: Store, app: procrastinate.App, plan_id: str, queue: str) -> int:
    """Queue a run (or resume) of plan ``plan_id`` for a worker; :class:`AlreadyExistsError`
    while a run of it waits in the queue or runs in a worker already (two requests at once:
    procrastinate's queueing lock lets one wait). ``app`` must be open."""
    with store.engine.connect() as connection:
        busy = connection.execute(
            text("SELECT status FROM procrastinate_jobs WHERE task_name = :task AND "
                 "args->>'plan_id' = :plan AND status IN ('todo', 'doing') LIMIT 1"),
            {"task": RUN_PLAN, "plan": plan_id},
        ).scalar()  # fmt: skip
    if busy is not None:
        where = "waits for a worker" if busy == "todo" else "runs in a worker"
        raise AlreadyExistsError(f"a run of plan {plan_id} {where} already")
    try:
        deferrer = app.configure_task(RUN_PLAN, queue=queue, queueing_lock=f"plan:{plan_id}")
        task_id: int = deferrer.defer(plan_id=plan_id)
    except AlreadyEnqueued as exc:
        raise AlreadyExistsError(f"a run of plan {plan_id} waits for a worker already",
                                 cause=exc) from exc  # fmt: skip
    return task_id


def queued_task_id(job: Job) -> int | None:
    """The procrastinate task of a job the server queued (None: not queued). Pure."""
    for event in reversed(job.events):
        if event.kind == "queued":
            value = event.data.get("task_id")
            return value if isinstance(value, int) else None
    return None


def cancel_queued(store: Store, job: Job) -> Job | None:
    """Cancel a queued job no worker took yet: its task leaves the queue and the job ends
    ``cancelled``. None when a worker has it already (its engine sees the cancel flag), or it
    was never queued."""
    task_id = queued_task_id(job)
    if task_id is None:
        return None
    app = build_app(store_url(store), worker=False)
    with app.open():
        if not app.job_manager.cancel_job_by_id(task_id):
            return None
    result = MigrationResult(job.id, job.vm, job.source, job.destination, job.options.strategy,
                             JobStatus.CANCELLED, "cancelled before a worker took it", None,
                             None, None, None)  # fmt: skip
    return store.finish(job.id, result)


# -- the tasks (run in workers) ---------------------------------------------------------


def _run_move(context: JobContext, job_id: str, strategy_reason: str | None = None) -> str:
    """Run job ``job_id`` in this worker (procrastinate runs this in a thread)."""
    from vmferry.service.migrate import migrate  # the engine and its drivers: workers only

    with open_store() as store:
        job = store.get_job(job_id)
        if job.status.finished:
            return f"job {job_id} was {job.status} already"
        store.set_owner(job_id, process_lease(store))
        name = context.worker_name or "worker"
        store.add_event(job_id, "worker", f"taken by vmferry worker {name}",
                        {"worker": name, "task_id": context.job.id})  # fmt: skip
        if store.is_cancel_requested(job_id):
            why = "cancelled before it started"
            result = MigrationResult(job.id, job.vm, job.source, job.destination,
                                     job.options.strategy, JobStatus.CANCELLED, why, None, None,
                                     None, None)  # fmt: skip
            store.finish(job_id, result)
            return "cancelled before it started"
        done = threading.Event()
        watch = threading.Thread(target=_abort_becomes_cancel, args=(context, store, job_id, done),
                                 name=f"vmferry-abort-{job_id}", daemon=True)  # fmt: skip
        watch.start()
        try:
            outcome = migrate(job.vm, job.destination, job.options, job_id=job_id,
                              strategy_reason=strategy_reason,
                              note=lambda message: log.info("%s: %s", job_id, message))  # fmt: skip
        except Exception as exc:  # before the move began (a check could not run): the job ends
            _fail_unstarted(store, job_id, exc)
            raise
        finally:
            done.set()
            watch.join()
        return f"{outcome.result.status}: {outcome.result.reason or ''}".rstrip(": ")


def _run_plan(context: JobContext, plan_id: str) -> str:
    """Run (or resume) plan ``plan_id`` in this worker: its waves and moves run here, owned
    by the worker's lease, as `vmferry plan run` runs them."""
    from vmferry.service import migrate as migrate_module
    from vmferry.service.plan_run import PlanEvent, run_plan

    name = context.worker_name or "worker"
    log.info("plan %s: taken by vmferry worker %s", plan_id, name)

    def on_event(event: PlanEvent) -> None:
        log.info("plan %s: %s", plan_id, event.message)

    record = run_plan(plan_id, migrate_fn=migrate_module.migrate, on_event=on_event)
    return f"plan {plan_id}: {record.status}"


def _fail_unstarted(store: Store, job_id: str, exc: Exception) -> None:
    """Finish a job the service left unfinished because it raised (the engine finishes every
    job it started; what raises before it cannot leave a VM half moved)."""
    job = store.get_job(job_id)
    if job.status.finished:
        return
    why = exc.message if isinstance(exc, VmferryError) else f"{type(exc).__name__}: {exc}"
    if job.status is JobStatus.RUNNING:  # the engine's own record is unsure: reconcile it
        store.add_event(job_id, "note", f"the worker's move raised: {why}; reconciling")
        return
    result = MigrationResult(job.id, job.vm, job.source, job.destination, job.options.strategy,
                             JobStatus.FAILED, f"could not start: {why}", None, None, None,
                             None)  # fmt: skip
    store.finish(job_id, result)


def _abort_becomes_cancel(
    context: JobContext, store: Store, job_id: str, done: threading.Event
) -> None:
    """A worker that stops (or a procrastinate abort) cancels the move: the engine sees the
    store's flag and leaves the source running."""
    while not done.wait(ABORT_POLL_S):
        if context.should_abort():
            with contextlib.suppress(VmferryError):
                store.request_cancel(job_id)
            store.add_event(job_id, "note", "the worker is stopping: move cancelled")
            return


async def _reconcile(context: JobContext, timestamp: int) -> str:
    """Reconcile the jobs of dead owners, then fail the tasks of dead workers."""
    del timestamp
    reconciled = await asyncio.to_thread(reconcile_orphans)
    manager = context.app.job_manager if context.app is not None else None
    failed = 0
    if manager is not None:
        for stalled in await manager.get_stalled_jobs(task_name=RUN_MOVE):
            assert stalled.id is not None
            await manager.finish_job_by_id_async(stalled.id, Status.FAILED, delete_job=False)
            failed += 1
    return f"reconciled {len(reconciled)} jobs, failed {failed} tasks of dead workers"


def reconcile_orphans(store: Store | None = None, *, wait_s: float = 60) -> list[Job]:
    """Reconcile every unfinished job whose owner is gone (its lease expired); the jobs as
    recorded afterwards."""
    with open_store() if store is None else contextlib.nullcontext(store) as opened:
        orphans = [job for job in opened.unfinished_jobs() if not owner_alive(opened, job)]
    done: list[Job] = []
    for job in orphans:
        try:
            done.append(reconcile_job(job.id, wait_s=wait_s))
        except VmferryError as exc:
            log.warning("job %s: not reconciled: %s", job.id, exc.message)
    return done


# -- the worker process -----------------------------------------------------------------


def run_worker(
    store: Store, *, queues: list[str], concurrency: int, name: str, stop_timeout_s: float,
    stop: threading.Event | None = None, tasks: Mapping[str, Callable[..., object]] | None = None,
) -> None:  # fmt: skip
    """Take moves from ``queues`` until SIGTERM or SIGINT (see the module's "Supervise"), or,
    given ``stop`` (a worker in a thread: no signal handlers), until it is set."""
    url = store_url(store)
    stopping = threading.Event()
    current: list[Worker] = []
    timers: list[threading.Timer] = []  # cancel_mine after the stop timeout, if still running

    def cancel_mine(why: str) -> None:
        lease = process_lease(store)
        for job in store.unfinished_jobs():
            if job.owner_id == lease.owner_id:
                with contextlib.suppress(VmferryError):
                    store.request_cancel(job.id)
                    store.add_event(job.id, "note", f"the worker is stopping: {why}")

    def pause_mine() -> None:
        """The plans this worker runs start no new move (`plan resume` goes on later)."""
        from vmferry.service.plan import pause_plan

        lease = process_lease(store)
        for record in store.list_plans(limit=1000):
            if not record.status.finished and record.owner_id == lease.owner_id:
                with contextlib.suppress(VmferryError):
                    pause_plan(record.id, store=store)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():  # a second signal: cancel now
            threading.Thread(target=cancel_mine, args=("asked twice",), daemon=True).start()
            return
        stopping.set()
        log.info("stopping: no new move; running ones get %g s", stop_timeout_s)
        threading.Thread(target=pause_mine, daemon=True).start()
        for worker in current:
            worker.stop()  # type: ignore[no-untyped-call]
        timer = threading.Timer(stop_timeout_s, cancel_mine,
                                args=(f"its moves were not done {stop_timeout_s:g} s after "
                                      "it was told to stop",))  # fmt: skip
        timer.daemon = True
        timers.append(timer)
        timer.start()

    if stop is None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
    else:

        def stop_when_set() -> None:
            stop.wait()
            on_signal(0, None)

        threading.Thread(target=stop_when_set, daemon=True).start()
    try:
        while not stopping.is_set():
            app = build_app(url, worker=True, tasks=tasks)
            worker = Worker(app=app, queues=queues, concurrency=concurrency, name=name,
                            install_signal_handlers=False,
                            shutdown_graceful_timeout=None)  # fmt: skip
            current[:] = [worker]
            try:
                asyncio.run(_work(app, worker))
            except Exception as exc:  # the database is gone (or went while it stopped)
                log.warning("the queue's database: %s", str(exc).strip() or type(exc).__name__)
            if stopping.is_set():
                break
            log.warning("the worker stopped (its database connection failed); starting it "
                        "again in %g s", RESTART_S)  # fmt: skip
            stopping.wait(RESTART_S)
    finally:  # its moves ended with it: nothing is left for the stop timeout to cancel
        for timer in timers:
            timer.cancel()


async def _work(app: procrastinate.App, worker: Worker) -> None:
    async with app.open_async():
        await worker.run()  # type: ignore[no-untyped-call]
