"""Migration jobs in the store (SQLite and a throwaway PostgreSQL, fixtures in conftest.py);
the jobs service over libvirt's test driver; `vmferry jobs` / `vmferry job ...`."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from support.cli import vmferry as run_vmferry
from support.leases import dead_owner_lease

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import NotFoundError, VmferryError
from vmferry.model import Host
from vmferry.model.migration import (
    Escalation,
    EscalationStep,
    Job,
    JobEvent,
    JobStatus,
    MigrationOptions,
    MigrationResult,
    Strategy,
    Verification,
)
from vmferry.service import jobs as jobs_service
from vmferry.service.lease import process_lease
from vmferry.store import Store, open_store
from vmferry.store.codec import DecodeError, from_jsonable

OPTIONS = MigrationOptions(
    strategy=Strategy.POSTCOPY,
    max_downtime_ms=500,
    timeout_s=90.5,
    copy_storage=True,
    bandwidth_mib_s=48,
)
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def result_for(job: Job, status: JobStatus = JobStatus.COMPLETED) -> MigrationResult:
    return MigrationResult(
        job_id=job.id,
        vm=job.vm,
        source=job.source,
        destination=job.destination,
        strategy=Strategy.POSTCOPY,
        status=status,
        reason=None if status is JobStatus.COMPLETED else "it did not converge",
        total_time_ms=15_210,
        downtime_ms=287,
        transferred_bytes=1_503_238_553,
        iterations=9,
        escalations=(
            Escalation(4000, EscalationStep.DOWNTIME, 600, "stalled for 3 passes"),
            Escalation(9000, EscalationStep.POSTCOPY, None, "pre-copy will not converge"),
        ),
        verification=Verification(
            running_on_destination=True,
            absent_on_source=True,
            heartbeat_max_gap_ms=310,
            memory_integrity="ok",
            network_max_gap_ms=None,
            problems=("a warning",),
        ),
    )


def new_job(store: Store, vm: str = "web1") -> Job:
    return store.create_job("migrate", vm, "kvm1", "kvm2", OPTIONS)


# -- the store ----------------------------------------------------------------------------


def test_create_gives_a_pending_job_with_a_created_event(store: Store) -> None:
    job = new_job(store)
    assert re.fullmatch(r"[0-9a-f]{12}", job.id)
    assert type(job) is Job
    assert (job.kind, job.vm, job.source, job.destination) == ("migrate", "web1", "kvm1", "kvm2")
    assert job.status is JobStatus.PENDING
    assert job.options == OPTIONS
    assert type(job.options.strategy) is Strategy
    assert job.reason is None and job.result is None
    assert job.owner_pid is None and job.owner_start_ticks is None
    assert job.cancel_requested is False
    assert ISO_UTC.match(job.created_at) and ISO_UTC.match(job.updated_at)
    (created,) = job.events
    assert type(created) is JobEvent
    assert created.kind == "created"
    assert created.message == "migrate web1: kvm1 -> kvm2"
    assert created.data == {
        "options": {
            "strategy": "postcopy",
            "max_downtime_ms": 500,
            "timeout_s": 90.5,
            "copy_storage": True,
            "bandwidth_mib_s": 48,
            "precopy_cap": False,
            "state_dir": None,
            "shutdown_timeout_s": 120.0,
            "force": False,
            "delete_source_disks": False,
            "tls": None,
            "require_verification": False,
            "parallel": 0,
            "compression": "none",
            "backup_pool": None,
            "rollback": False,
            "to_pool": None,
        }
    }
    assert store.get_job(job.id) == job
    assert new_job(store, "web2").id != job.id


def test_owner_status_and_events_in_order(store: Store) -> None:
    job = new_job(store)
    lease = store.take_lease(
        "a1b2c3",
        host="elsewhere",
        node="boot/pid:[1]",
        pid=4242,
        start_ticks=1_234_567_890_123,
        lease_s=15,
    )  # ticks exceed 32 bits
    store.set_owner(job.id, lease)
    running = store.set_status(job.id, JobStatus.RUNNING)
    assert running.status is JobStatus.RUNNING
    store.add_event(job.id, "progress", "pass 1", {"remaining": 2**40, "rates": [1.5, 2]})
    event = store.add_event(job.id, "escalation", "raise downtime", {"to": 600})
    assert event.kind == "escalation" and ISO_UTC.match(event.at)

    got = store.get_job(job.id)
    assert (got.owner_pid, got.owner_start_ticks) == (4242, 1_234_567_890_123)
    assert got.owner_id == "a1b2c3"
    assert [(e.kind, e.message) for e in got.events] == [
        ("created", "migrate web1: kvm1 -> kvm2"),
        ("status", "pending -> running"),
        ("progress", "pass 1"),
        ("escalation", "raise downtime"),
    ]
    assert got.events[1].data == {"from": "pending", "to": "running", "reason": None}
    assert got.events[2].data == {"remaining": 2**40, "rates": [1.5, 2]}
    assert [e.at for e in got.events] == sorted(e.at for e in got.events)
    assert got.updated_at >= job.updated_at


def test_set_status_refuses_what_the_state_machine_forbids(store: Store) -> None:
    job = new_job(store)
    with pytest.raises(VmferryError, match="pending job cannot become completed"):
        store.set_status(job.id, JobStatus.COMPLETED)
    assert store.get_job(job.id) == job  # nothing was written

    failed = store.set_status(job.id, JobStatus.FAILED, "checks blocked it")
    assert (failed.status, failed.reason) == (JobStatus.FAILED, "checks blocked it")
    assert failed.events[-1].message == "pending -> failed: checks blocked it"
    # the same finished status again: nothing changes, no event
    assert store.set_status(job.id, JobStatus.FAILED, "another reason") == failed
    with pytest.raises(VmferryError, match="finished job is final"):
        store.set_status(job.id, JobStatus.RUNNING)
    assert store.get_job(job.id) == failed


def test_finish_stores_the_result_and_is_idempotent(store: Store) -> None:
    job = new_job(store)
    store.set_status(job.id, JobStatus.RUNNING)
    result = result_for(job, JobStatus.FAILED)
    done = store.finish(job.id, result)
    assert done.status is JobStatus.FAILED
    assert done.reason == "it did not converge"
    assert done.result == result
    assert done.result is not None
    assert type(done.result.escalations) is tuple
    assert type(done.result.escalations[1].step) is EscalationStep
    assert done.result.verification is not None
    assert done.result.verification.problems == ("a warning",)
    assert done.events[-1].kind == "status"
    assert done.events[-1].message == "running -> failed: it did not converge"

    assert store.finish(job.id, result) == done  # twice: nothing more
    assert store.finish(job.id, result_for(job, JobStatus.FAILED)) == done
    with pytest.raises(VmferryError, match="finished as failed cannot become completed"):
        store.finish(job.id, result_for(job, JobStatus.COMPLETED))
    assert store.get_job(job.id) == done


def test_finish_a_completed_job_with_minimal_result(store: Store) -> None:
    job = new_job(store)
    store.set_status(job.id, JobStatus.RUNNING)
    minimal = MigrationResult(job.id, "web1", "kvm1", "kvm2", Strategy.LIVE,
                              JobStatus.COMPLETED, None, None, None, None, None)  # fmt: skip
    done = store.finish(job.id, minimal)
    assert done.result == minimal
    assert done.reason is None


def test_finish_refuses_unfinished_or_foreign_results(store: Store) -> None:
    job = new_job(store)
    store.set_status(job.id, JobStatus.RUNNING)
    with pytest.raises(VmferryError, match="finished status, not running"):
        store.finish(job.id, result_for(job, JobStatus.RUNNING))
    other = new_job(store, "web2")
    with pytest.raises(VmferryError, match=f"belongs to job {other.id}"):
        store.finish(job.id, result_for(other))
    assert store.get_job(job.id).status is JobStatus.RUNNING


def test_cancel_flag(store: Store) -> None:
    job = new_job(store)
    assert store.is_cancel_requested(job.id) is False
    asked = store.request_cancel(job.id)
    assert asked.cancel_requested is True
    assert store.is_cancel_requested(job.id) is True
    assert store.request_cancel(job.id) == asked  # asking again adds nothing
    assert [e.message for e in asked.events] == ["migrate web1: kvm1 -> kvm2", "cancel requested"]

    finished = store.set_status(new_job(store, "web2").id, JobStatus.CANCELLED)
    assert store.request_cancel(finished.id) == finished  # too late: nothing changes


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_job("ffffffffffff"),
        lambda s: s.is_cancel_requested("ffffffffffff"),
        lambda s: s.request_cancel("ffffffffffff"),
        lambda s: s.set_owner("ffffffffffff", dead_owner_lease(s)),
        lambda s: s.set_status("ffffffffffff", JobStatus.RUNNING),
        lambda s: s.add_event("ffffffffffff", "note", "hello"),
    ],
)
def test_unknown_job(store: Store, call: object) -> None:
    with pytest.raises(NotFoundError) as excinfo:
        call(store)  # type: ignore[operator]
    assert excinfo.value.exit_code == 2
    assert excinfo.value.message == "no job 'ffffffffffff'; `vmferry jobs` lists the jobs"


def test_list_newest_first_and_unfinished_oldest_first(store: Store) -> None:
    assert store.list_jobs() == []
    a = new_job(store, "web1")
    b = new_job(store, "db1")
    store.set_status(a.id, JobStatus.CANCELLED)  # web1 may have a new job once a is over
    c = new_job(store, "web1")
    store.add_event(b.id, "note", "only get_job has events")
    store.set_status(c.id, JobStatus.RUNNING)

    listed = store.list_jobs()
    assert [j.id for j in listed] == [c.id, b.id, a.id]
    assert all(j.events == () for j in listed)
    assert [j.id for j in store.list_jobs(limit=2)] == [c.id, b.id]
    with pytest.raises(VmferryError, match="at least 1"):
        store.list_jobs(limit=0)

    assert [j.id for j in store.unfinished_jobs()] == [b.id, c.id]
    assert [j.id for j in store.unfinished_jobs("web1")] == [c.id]
    assert store.unfinished_jobs("nosuchvm") == []


def test_a_job_from_a_newer_vmferry_is_refused_clearly(store: Store, db_url: str) -> None:
    job = new_job(store)
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE jobs SET options = :o WHERE id = :i"),
                {"o": json.dumps({"strategy": "teleport"}), "i": job.id},
            )
    finally:
        engine.dispose()
    with pytest.raises(VmferryError, match=f"job {job.id} .* newer vmferry"):
        store.get_job(job.id)


def test_no_result_is_sql_null(store: Store, db_url: str) -> None:
    job = new_job(store)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM jobs WHERE result IS NULL AND id = :i")
            assert conn.execute(query, {"i": job.id}).scalar_one() == 1
    finally:
        engine.dispose()


def test_downgrade_removes_the_job_tables(db_url: str) -> None:
    from alembic import command

    from vmferry.store.db import alembic_config

    with open_store(db_url) as store:
        new_job(store)
    engine = create_engine(db_url)
    try:
        assert {"jobs", "job_events"} <= set(inspect(engine).get_table_names())
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0001")
        assert {"jobs", "job_events"}.isdisjoint(inspect(engine).get_table_names())
        assert "hosts" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with open_store(db_url) as store:
        assert store.list_jobs() == []


# -- decoding what the store keeps --------------------------------------------------------


def test_decoding_tolerates_unknown_fields_and_fills_defaults() -> None:
    assert from_jsonable(MigrationOptions, {"timeout_s": 5, "future": 1}) == MigrationOptions(
        timeout_s=5.0
    )


@pytest.mark.parametrize(
    "stored",
    [
        {"strategy": "teleport"},
        {"max_downtime_ms": "300"},
        {"copy_storage": 1},
        {"bandwidth_mib_s": 1.5},
        {"timeout_s": True},
        [],
    ],
)
def test_decoding_refuses_what_does_not_fit(stored: object) -> None:
    with pytest.raises(DecodeError):
        from_jsonable(MigrationOptions, stored)


def test_decoding_needs_required_fields() -> None:
    with pytest.raises(DecodeError, match="'job_id' is missing"):
        from_jsonable(MigrationResult, {})


# -- the jobs service over libvirt's test driver ------------------------------------------

_DOMAIN = """
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>{name}</name><memory unit='MiB'>128</memory><os><type>hvm</type></os>
    <test:runstate>{state}</test:runstate>{transient}
  </domain>"""
RUNNING, PAUSED, SHUT_OFF = 1, 3, 5


def node(path: Path, *domains: tuple[str, int, bool]) -> str:
    """A test:/// URI for a host with ``domains`` (name, libvirt state, transient)."""
    body = "".join(
        _DOMAIN.format(name=n, state=s, transient="<test:transient/>" if t else "")
        for n, s, t in domains
    )
    path.write_text(f"<node>{body}</node>")
    return f"test://{path}"


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("VMFERRY_DB", f"sqlite:///{tmp_path / 'service.db'}")
    with open_store() as opened:
        yield opened


def orphaned_job(store: Store, vm: str = "web1") -> Job:
    job = store.create_job("migrate", vm, "kvm1", "kvm2", MigrationOptions())
    store.set_owner(job.id, dead_owner_lease(store))
    return store.set_status(job.id, JobStatus.RUNNING)


def hosts(store: Store, tmp_path: Path, source: str, destination: str) -> None:
    store.replace_host(Host("kvm1", source))
    store.replace_host(Host("kvm2", destination))


def test_resume_fails_the_job_and_destroys_the_orphan(sqlite_store: Store, tmp_path: Path) -> None:
    src = node(tmp_path / "src.xml", ("web1", RUNNING, False))
    dst = node(tmp_path / "dst.xml", ("web1", PAUSED, True))
    hosts(sqlite_store, tmp_path, src, dst)
    job = orphaned_job(sqlite_store)

    done = jobs_service.reconcile_job(job.id, wait_s=0)
    assert done.status is JobStatus.FAILED
    assert done.reason is not None
    assert done.reason.endswith("destroyed the paused incoming copy left on kvm2")
    assert done.result is not None and done.result.status is JobStatus.FAILED
    assert done.result.reason == done.reason
    note = next(e for e in done.events if e.message.startswith("destroyed"))
    assert note.data["hosts"] == {"kvm1": "running", "kvm2": "paused, transient"}
    assert note.data["action"] == "fail-destroy-orphan"

    assert jobs_service.reconcile_job(job.id, wait_s=0) == done  # again: nothing more
    assert jobs_service.reconcile_vm("web1") == []


def test_resume_completes_a_job_whose_vm_moved(sqlite_store: Store, tmp_path: Path) -> None:
    src = node(tmp_path / "src.xml")
    dst = node(tmp_path / "dst.xml", ("web1", RUNNING, False))
    hosts(sqlite_store, tmp_path, src, dst)
    job = orphaned_job(sqlite_store)
    done = jobs_service.reconcile_job(job.id, wait_s=0)
    assert done.status is JobStatus.COMPLETED
    assert done.reason == "vmferry was interrupted; the migration completed: found running on kvm2"


def test_resume_removes_the_stopped_definition_left_on_the_source(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = node(tmp_path / "src.xml", ("web1", SHUT_OFF, False))
    dst = node(tmp_path / "dst.xml", ("web1", RUNNING, False))
    hosts(sqlite_store, tmp_path, src, dst)
    undefined: list[tuple[str, str]] = []
    monkeypatch.setattr(LibvirtHost, "undefine",
                        lambda self, name, **_: undefined.append((self.name, name)))  # fmt: skip
    job = orphaned_job(sqlite_store)
    done = jobs_service.reconcile_job(job.id, wait_s=0)
    assert done.status is JobStatus.COMPLETED
    assert done.reason == ("vmferry was interrupted; the migration completed: found running on "
                           "kvm2; removed the stopped definition left on kvm1")  # fmt: skip
    assert undefined == [("kvm1", "web1")]
    assert "removed: the stopped definition of web1 on kvm1" in [e.message for e in done.events]


def test_a_source_definition_that_cannot_be_removed_is_said_to_remain(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts(sqlite_store, tmp_path, node(tmp_path / "s.xml", ("web1", SHUT_OFF, False)),
          node(tmp_path / "d.xml", ("web1", RUNNING, False)))  # fmt: skip

    def refuse(self: LibvirtHost, name: str, **_: object) -> None:
        raise VmferryError(f"host 'kvm1': undefine {name}: operation forbidden")

    monkeypatch.setattr(LibvirtHost, "undefine", refuse)
    done = jobs_service.reconcile_job(orphaned_job(sqlite_store).id, wait_s=0)
    assert done.status is JobStatus.COMPLETED
    assert (done.reason or "").endswith("; a stopped definition remains on kvm1")
    assert any("could not be removed: host 'kvm1': undefine web1: operation forbidden"
               in e.message for e in done.events)  # fmt: skip


def test_a_pending_job_whose_vm_moved_goes_through_running(
    sqlite_store: Store, tmp_path: Path
) -> None:
    hosts(sqlite_store, tmp_path, node(tmp_path / "s.xml"),
          node(tmp_path / "d.xml", ("web1", RUNNING, False)))  # fmt: skip
    job = sqlite_store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    done = jobs_service.reconcile_job(job.id, wait_s=0)  # no owner: orphaned
    assert done.status is JobStatus.COMPLETED
    statuses = [e.message.split(":")[0] for e in done.events if e.kind == "status"]
    assert statuses == ["pending -> running", "running -> completed"]


def test_an_unreachable_host_leaves_the_record_alone(sqlite_store: Store, tmp_path: Path) -> None:
    dst = node(tmp_path / "dst.xml", ("web1", RUNNING, False))
    hosts(sqlite_store, tmp_path, "qemu+tcp://198.18.255.254/system", dst)
    job = orphaned_job(sqlite_store)
    # unregistered hosts count as unanswered too
    sqlite_store.remove_host("kvm1")
    after = jobs_service.reconcile_job(job.id, wait_s=0)
    assert after.status is JobStatus.RUNNING
    assert after.events[-1].message.startswith("not resumed: cannot tell where web1 runs")
    assert "kvm1" in after.events[-1].data["unreachable"]  # type: ignore[operator]


def test_a_live_owner_is_not_reconciled(sqlite_store: Store, tmp_path: Path) -> None:
    job = sqlite_store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    sqlite_store.set_owner(job.id, process_lease(sqlite_store))
    assert jobs_service.owner_alive(sqlite_store, sqlite_store.get_job(job.id))
    assert jobs_service.reconcile_job(job.id) == sqlite_store.get_job(job.id)
    assert jobs_service.reconcile_vm("web1") == []


def test_cancel_waits_for_a_live_owner_then_gives_up(sqlite_store: Store) -> None:
    job = sqlite_store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    sqlite_store.set_owner(job.id, process_lease(sqlite_store))
    after = jobs_service.cancel_job(job.id, wait_s=0.3, poll_s=0.05)
    assert after.status is JobStatus.PENDING  # nobody acted on it
    assert after.cancel_requested


def test_cancel_of_an_orphan_reconciles_it_as_cancelled(
    sqlite_store: Store, tmp_path: Path
) -> None:
    hosts(sqlite_store, tmp_path, node(tmp_path / "s.xml", ("web1", RUNNING, False)),
          node(tmp_path / "d.xml"))  # fmt: skip
    job = orphaned_job(sqlite_store)
    done = jobs_service.cancel_job(job.id, wait_s=0)
    assert done.status is JobStatus.CANCELLED
    assert done.cancel_requested
    assert jobs_service.cancel_job(job.id) == done


# -- the CLI ------------------------------------------------------------------------------


def vmferry(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return run_vmferry(*args, db=db, env={"COLUMNS": "200"})


def test_cli_jobs_and_job_show(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    with open_store(f"sqlite:///{db}") as store:
        first = new_job(store, "web1")
        second = new_job(store, "db1")
        store.set_status(second.id, JobStatus.RUNNING)
        store.finish(second.id, result_for(second, JobStatus.FAILED))

    listed = vmferry("jobs", "--json", db=db)
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert [j["id"] for j in doc] == [second.id, first.id]
    assert list(doc[0]) == [
        "id", "kind", "vm", "source", "destination", "status", "created_at", "updated_at",
        "options", "reason", "result", "owner_pid", "owner_start_ticks", "owner_id",
        "cancel_requested", "events",
    ]  # fmt: skip
    assert doc[0]["status"] == "failed" and doc[0]["result"]["downtime_ms"] == 287
    assert json.loads(vmferry("jobs", "--json", "--limit", "1", db=db).stdout)[0]["id"] == (
        second.id
    )

    table = vmferry("jobs", db=db)
    assert table.returncode == 0, table.stderr
    assert first.id in table.stdout and "it did not converge" in table.stdout

    shown = vmferry("job", "show", second.id, "--json", db=db)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert [e["kind"] for e in job["events"]] == ["created", "status", "status"]
    assert job["result"]["escalations"][0]["step"] == "downtime"

    human = vmferry("job", "show", second.id, db=db)
    assert human.returncode == 0, human.stderr
    assert "running -> failed" in human.stdout and "287 ms" in human.stdout


@pytest.mark.parametrize("command", [["show"], ["cancel"], ["resume"]])
def test_cli_unknown_job_exits_2(tmp_path: Path, command: list[str]) -> None:
    done = vmferry("job", *command, "nosuchjob", db=tmp_path / "cli.db")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr == "vmferry: no job 'nosuchjob'; `vmferry jobs` lists the jobs\n"
