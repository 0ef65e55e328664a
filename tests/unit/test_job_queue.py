"""Jobs for workers: one unfinished job per VM (the database's index), every transition in
the audit trail, and moves queued on PostgreSQL and run by a procrastinate worker (in this
process, with the move itself faked: the lab test runs real workers and a real move)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from support.pg import PgCluster

from vmferry.errors import AlreadyExistsError, BadInputError
from vmferry.model import Host
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult
from vmferry.server.moves import QueuedMoves
from vmferry.service import audit as audit_service
from vmferry.service import jobs as jobs_service
from vmferry.service import queue as job_queue
from vmferry.store import Store
from vmferry.store.db import act_as

OPTIONS = MigrationOptions()


@pytest.fixture
def hosts(store: Store) -> Store:
    store.add_host(Host("kvm1", "test:///default"))
    store.add_host(Host("kvm2", "test:///default"))
    return store


def finish(store: Store, job_id: str, status: JobStatus) -> None:
    job = store.get_job(job_id)
    result = MigrationResult(job_id, job.vm, job.source, job.destination, OPTIONS.strategy,
                             status, "test", None, None, None, None)  # fmt: skip
    store.finish(job_id, result)


def test_a_vm_has_one_unfinished_job_at_a_time(hosts: Store) -> None:
    first = hosts.create_job("migrate", "web1", "kvm1", "kvm2", OPTIONS)
    with pytest.raises(AlreadyExistsError, match=f"unfinished job already: {first.id}"):
        hosts.create_job("migrate", "web1", "kvm1", "kvm2", OPTIONS)
    other = hosts.create_job("migrate", "db1", "kvm1", "kvm2", OPTIONS)  # another VM: fine
    hosts.set_status(first.id, JobStatus.RUNNING)
    with pytest.raises(AlreadyExistsError):
        hosts.create_job("import", "web1", "kvm1", "kvm2", OPTIONS)
    finish(hosts, first.id, JobStatus.FAILED)
    again = hosts.create_job("migrate", "web1", "kvm1", "kvm2", OPTIONS)
    assert {j.id for j in hosts.unfinished_jobs()} == {again.id, other.id}


def test_two_starts_at_once_make_one_job(hosts: Store) -> None:
    """The database decides, not a check before the insert: of 8 threads that create a job
    for one VM at the same moment, exactly one gets it."""
    barrier, made, refused = threading.Barrier(8), [], []
    twin = [hosts.twin() for _ in range(8)]

    def start(store: Store) -> None:
        barrier.wait()
        try:
            made.append(store.create_job("migrate", "web1", "kvm1", "kvm2", OPTIONS).id)
        except AlreadyExistsError as exc:
            refused.append(exc.message)

    threads = [threading.Thread(target=start, args=(s,)) for s in twin]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in twin:
        store.close()
    assert len(made) == 1 and len(refused) == 7
    assert all(made[0] in message for message in refused)


def test_every_transition_is_an_audit_row_naming_who(hosts: Store) -> None:
    act_as("worker:w1")
    try:
        job = hosts.create_job("migrate", "web1", "kvm1", "kvm2", OPTIONS)
        hosts.set_status(job.id, JobStatus.RUNNING)
        finish(hosts, job.id, JobStatus.COMPLETED)
    finally:
        act_as("local:test")
    rows = [e for e in audit_service.entries(hosts) if e.target == job.id]
    assert [(e.user, e.action) for e in rows] == [
        ("worker:w1", "job.pending"), ("worker:w1", "job.running"),
        ("worker:w1", "job.completed"),
    ]  # fmt: skip
    assert rows[-1].detail["vm"] == "web1" and rows[-1].detail["from"] == "running"
    assert rows[0].detail["destination"] == "kvm2"


# -- the queue (PostgreSQL only) ------------------------------------------------------------


@dataclass
class FakeMove:
    """What service.migrate.migrate does with a queued job, without libvirt: the job runs
    (running, an event) and completes, or waits for a cancel."""

    store_url: str
    hold: bool = False
    calls: list[str] | None = None

    def __call__(self, vm: str, to: str, options: MigrationOptions, *, job_id: str,
                 note: Callable[[str], None], **_: object) -> object:  # fmt: skip
        from vmferry.store.db import open_store

        assert self.calls is not None
        self.calls.append(job_id)
        with open_store(self.store_url) as store:
            job = store.set_status(job_id, JobStatus.RUNNING)
            store.add_event(job_id, "progress", "moving (fake)")
            note("moving")
            status = JobStatus.COMPLETED
            while self.hold and not store.is_cancel_requested(job_id):
                threading.Event().wait(0.1)
            if self.hold:
                status = JobStatus.CANCELLED
            result = MigrationResult(job_id, vm, job.source, to, options.strategy, status,
                                     None, 10, 1, 100, 1)  # fmt: skip
            store.finish(job_id, result)

        @dataclass
        class Outcome:
            result: MigrationResult

        return Outcome(result)


@pytest.fixture
def pg_hosts(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    from vmferry.store.db import open_store

    monkeypatch.setenv("VMFERRY_DB", pg_url)
    with open_store(pg_url) as store:
        store.add_host(Host("kvm1", "test:///default"))
        store.add_host(Host("kvm2", "test:///default"))
        yield store


def run_worker_until_idle(store: Store, queues: list[str]) -> None:
    app = job_queue.build_app(job_queue.store_url(store), worker=True)

    async def work() -> None:
        async with app.open_async():
            await app.run_worker_async(queues=queues, wait=False, install_signal_handlers=False,
                                       name="test-worker")  # fmt: skip

    asyncio.run(work())


def test_a_queued_move_runs_in_a_worker_of_its_queue(
    pg_hosts: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeMove(job_queue.store_url(pg_hosts), calls=[])
    monkeypatch.setattr("vmferry.service.migrate.migrate", fake)
    moves = QueuedMoves(pg_hosts, lambda vm: "kvm1")
    try:
        job = moves.start("web1", "kvm2", OPTIONS, "site-b")
        with pytest.raises(AlreadyExistsError):  # the API's 409
            moves.start("web1", "kvm2", OPTIONS)
    finally:
        moves.close()
    queued = pg_hosts.get_job(job.id)
    assert queued.status is JobStatus.PENDING and queued.source == "kvm1"
    assert job_queue.queued_task_id(queued) is not None
    run_worker_until_idle(pg_hosts, ["vmferry"])  # another queue's worker leaves it
    assert fake.calls == [] and pg_hosts.get_job(job.id).status is JobStatus.PENDING
    run_worker_until_idle(pg_hosts, ["site-b"])
    done = pg_hosts.get_job(job.id)
    assert fake.calls == [job.id]
    assert done.status is JobStatus.COMPLETED
    kinds = [e.kind for e in done.events]
    assert kinds.index("queued") < kinds.index("worker") < kinds.index("progress")
    worker = next(e for e in done.events if e.kind == "worker")
    assert worker.data["worker"] == "test-worker"


def test_a_queued_move_no_worker_took_is_cancelled_in_the_queue(
    pg_hosts: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeMove(job_queue.store_url(pg_hosts), calls=[])
    monkeypatch.setattr("vmferry.service.migrate.migrate", fake)
    moves = QueuedMoves(pg_hosts, lambda vm: "kvm1")
    try:
        job = moves.start("web1", "kvm2", OPTIONS)
    finally:
        moves.close()
    cancelled = jobs_service.cancel_job(job.id, wait_s=5)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.reason == "cancelled before a worker took it"
    run_worker_until_idle(pg_hosts, ["vmferry"])
    assert fake.calls == []  # its task left the queue
    again = QueuedMoves(pg_hosts, lambda vm: "kvm1")  # and the VM is free again
    try:
        assert again.start("web1", "kvm2", OPTIONS).status is JobStatus.PENDING
    finally:
        again.close()


def test_a_move_that_cannot_start_ends_failed(
    pg_hosts: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> object:
        raise AlreadyExistsError("the check could not run (fake)")

    monkeypatch.setattr("vmferry.service.migrate.migrate", broken)
    moves = QueuedMoves(pg_hosts, lambda vm: "kvm1")
    try:
        job = moves.start("web1", "kvm2", OPTIONS)
    finally:
        moves.close()
    run_worker_until_idle(pg_hosts, ["vmferry"])
    ended = pg_hosts.get_job(job.id)
    assert ended.status is JobStatus.FAILED
    assert ended.reason == "could not start: the check could not run (fake)"


def test_workers_need_postgresql() -> None:
    with pytest.raises(BadInputError, match="workers need PostgreSQL"):
        job_queue.conninfo("sqlite:////tmp/x.db")
    assert job_queue.conninfo("postgresql+psycopg://u:p@h/db?host=/run") == (
        "postgresql://u:p@h/db?host=%2Frun"  # libpq decodes it
    )


def test_a_worker_lives_through_a_postgresql_restart(
    pg_hosts: Store, pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stops and starts while a worker runs a move: the move's record ends true,
    and the same worker takes the next move once the database is back."""
    release, entered = threading.Event(), threading.Event()
    calls: list[str] = []

    def move(vm: str, to: str, options: MigrationOptions, *, job_id: str,
             note: Callable[[str], None], **_: object) -> object:  # fmt: skip
        from vmferry.store.db import open_store

        calls.append(job_id)
        with open_store(job_queue.store_url(pg_hosts)) as store:
            job = store.set_status(job_id, JobStatus.RUNNING)
            entered.set()
            assert release.wait(60)
            result = MigrationResult(job_id, vm, job.source, to, options.strategy,
                                     JobStatus.COMPLETED, None, 10, 1, 100, 1)  # fmt: skip
            store.finish(job_id, result)
        return type("Outcome", (), {"result": result})()

    monkeypatch.setattr("vmferry.service.migrate.migrate", move)
    stop = threading.Event()

    def run() -> None:
        job_queue.run_worker(pg_hosts, queues=["vmferry"], concurrency=2, name="survivor",
                             stop_timeout_s=5, stop=stop)  # fmt: skip

    moves = QueuedMoves(pg_hosts, lambda vm: "kvm1")  # makes procrastinate's schema
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        first = moves.start("web1", "kvm2", OPTIONS)
        assert entered.wait(30), "the worker did not take the move"
        pg_cluster.stop()  # every connection is cut, the worker's and the move's
        try:
            threading.Event().wait(2)
        finally:
            pg_cluster.start()
        release.set()
        deadline = time.monotonic() + 60
        while pg_hosts.get_job(first.id).status is not JobStatus.COMPLETED:
            assert time.monotonic() < deadline, pg_hosts.get_job(first.id)
            threading.Event().wait(0.2)
        assert thread.is_alive(), "the worker ended with the database"
        second = moves.start("db1", "kvm2", OPTIONS)
        while pg_hosts.get_job(second.id).status is not JobStatus.COMPLETED:
            assert time.monotonic() < deadline + 60, pg_hosts.get_job(second.id)
            threading.Event().wait(0.2)
        assert calls == [first.id, second.id]
    finally:
        release.set()
        moves.close()
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the worker did not stop when told"


def test_a_plan_run_is_queued_once_and_run_by_a_worker(
    pg_hosts: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POST /plans/{id}/run on PostgreSQL queues the plan; one waiting run per plan; a
    worker runs it through service.plan_run.run_plan (faked here: the lab runs real plans)."""
    ran: list[str] = []

    def run_plan(plan_id: str, **_kwargs: object) -> object:
        ran.append(plan_id)
        return type("Record", (), {"status": "completed"})()

    monkeypatch.setattr("vmferry.service.plan_run.run_plan", run_plan)
    moves = QueuedMoves(pg_hosts, lambda vm: "kvm1")
    try:
        first = moves.queue_plan("p1")
        with pytest.raises(AlreadyExistsError, match="waits for a worker already"):
            moves.queue_plan("p1")
        moves.queue_plan("p2", "site-b")
    finally:
        moves.close()
    run_worker_until_idle(pg_hosts, ["vmferry"])
    assert ran == ["p1"]
    run_worker_until_idle(pg_hosts, ["site-b"])
    assert ran == ["p1", "p2"]
    again = QueuedMoves(pg_hosts, lambda vm: "kvm1")  # p1 ran: it may be queued again
    try:
        assert again.queue_plan("p1") > first
    finally:
        again.close()
