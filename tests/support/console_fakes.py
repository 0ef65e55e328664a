"""The console under test: ``create_app`` on a store with a fake inventory (no libvirt),
fake host facts, a fake move that records progress samples as the live engine does, and
one user per role with a password."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from vmferry.errors import NotFoundError
from vmferry.model import Host, VmRecord, VmSpec, VmState
from vmferry.model.account import Role
from vmferry.model.finding import Finding, Severity
from vmferry.model.hostinfo import HostInfo
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult
from vmferry.model.workload import ProfileSample
from vmferry.predict.model import PredictInputs, Prediction
from vmferry.server.actions import Services
from vmferry.server.app import create_app
from vmferry.service import projects
from vmferry.service.check import CheckReport
from vmferry.service.fleet import Fleet
from vmferry.service.import_vm import DiskOutcome, ImportOutcome, ImportRequest
from vmferry.service.lease import process_lease
from vmferry.service.predict import PredictReport
from vmferry.store import accounts
from vmferry.store.db import Store

GIB = 2**30
MIB = 2**20
PASSWORD = "correct horse battery"
ROLE_USERS = {"admin": ("admin", None), "operator": ("operator", None),
              "planner": ("planner", None), "viewer": ("viewer", None),
              "selfweb": ("operator", "web")}  # fmt: skip


# The users' password hash, made once with argon2's cheapest parameters: a verify reads its
# parameters from the hash, so each login of the tests costs microseconds, not 50 ms
# (`vmferry users add` hashes with the defaults; test_console_demo.py goes that way).
_FAST_HASH = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)


def vm(name: str, host: str, state: VmState = VmState.RUNNING, *, vcpus: int = 2,
       memory_gib: float = 1, guest_os: str | None = None) -> VmRecord:  # fmt: skip
    spec = VmSpec(name, f"uuid-{name}", vcpus, int(memory_gib * GIB), guest_os=guest_os,
                  cpu_model="Skylake-Server")  # fmt: skip
    return VmRecord(host, state, True, spec)


FLEET = [
    vm("web1", "kvm1", memory_gib=2, guest_os="http://debian.org/debian/12"),
    vm("web2", "kvm1", VmState.SHUT_OFF, memory_gib=4),
    vm("db1", "kvm2", vcpus=8, memory_gib=16, guest_os="http://microsoft.com/win/2k19"),
    vm("db2", "kvm2", VmState.PAUSED, vcpus=4, memory_gib=8),
    vm("cache1", "kvm2", memory_gib=0.5),
]


@dataclass
class FakeInventory:
    records: list[VmRecord] = field(default_factory=lambda: list(FLEET))

    def __call__(self, store: Store, host: str | None) -> Fleet:
        return Fleet([r for r in self.records if host in (None, r.host)], {})


def host_facts(store: Store) -> dict[str, HostInfo | str]:
    info = HostInfo("kvm1", "kvm1", "qemu+tls://kvm1/system", "QEMU", "11.3.0",
                    "Skylake-Server", "x86_64", 16, 64 * GIB, 40 * GIB)  # fmt: skip
    return {"kvm1": info, "kvm2": "kvm2: no route to host"}


class FakeMove:
    """A move without libvirt: the job, three progress samples as the live engine records
    them, then completed (or held until ``release`` is set, or cancelled)."""

    def __init__(self, store: Store, *, hold: bool = False) -> None:
        self.store, self.hold = store, hold
        self.release = threading.Event()
        self.calls: list[tuple[str, str, str, int]] = []

    def __call__(self, vm: str, to: str, options: MigrationOptions, *,
                 on_job: Callable[[str], None] = lambda _id: None,
                 strategy_reason: str | None = None) -> Any:  # fmt: skip
        self.calls.append((vm, to, options.strategy.value, options.max_downtime_ms))
        if vm == "ghost":
            raise NotFoundError(f"no VM named {vm!r} on the registered hosts")
        job = self.store.create_job("migrate", vm, "kvm1", to, options)
        self.store.set_owner(job.id, process_lease(self.store))
        on_job(job.id)
        self.store.set_status(job.id, JobStatus.RUNNING)
        for index, left in enumerate((900, 300, 40), start=1):
            self.store.add_event(job.id, "progress", f"pass {index}: {left} MiB left", {
                "iteration": index, "memory_remaining_bytes": left * MIB,
                "dirty_rate_bytes_s": 20 * MIB, "throughput_bytes_s": 100 * MIB,
                "expected_downtime_ms": 120})  # fmt: skip
        status = JobStatus.COMPLETED
        while self.hold and not self.release.wait(0.01):
            if self.store.is_cancel_requested(job.id):
                status = JobStatus.CANCELLED
                break
        result = MigrationResult(job.id, vm, "kvm1", to, options.strategy, status,
                                 None if status is JobStatus.COMPLETED else "cancelled",
                                 1000, 50, 1200 * MIB, 3)  # fmt: skip
        self.store.finish(job.id, result)
        return result


def _check(vm: str, to: str, *, copy_storage: bool) -> CheckReport:
    finding = Finding("cpu.model", Severity.WARNING, f"{to} has another CPU model",
                      "pin the CPU model")  # fmt: skip
    return CheckReport(vm, "kvm1", to, (finding,), False)


def _predict(vm: str, to: str, *, max_downtime_ms: int, bandwidth_mib_s: int | None,
             store: Store) -> PredictReport:  # fmt: skip
    inputs = PredictInputs(2 * GIB, 10 * MIB, 100 * MIB, downtime_limit_ms=max_downtime_ms)
    prediction = Prediction(True, 23_400, 180, 2300 * MIB, (), inputs)
    return PredictReport(vm, "kvm1", to, prediction, {"link": "kvm1's link, 800 Mbit/s"})


def _import(request: ImportRequest, *, note: Callable[[str], None],
            on_disk_progress: Callable[[int, float], None]) -> ImportOutcome:  # fmt: skip
    """The real source parser and import planning against a made-up destination; nothing
    is copied or defined (a run reports its one disk copied)."""
    from vmferry.imports.domain_xml import render_domain_xml
    from vmferry.imports.findings import evaluate
    from vmferry.imports.mapping import plan_import
    from vmferry.model.import_target import DestinationFacts, PoolFacts
    from vmferry.sources import open_source

    vm = open_source(request.source, workdir=request.source.parent, limits=request.limits,
                     overrides=request.overrides)  # fmt: skip
    dest = DestinationFacts(request.to, frozenset({"default"}),
                            {"default": PoolFacts("default", "/nowhere", 2**40)},
                            frozenset())  # fmt: skip
    plan = plan_import(vm, request.options, dest)
    findings = tuple(evaluate(vm, plan, dest, v2v_missing=None))
    if request.dry_run:
        return ImportOutcome(vm, request.to, "dry-run", None, findings, plan,
                             render_domain_xml(plan))  # fmt: skip
    on_disk_progress(0, 100.0)
    disks = tuple(DiskOutcome(d.volume, 4096, True) for d in plan.disks)
    return ImportOutcome(vm, request.to, "completed", None, findings, plan,
                         render_domain_xml(plan), disks, phases_ms={"copy": 1})  # fmt: skip


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise AssertionError("not used by the console's tests")


def services() -> Services:
    return Services(check=_check, predict=_predict, profile=_refuse, plan_measure=_refuse,
                    plan_migrate=_refuse, import_vm=_import, resume_job=_refuse)  # fmt: skip


@dataclass
class Console:
    client: TestClient
    store: Store
    move: FakeMove
    inventory: FakeInventory

    def login(self, name: str, password: str = PASSWORD, next_path: str = "/") -> Any:
        page = self.client.get("/login")
        token = form_token(page.text)
        return self.client.post("/login", data={"username": name, "password": password,
                                               "csrf_token": token, "next": next_path},
                                follow_redirects=False)  # fmt: skip

    def csrf(self, path: str = "/") -> str:
        return form_token(self.client.get(path).text)


def form_token(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


@contextmanager
def console(store: Store, *, hold: bool = False,
            records: list[VmRecord] | None = None) -> Iterator[Console]:  # fmt: skip
    """The console on ``store`` behind FastAPI's TestClient (moves held with ``hold``)."""
    with (
        console_app(store, records=records, hold=hold) as app,
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        state = app.state
        yield Console(client, store, state.console_test_move, state.console_test_inventory)


def profile_of(vm: str, samples: int = 60) -> list[ProfileSample]:
    """A minute of a VM's made-up profile, a sample a second: a CPU that rises and falls,
    a quarter of its 2 GiB used, a few MiB/s dirtied."""
    import math
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    found = []
    for n in range(samples):
        wave = (1 + math.sin(n / 6)) / 2
        metrics = {"cpu_share": round(0.05 + 0.2 * wave, 3), "vcpus": 2,
                   "memory_bytes": 2 * GIB, "memory_used_bytes": int((0.45 + 0.1 * wave) * GIB),
                   "memory_unused_bytes": int((1.55 - 0.1 * wave) * GIB),
                   "dirty_rate_bytes_s": int((2 + 6 * wave) * MIB),
                   "disk_write_bytes_s": int(wave * MIB)}  # fmt: skip
        found.append(ProfileSample(vm, "kvm1", (start + timedelta(seconds=n)).isoformat(),
                                   metrics))  # fmt: skip
    return found


@contextmanager
def http_server(app: Any) -> Iterator[str]:
    """``app`` on uvicorn in a thread of this process, on a free port of 127.0.0.1; its
    base URL."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="console-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the console's test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def console_app(store: Store, *, records: list[VmRecord] | None = None,
                hold: bool = False) -> Iterator[Any]:  # fmt: skip
    """The console's app on ``store`` as :func:`console` makes it, without a client."""
    for name in ("kvm1", "kvm2"):
        store.add_host(Host(name, f"qemu+tls://{name}/system"))
    for name, (role, project) in ROLE_USERS.items():
        accounts.add_user(store, name, Role(role), project, f"token-{name}", _FAST_HASH,
                          _FAST_HASH)  # fmt: skip
    projects.set_policy(store, "web", "live,cold", ["always"])
    accounts.set_vm_tags(store, "web1", ["project:web", "tier:1"])
    accounts.set_vm_tags(store, "web2", ["project:web"])
    accounts.set_vm_tags(store, "db1", ["project:db"])
    store.add_profile_samples(profile_of("web1"))
    move = FakeMove(store, hold=hold)
    inventory = FakeInventory(records if records is not None else list(FLEET))
    app = create_app(store, inventory=inventory, migrate=move, event_poll_s=0.02,
                     services=services(), host_facts=host_facts)  # fmt: skip
    app.state.console_test_move, app.state.console_test_inventory = move, inventory
    try:
        yield app
    finally:
        move.release.set()


def make_plan(store: Store, *, moved: bool = True) -> str:
    """A plan of two waves (web1 then db1) kvm1 -> kvm2; ``moved``: both items ran (web1
    0-18 s, db1 19-64 s from the plan's start: longer than its 30 s prediction). Its id."""
    from dataclasses import replace
    from datetime import datetime, timedelta

    from vmferry.model.plan_run import ItemStatus, PlanItem, PlanStatus

    items = [
        PlanItem("web1", 1, 0, "kvm1", "kvm2", "live", "fits the downtime", 0, 20, 20, 150),
        PlanItem("db1", 2, 1, "kvm1", "kvm2", "postcopy", "dirties too fast", 20, 50, 30, 300),
    ]
    schedule = {"makespan_s": 50, "lower_bound_s": 45, "method": "cp-sat",
                "waves": [["web1"], ["db1"]], "migrations": []}  # fmt: skip
    record = store.create_plan("nightly", {"vms": ["web1", "db1"]}, schedule, items)
    if not moved:
        return record.id
    started = store.set_plan_status(record.id, PlanStatus.RUNNING).started_at
    assert started is not None
    origin = datetime.fromisoformat(started.replace("Z", "+00:00"))

    def at(second: int) -> str:
        return (origin + timedelta(seconds=second)).isoformat()

    for item, (start, end, down) in zip(items, ((0, 18, 120), (19, 64, 280)), strict=True):
        store.save_plan_item(record.id, replace(item, status=ItemStatus.COMPLETED,
                                                started_at=at(start), finished_at=at(end),
                                                actual_downtime_ms=down))  # fmt: skip
    store.set_plan_status(record.id, PlanStatus.COMPLETED)
    return record.id
