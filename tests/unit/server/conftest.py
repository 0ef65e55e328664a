"""The API under test: ``create_app`` on the ``store`` fixture (SQLite and a real
PostgreSQL, tests/unit/conftest.py), with a fake inventory (no libvirt), one user per role,
and two self-service users bound to projects."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from action_fakes import FakeActions, plan_migrate_of
from fastapi.testclient import TestClient

from vmferry.errors import NotFoundError
from vmferry.model import Host, VmRecord, VmSpec, VmState
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult
from vmferry.predict.strategy import MoveStrategy, StrategyChoice
from vmferry.server.app import create_app
from vmferry.server.moves import QueuedMoves
from vmferry.service import projects, users
from vmferry.service.fleet import Fleet
from vmferry.service.lease import process_lease
from vmferry.store import accounts
from vmferry.store.db import Store

GIB = 2**30


def vm(name: str, host: str, state: VmState = VmState.RUNNING, *, memory_gib: float = 1,
       cpu_model: str | None = None) -> VmRecord:  # fmt: skip
    spec = VmSpec(name, f"uuid-{name}", 2, int(memory_gib * GIB), cpu_model=cpu_model)
    return VmRecord(host, state, True, spec)


FLEET = [
    vm("web1", "kvm1", memory_gib=2, cpu_model="Skylake-Server"),
    vm("web2", "kvm1", VmState.SHUT_OFF, memory_gib=4),
    vm("db1", "kvm2", memory_gib=16, cpu_model="Skylake-Server"),
    vm("db2", "kvm2", VmState.PAUSED, memory_gib=8),
    vm("cache1", "kvm2", memory_gib=0.5),
]


@dataclass
class FakeInventory:
    """What the hosts report: the fleet above; kvm3 never answers."""

    records: list[VmRecord] = field(default_factory=lambda: list(FLEET))
    calls: int = 0

    def __call__(self, store: Store, host: str | None) -> Fleet:
        self.calls += 1
        if host is not None:
            store.get_host(host)  # 404 for a host that is not registered
        records = [r for r in self.records if host is None or r.host == host]
        unreachable = {} if host not in (None, "kvm3") else {"kvm3": "kvm3: no route to host"}
        return Fleet(records, unreachable)


@dataclass(frozen=True)
class FakeOutcome:
    result: MigrationResult


class FakeMigrate:
    """The service's migrate as the API sees it, without libvirt: it makes the job (owned
    by this process's lease) after its "checks", runs it, and finishes it: at once, or
    (``hold``) when ``release`` is set or a cancel is asked for. ``ghost`` is a VM no host
    has (nothing is made); ``blocked`` fails its checks (the job ends failed at once)."""

    def __init__(self, store: Store, *, hold: bool = False) -> None:
        self.store, self.hold = store, hold
        self.release, self.entered = threading.Event(), threading.Event()
        self.calls: list[tuple[str, str, str]] = []
        self.reasons: list[str | None] = []  # strategy_reason, as `auto` gives it

    def __call__(
        self, vm: str, to: str, options: MigrationOptions, *,
        on_job: Callable[[str], None] = lambda _id: None, strategy_reason: str | None = None,
    ) -> FakeOutcome:  # fmt: skip
        self.calls.append((vm, to, options.strategy.value))
        self.reasons.append(strategy_reason)
        self.entered.set()
        if vm == "ghost":
            raise NotFoundError(f"no VM named {vm!r} on the registered hosts")
        job = self.store.create_job("migrate", vm, "kvm1", to, options)
        self.store.set_owner(job.id, process_lease(self.store))
        if vm == "blocked":  # as the service: a blocked move's job is only returned
            return self._finish(job.id, vm, to, options, JobStatus.FAILED, "blocked by checks")
        on_job(job.id)
        self.store.set_status(job.id, JobStatus.RUNNING)
        self.store.add_event(job.id, "progress", "pass 1")
        while self.hold and not self.release.wait(0.01):
            if self.store.is_cancel_requested(job.id):
                return self._finish(job.id, vm, to, options, JobStatus.CANCELLED, "cancelled")
        return self._finish(job.id, vm, to, options, JobStatus.COMPLETED, None)

    def _finish(self, job_id: str, vm: str, to: str, options: MigrationOptions,
                status: JobStatus, reason: str | None) -> FakeOutcome:  # fmt: skip
        result = MigrationResult(job_id, vm, "kvm1", to, options.strategy, status, reason, 10,
                                 1, None, None)  # fmt: skip
        self.store.finish(job_id, result)
        return FakeOutcome(result)


@dataclass
class Api:
    client: TestClient
    store: Store
    tokens: dict[str, str]
    inventory: FakeInventory
    migrate: FakeMigrate
    actions: FakeActions  # check, predict, profile, plans, imports, job resume
    plan_moves: FakeMigrate  # the moves of plans

    def as_(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}

    def job(self, vm_name: str, status: JobStatus = JobStatus.PENDING) -> str:
        job = self.store.create_job("migrate", vm_name, "kvm1", "kvm2", MigrationOptions())
        if status is not JobStatus.PENDING:
            self.store.set_status(job.id, JobStatus.RUNNING)
        if status.finished:
            self.store.set_status(job.id, status, f"test: {status}")
        return job.id


ROLE_USERS = {"admin": ("admin", None), "operator": ("operator", None),
              "planner": ("planner", None), "viewer": ("viewer", None),
              "selfweb": ("operator", "web"), "selfdb": ("operator", "db")}  # fmt: skip


@contextmanager
def serving(store: Store, *, hold: bool = False, service: bool = False,
            plan_hold: bool = False, queued: bool = False) -> Iterator[Api]:  # fmt: skip
    """The API on ``store`` with the hosts, users and tags above; its moves run by
    :class:`FakeMigrate`, or (``service``) by the real service.migrate.migrate; its other
    actions by :class:`action_fakes.FakeActions` (a plan's moves by a FakeMigrate held
    with ``plan_hold``). ``queued`` (PostgreSQL): moves, plans and imports are queued for
    workers (:class:`QueuedMoves`, its VMs located in the fleet above) instead."""
    for name in ("kvm1", "kvm2", "kvm3"):
        store.add_host(Host(name, f"qemu+tls://{name}/system"))
    tokens = {}
    for name, (role, project) in ROLE_USERS.items():
        tokens[name] = users.add_user(store, name, role, project)[1]
    for project in ("web", "db"):  # self-service may move by any strategy, at any time
        projects.set_policy(store, project, "live,postcopy,warm,cold", ["always"])
    accounts.set_vm_tags(store, "web1", ["project:web", "tier:1"])
    accounts.set_vm_tags(store, "web2", ["project:web"])
    accounts.set_vm_tags(store, "db1", ["project:db", "tier:1"])
    from vmferry.service.migrate import migrate as service_migrate  # in-process, also on PG

    inventory, migrate = FakeInventory(), FakeMigrate(store, hold=hold)
    plan_moves = FakeMigrate(store, hold=plan_hold)
    actions = FakeActions(store, list(FLEET), plan_migrate_of(plan_moves))
    mover = QueuedMoves(store, lambda vm: _find_host(vm)) if queued else None
    app = create_app(store, inventory=inventory, migrate=service_migrate if service else migrate,
                     mover=mover, choose=_live_always, max_body_bytes=4096, event_poll_s=0.01,
                     services=actions.services())  # fmt: skip
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Api(client, store, tokens, inventory, migrate, actions, plan_moves)
    finally:
        migrate.release.set()  # no move thread outlives the test
        plan_moves.release.set()
        actions.release.set()
        if mover is not None:
            mover.close()


def _live_always(vm: str, to: str, options: MigrationOptions) -> StrategyChoice:
    """`auto`'s choice without libvirt (test_server_auto.py puts others in)."""
    return StrategyChoice(MoveStrategy.LIVE, "live (the tests' fake choice)", 0)


def _find_host(vm: str) -> str:
    for record in FLEET:
        if record.spec.name == vm:
            return record.host
    raise NotFoundError(f"no registered host has a VM named {vm!r}")


@pytest.fixture
def api(store: Store) -> Iterator[Api]:
    with serving(store) as served:
        yield served
