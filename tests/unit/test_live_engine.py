"""The live engine's fault handling, with fake hosts and domains (no libvirt daemon)."""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any

import libvirt
import pytest

from vmferry.drivers import libvirt_migration
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_migration import (
    CompletedStats,
    MigrationRequest,
    RunningMigration,
    completed_from_stats,
    sample_from_stats,
)
from vmferry.engine import live
from vmferry.engine.live import measured_stats
from vmferry.errors import HostUnreachableError, VmferryError
from vmferry.model import VmRecord, VmSpec, VmState
from vmferry.model.migration import ProgressSample
from vmferry.verify.witness import WitnessReport

REPORT = WitnessReport(None, None, None, None)
MIB = 2**20


def record(host: str, state: VmState) -> VmRecord:
    return VmRecord(host, state, True, VmSpec("g", "uuid-g", 1, 2**29))


class FakeHost:
    """Just what the engine's verification uses of a LibvirtHost."""

    def __init__(self, name: str, vms: list[VmRecord] | None = None, *, up: bool = True) -> None:
        self.name, self.uri = name, f"qemu+tcp://{name}/system"
        self.vms, self.up = vms or [], up
        self.destroyed: list[str] = []

    def list_vms(self) -> list[VmRecord]:
        if not self.up:
            raise HostUnreachableError(f"host {self.name!r}: listing VMs: connection lost")
        return self.vms

    def destroy(self, name: str) -> None:
        self.destroyed.append(name)

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


def verify(src: FakeHost, dst: FakeHost, moved: bool) -> Any:
    return live._verify(src, dst, "g", moved, REPORT, False)  # type: ignore[arg-type]


@pytest.fixture
def reconnect(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeHost | None]:
    """What LibvirtHost.connect returns for each host name (None: refused)."""
    hosts: dict[str, FakeHost | None] = {}

    def connect(name: str, uri: str, **_kw: object) -> FakeHost:
        host = hosts.get(name)
        if host is None:
            raise HostUnreachableError(f"host {name!r}: cannot connect to libvirt at {uri}")
        return host

    monkeypatch.setattr(LibvirtHost, "connect", staticmethod(connect))
    return hosts


def test_an_unreachable_destination_after_a_failed_migration_is_a_problem_not_a_crash(
    reconnect: dict[str, FakeHost | None],
) -> None:
    src = FakeHost("kvm1", [record("kvm1", VmState.RUNNING)])
    dst = FakeHost("kvm2", up=False)
    v = verify(src, dst, moved=False)
    assert not v.running_on_destination and not v.absent_on_source
    assert len(v.problems) == 1 and v.problems[0].startswith("could not look for g on kvm2: ")
    assert "the source copy" not in v.problems[0]


def test_a_broken_connection_is_retried_once_and_the_orphan_destroyed_there(
    reconnect: dict[str, FakeHost | None],
) -> None:
    src = FakeHost("kvm1", [record("kvm1", VmState.RUNNING)])
    dead = FakeHost("kvm2", up=False)
    fresh = FakeHost("kvm2", [record("kvm2", VmState.PAUSED)])  # libvirtd came back
    reconnect["kvm2"] = fresh
    v = verify(src, dead, moved=False)
    assert fresh.destroyed == ["g"] and dead.destroyed == []
    assert v.problems == () and not v.running_on_destination


def test_only_an_active_incoming_copy_is_destroyed_and_only_while_the_source_runs() -> None:
    src = FakeHost("kvm1", [record("kvm1", VmState.RUNNING)])
    defined = FakeHost("kvm2", [record("kvm2", VmState.SHUT_OFF)])
    assert verify(src, defined, moved=False).problems == ()
    assert defined.destroyed == []  # a definition left by an earlier move stays

    stopped = FakeHost("kvm1", [record("kvm1", VmState.SHUT_OFF)])
    paused = FakeHost("kvm2", [record("kvm2", VmState.PAUSED)])
    v = verify(stopped, paused, moved=False)
    assert paused.destroyed == []  # never destroy the last copy
    assert v.problems == ("the source copy on kvm1 is not running",)


def test_an_unreachable_destination_after_a_move_fails_the_verification(
    reconnect: dict[str, FakeHost | None],
) -> None:
    v = verify(FakeHost("kvm1"), FakeHost("kvm2", up=False), moved=True)
    assert not v.passed and v.absent_on_source
    assert [p.split(":")[0] for p in v.problems] == ["could not look for g on kvm2"]


class FakeDomain:
    def __init__(self, abort_errors: int = 0, migrate: Exception | None = None) -> None:
        self.abort_errors, self.aborts, self.migrate_error = abort_errors, 0, migrate
        self.release = threading.Event()

    def abortJob(self) -> int:
        self.aborts += 1
        if self.aborts <= self.abort_errors:
            raise libvirt.libvirtError("Requested operation is not valid: no job is active")
        return 0

    def migrateToURI3(self, *_args: object) -> int:
        self.release.wait(5)
        if self.migrate_error is not None:
            raise self.migrate_error
        return 0


def running(dom: FakeDomain) -> RunningMigration:
    class Source:
        def _lookup(self, _name: str) -> FakeDomain:
            return dom

    request = MigrationRequest("g", "qemu+tcp://kvm2/system", None, None, False)
    return RunningMigration(Source(), request)  # type: ignore[arg-type]


def test_an_abort_libvirt_refused_stays_pending_until_it_takes() -> None:
    dom = FakeDomain(abort_errors=1)
    migration = running(dom)
    migration.start()
    migration.abort()  # before libvirt's job began
    assert migration.abort_pending
    migration.abort()
    assert not migration.abort_pending and dom.aborts == 2
    dom.release.set()
    assert migration.wait(5)


def test_an_abort_after_the_end_is_not_pending() -> None:
    dom = FakeDomain(abort_errors=9)
    migration = running(dom)
    migration.start()
    dom.release.set()
    assert migration.wait(5) and migration.succeeded
    migration.abort()
    assert not migration.abort_pending


def test_job_statistics_that_hang_give_no_sample_and_no_second_call() -> None:
    class Hanging(FakeDomain):
        def __init__(self) -> None:
            super().__init__()
            self.calls, self.answer = 0, threading.Event()

        def jobStats(self, _flags: int) -> dict[str, int]:
            self.calls += 1
            self.answer.wait(5)
            return {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_processed": 7}

    dom = Hanging()
    migration = running(dom)
    assert migration.sample(timeout_s=0.05) is None
    assert migration.sample(timeout_s=0.05) is None
    assert dom.calls == 1  # the first call still hangs: no second one on that connection
    dom.answer.set()
    sample = migration.sample(timeout_s=2)
    assert sample is not None and sample.memory_processed_bytes == 7 and dom.calls == 2


def test_a_downtime_call_or_an_abort_that_hangs_does_not_hold_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(libvirt_migration, "SAMPLE_TIMEOUT_S", 0.1)

    class Stuck(FakeDomain):
        def __init__(self) -> None:
            super().__init__()
            self.go = threading.Event()

        def migrateSetMaxDowntime(self, _ms: int, _flags: int) -> int:
            self.go.wait(5)
            return 0

        def migrateGetMaxDowntime(self, _flags: int) -> int:
            return 220

        def abortJob(self) -> int:
            self.go.wait(5)
            return 0

    dom = Stuck()
    migration = running(dom)
    migration.start()
    with pytest.raises(VmferryError, match="did not answer the downtime limit"):
        migration.set_downtime(220)
    migration.abort()
    assert migration.abort_unanswered and migration.abort_pending
    dom.go.set()
    dom.release.set()
    assert migration.wait(5)


def test_only_libvirts_success_counts_as_moved() -> None:
    migration = running(FakeDomain())
    assert not migration.started and not migration.succeeded
    dom = FakeDomain(migrate=SystemError("returned a result with an exception set"))
    migration = running(dom)
    migration.start()
    dom.release.set()
    assert migration.wait(5)
    assert not migration.succeeded and migration.error is not None
    assert "SystemError" in migration.error


def test_the_first_ctrl_c_sets_the_flag_the_second_raises() -> None:
    before = signal.getsignal(signal.SIGINT)
    with live.ctrl_c_flag() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted.wait(5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            threading.Event().wait(5)  # the handler runs here
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_the_flag_stays_clear() -> None:
    seen: list[bool] = []

    def run() -> None:
        with live.ctrl_c_flag() as interrupted:
            seen.append(interrupted.is_set())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(5)
    assert seen == [False]


def test_empty_statistics_are_zero_not_a_crash() -> None:
    # libvirt can report a field with no value (None) at the start of a job
    stats = {"type": 2, "time_elapsed": 3096, "memory_iteration": 1, "memory_dirty_rate": None,
             "memory_page_size": None, "memory_bps": None, "downtime": None}  # fmt: skip
    s = sample_from_stats(stats, postcopy=False)
    assert (s.elapsed_ms, s.iteration, s.dirty_rate_bytes_s, s.throughput_bytes_s) == (
        3096, 1, 0, 0)  # fmt: skip
    assert s.expected_downtime_ms is None
    done = completed_from_stats({"time_elapsed": 11529, "downtime": None, "data_processed": None,
                                 "memory_processed": 7})  # fmt: skip
    assert (done.total_time_ms, done.downtime_ms, done.transferred_bytes) == (11529, None, 7)


def test_a_downtime_limit_libvirt_cannot_read_back_is_an_error_not_a_crash() -> None:
    class Dom(FakeDomain):
        def migrateSetMaxDowntime(self, _ms: int, _flags: int) -> int:
            return 0

        def migrateGetMaxDowntime(self, _flags: int) -> None:
            return None  # what the binding returns when libvirt fails

    with pytest.raises(VmferryError, match="cannot read the downtime limit back"):
        running(Dom()).set_downtime(30)


def test_after_post_copy_the_figures_are_vmferrys_own() -> None:
    def at(ms: int, processed: int, remaining: int, iteration: int) -> ProgressSample:
        return ProgressSample(ms, iteration, 512 * MIB, processed, remaining, 0, 0)

    samples = [at(1000, 100 * MIB, 400 * MIB, 1), at(19_000, 900 * MIB, 120 * MIB, 6)]
    stats = measured_stats(25_400, samples, 83)
    # the call's time, the pause from the events, and every page left sent once
    assert stats == CompletedStats(25_400, 83, 1020 * MIB, 6)
    assert measured_stats(None, [], None) == CompletedStats(None, None, None, None)


# QEMU's answer to query-yank during a --copy-storage move, as seen in the lab (QEMU 10)
YANK_LIST = [
    {"type": "chardev", "id": "charmonitor"},
    {"type": "chardev", "id": "charchannel0"},
    {"type": "block-node", "node-name": "migration-vda-storage"},
    {"type": "block-node", "node-name": "libvirt-1-storage"},
    {"type": "migration"},
]


def test_only_the_migrations_own_links_are_yanked() -> None:
    assert libvirt_migration.yank_targets(YANK_LIST) == [
        {"type": "block-node", "node-name": "migration-vda-storage"},
        {"type": "migration"},
    ]
    assert libvirt_migration.yank_targets(YANK_LIST[:2]) == []
    assert libvirt_migration.yank_targets([{"type": "block-node"}]) == []


def test_yank_links_asks_qemu_and_closes_only_what_it_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict[str, Any]] = []
    listed = [YANK_LIST[:3], YANK_LIST[:2]]

    def monitor(_dom: object, text: str, _flags: int) -> str:
        message = json.loads(text)
        sent.append(message)
        if message["execute"] == "query-yank":
            return json.dumps({"return": listed.pop(0)})
        return json.dumps({"return": {}})

    monkeypatch.setattr(libvirt_migration.libvirt_qemu, "qemuMonitorCommand", monitor)
    migration = running(FakeDomain())
    assert migration.yank_links() == ["migration-vda-storage"]
    assert sent[-1] == {"execute": "yank", "arguments": {"instances": [
        {"type": "block-node", "node-name": "migration-vda-storage"}]}}  # fmt: skip
    assert migration.yank_links() == []  # nothing of the migration left: no yank sent
    assert [m["execute"] for m in sent] == ["query-yank", "yank", "query-yank"]


class Yankable:
    def __init__(self, postcopy: bool = False, fails: bool = False) -> None:
        self.in_postcopy, self.fails, self.yanks = postcopy, fails, 0

    def yank_links(self) -> list[str]:
        self.yanks += 1
        if self.fails:
            raise VmferryError("libvirt did not answer QEMU monitor query-yank within 5 s")
        return ["migration-vda-storage"]


def test_an_abort_that_does_not_end_closes_the_links_once_after_the_grace() -> None:
    clock = [100.0]
    events: list[tuple[str, str]] = []

    def event(kind: str, message: str, **_data: object) -> None:
        events.append((kind, message))

    stuck, migration = live._StuckAbort("kvm2", lambda: clock[0]), Yankable()
    stuck.check(migration, event)  # type: ignore[arg-type]
    clock[0] += live.ABORT_GRACE_S - 0.5
    stuck.check(migration, event)  # type: ignore[arg-type]
    assert migration.yanks == 0 and events == []
    clock[0] += 0.5
    stuck.check(migration, event)  # type: ignore[arg-type]
    clock[0] += 60
    stuck.check(migration, event)  # type: ignore[arg-type]
    assert migration.yanks == 1
    assert events == [("status", "the aborted migration has not ended after 10 s (a connection "
                       "to kvm2 hangs): closed migration-vda-storage")]  # fmt: skip

    in_postcopy = Yankable(postcopy=True)
    stuck = live._StuckAbort("kvm2", lambda: clock[0])
    stuck.check(in_postcopy, event)  # type: ignore[arg-type]
    clock[0] += 600
    stuck.check(in_postcopy, event)  # type: ignore[arg-type]
    assert in_postcopy.yanks == 0  # the destination runs the guest: never cut it off

    failing, events[:] = Yankable(fails=True), []
    stuck = live._StuckAbort("kvm2", lambda: clock[0])
    stuck.check(failing, event)  # type: ignore[arg-type]
    clock[0] += 600
    stuck.check(failing, event)  # type: ignore[arg-type]
    stuck.check(failing, event)  # type: ignore[arg-type]
    assert failing.yanks == 1 and [k for k, _ in events] == ["note"]
    assert "could not be closed: libvirt did not answer" in events[0][1]


def test_a_split_vm_is_never_destroyed_and_is_said_to_be_split() -> None:
    """A post-copy move that broke off: even were the source said to run, the copy on the
    destination holds pages the source no longer has, so nothing is destroyed."""
    for state in (VmState.PAUSED, VmState.RUNNING):
        src = FakeHost("kvm1", [record("kvm1", state)])
        dst = FakeHost("kvm2", [record("kvm2", VmState.PAUSED)])
        v = live._verify(src, dst, "g", False, REPORT, False, split=True)  # type: ignore[arg-type]
        assert dst.destroyed == [] and src.destroyed == []
        assert v.problems == ("g is split between kvm1 and kvm2 (post-copy broke off)",)
