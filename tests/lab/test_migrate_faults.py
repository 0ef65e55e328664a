"""`vmferry migrate` under faults (issue 3), against the real lab.

Every case breaks a live migration on purpose and then checks what a user must be able to
rely on: the source keeps running (its heartbeat goes on, a later MEMCHECK pass is clean),
the job ends failed or cancelled with a reason that says why, and no copy of the VM runs
(or waits paused) on the destination.

One guest on kvm1 serves the whole module: a migration that fails leaves it running on
kvm1, ready for the next case. Each case sets the guest's dirty rate so that the migration
is still running when the fault hits, and runs `vmferry migrate --no-cap`: a vCPU cap from
the start would change the dirty rate these timings rely on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt
import pytest
from support.pg import PgCluster

from vmferry.lab import client, faults, guests
from vmferry.lab.console import ConsoleTail, Heartbeat, MemCheck, StampedLine
from vmferry.lab.lifecycle import host_uri
from vmferry.lab.state import GuestRecord, LabState, lab_dir
from vmferry.model.migration import Job, JobStatus
from vmferry.service import jobs as jobs_service
from vmferry.store.db import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

GUEST = "fault1"
MIGRATE_TIMEOUT_S = 150  # any one vmferry migrate below; each case is bounded by it


def vmferry(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=os.environ,
                          capture_output=True, text=True, timeout=timeout,
                          check=False)  # fmt: skip


def job_json(job_id: str) -> dict[str, Any]:
    done = vmferry("job", "show", job_id, "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def wait_until(what: str, check: Callable[[], bool], timeout: float, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)


def source_job_stats() -> dict[str, Any]:
    """libvirt's statistics of the guest's job on kvm1 ({} when no job runs)."""
    conn = libvirt.open(host_uri("kvm1"))
    try:
        stats: dict[str, Any] = conn.lookupByName(GUEST).jobStats(0)
    except libvirt.libvirtError:
        return {}
    finally:
        conn.close()
    return stats if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) else {}


def source_state() -> int:
    conn = libvirt.open(host_uri("kvm1"))
    try:
        state, _reason = conn.lookupByName(GUEST).state(0)
        return int(state)
    finally:
        conn.close()


def destination_copies() -> list[str]:
    """Lines of `virsh list --all` on kvm2 that show the guest in any state but shut off."""
    listing = subprocess.run(["virsh", "-c", host_uri("kvm2"), "list", "--all"],
                             capture_output=True, text=True, timeout=30,
                             check=True).stdout  # fmt: skip
    rows = [line.split(None, 2) for line in listing.splitlines()[2:] if line.strip()]
    return [" ".join(r) for r in rows if len(r) == 3 and r[1] == GUEST and r[2] != "shut off"]


@dataclass
class Migration:
    """`vmferry migrate` running as its own process (in its own session, like a shell job)."""

    proc: subprocess.Popen[str]
    out: Path
    err: Path
    started: float
    known_jobs: frozenset[str]
    job_id: str | None = None
    ended: float | None = None

    @classmethod
    def start(cls, tmp_path: Path, *args: str) -> Migration:
        known = frozenset(j.id for j in jobs_service.list_jobs(500) if j.vm == GUEST)
        out, err = tmp_path / "migrate.out", tmp_path / "migrate.err"
        with out.open("w") as fout, err.open("w") as ferr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vmferry.cli.main", "migrate", GUEST, "--to", "kvm2",
                 "--no-cap", *args], env=os.environ, stdin=subprocess.DEVNULL, stdout=fout,
                stderr=ferr, text=True, start_new_session=True,
            )  # fmt: skip
        return cls(proc, out, err, time.monotonic(), known)

    def job(self) -> Job | None:
        if self.job_id is None:
            new = [j for j in jobs_service.list_jobs(500)
                   if j.vm == GUEST and j.id not in self.known_jobs]  # fmt: skip
            if not new:
                return None
            self.job_id = new[0].id
        return jobs_service.get_job(self.job_id)

    def wait_running(self, timeout: float = 30) -> Job:
        def running() -> bool:
            assert self.proc.poll() is None, f"vmferry migrate ended early: {self.stderr()}"
            job = self.job()
            return job is not None and job.status is JobStatus.RUNNING

        wait_until("the job runs", running, timeout, poll=0.05)
        job = self.job()
        assert job is not None
        return job

    def wait_progress(
        self, *, seconds: float = 0, iteration: int = 0, timeout: float = 60
    ) -> dict[str, Any]:
        """Wait until libvirt's job on kvm1 has moved data for ``seconds`` (its clock) and
        reached memory pass ``iteration``."""
        stats: dict[str, Any] = {}

        def moving() -> bool:
            nonlocal stats
            assert self.proc.poll() is None, f"vmferry migrate ended early: {self.stderr()}"
            stats = source_job_stats()
            return (int(stats.get("memory_processed", 0)) > 0
                    and int(stats.get("time_elapsed", 0)) >= seconds * 1000
                    and int(stats.get("memory_iteration", 0)) >= iteration)  # fmt: skip

        wait_until(f"the migration moves data for {seconds:g} s, pass {iteration}", moving,
                   timeout, poll=0.2)  # fmt: skip
        sent = int(stats.get("memory_processed", 0)) / 2**20
        print(f"\nmigration at {stats.get('time_elapsed')} ms, pass "
              f"{stats.get('memory_iteration')}, {sent:.0f} MiB sent "
              f"({time.monotonic() - self.started:.1f} s after vmferry started)")  # fmt: skip
        return stats

    def interrupt(self) -> None:
        """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = MIGRATE_TIMEOUT_S) -> int:
        try:
            code = self.proc.wait(timeout=max(1.0, self.started + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"vmferry migrate still ran after {timeout:g} s") from None
        self.ended = time.monotonic()
        return code

    def kill(self) -> None:
        """Kill a vmferry that hung, and the libvirt job it left, so the next case starts
        clean (the guest running on kvm1 alone)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            faults.restore_migration_link("kvm1")
            faults.restore_migration_link("kvm2")
            conn = libvirt.open(host_uri("kvm1"))
            try:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.lookupByName(GUEST).abortJob()
            finally:
                conn.close()
            with contextlib.suppress(AssertionError):
                wait_until("no migration job", lambda: not source_job_stats(), 60, poll=1)

    def stderr(self) -> str:
        return self.err.read_text()

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


@pytest.fixture(scope="module")
def guest(lab: LabState) -> GuestRecord:
    return guests.create_guest(GUEST, "kvm1", memory_mb=512, working_set_mb=256, dirty_mb_s=36)


@pytest.fixture
def console(guest: GuestRecord) -> Iterator[ConsoleTail]:
    """The guest's console from now on; the guest must be running on kvm1 to begin with."""
    assert source_state() == libvirt.VIR_DOMAIN_RUNNING
    with ConsoleTail(Path(guest.console)) as tail:
        yield tail


@pytest.fixture
def migration(tmp_path: Path) -> Iterator[Callable[..., Migration]]:
    """Start `vmferry migrate GUEST --to kvm2 ARGS`; never leaves it running."""
    started: list[Migration] = []

    def start(*args: str) -> Migration:
        run = Migration.start(tmp_path, *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def set_rate(guest: GuestRecord, rate: int) -> None:
    assert client.control(guest.address, f"rate {rate}") == f"ok rate {rate}"


def assert_source_intact(console: ConsoleTail, after: float) -> None:
    """The guest still runs on kvm1: heartbeats after ``after`` and a clean MEMCHECK pass
    after it, no failed one at all, and libvirt says running."""

    def later(kind: type[object]) -> Callable[[StampedLine], bool]:
        return lambda ln: isinstance(ln.event, kind) and ln.monotonic > after

    console.wait_for(later(Heartbeat), timeout=10)
    check = console.wait_for(later(MemCheck), timeout=40).event
    assert isinstance(check, MemCheck) and check.ok, check
    failed = [ln.text for ln in console.lines()
              if isinstance(ln.event, MemCheck) and not ln.event.ok]  # fmt: skip
    assert not failed, failed
    assert source_state() == libvirt.VIR_DOMAIN_RUNNING


def assert_ended(run: Migration, status: JobStatus, *reason_parts: str) -> dict[str, Any]:
    """vmferry migrate exited 4 with one line, and the job ended ``status`` saying why."""
    code = run.wait()
    err = run.stderr()
    assert run.job_id is not None or run.job() is not None
    assert run.job_id is not None
    doc = job_json(run.job_id)
    print(f"\n{run.job_id}: {doc['status']} after {run.seconds:.1f} s: {doc['reason']}")
    for e in doc["events"]:
        print(f"  {e['at']} {e['kind']}: {e['message']}")
    if code != 4 or doc["status"] != str(status):
        log = lab_dir() / "hosts" / "kvm1" / "log" / "libvirtd.log"
        print("kvm1 libvirtd:", *log.read_text().splitlines()[-12:], sep="\n  ")
    assert code == 4, (code, err)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"vmferry: job {run.job_id} {status}: "), err
    assert doc["status"] == str(status)
    assert doc["result"]["status"] == str(status)
    for part in reason_parts:
        assert part in doc["reason"], doc["reason"]
    assert doc["reason"] in last
    return doc


def assert_no_copy_on_destination() -> None:
    assert destination_copies() == []


# -- the cases, cheapest first -----------------------------------------------------------


def test_unreachable_destination_libvirt_is_refused_and_changes_nothing(
    guest: GuestRecord, console: ConsoleTail
) -> None:
    before = {j.id for j in jobs_service.list_jobs(500)}
    faults.kill_libvirtd("kvm2")
    try:
        started = time.monotonic()
        done = vmferry("migrate", GUEST, "--to", "kvm2", timeout=60)
        took = time.monotonic() - started
    finally:
        faults.start_libvirtd("kvm2")
    print(f"\nexit {done.returncode} after {took:.1f} s: {done.stderr.strip()}")
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("vmferry:")]
    assert len(errors) == 1 and errors[0].startswith("vmferry: host 'kvm2': "), done.stderr
    assert done.stderr.strip().endswith(errors[0]) and "198.18.0.12" in errors[0]
    assert "Traceback" not in done.stderr
    assert {j.id for j in jobs_service.list_jobs(500)} == before  # no job: nothing started
    assert_source_intact(console, started)
    assert_no_copy_on_destination()


def test_destination_libvirtd_killed_mid_migration(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 36)
    run = migration()
    run.wait_running()
    stats = run.wait_progress(seconds=2)
    killed_at = time.monotonic()
    try:
        faults.kill_libvirtd("kvm2")
        doc = assert_ended(run, JobStatus.FAILED)
    finally:
        faults.start_libvirtd("kvm2")
    print(f"killed at {stats.get('time_elapsed')} ms of migration; vmferry ended "
          f"{run.seconds - (killed_at - run.started):.1f} s after the kill")  # fmt: skip
    assert doc["reason"]
    assert_source_intact(console, killed_at)
    wait_until("no copy on kvm2", lambda: destination_copies() == [], 30, poll=1)
    resumed = vmferry("job", "resume", doc["id"], "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "failed"
    assert_no_copy_on_destination()


def test_migration_link_cut_mid_migration_aborts_as_stalled(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 36)
    # capped at 10 MiB/s the stream cannot converge, so the cut always lands in pre-copy:
    # cut during the final stage, QEMU's migration thread blocks in send() holding the
    # big lock, and neither libvirt nor vmferry can reach the monitor until TCP gives up
    run = migration("--bandwidth-mib-s", "10")
    run.wait_running()
    run.wait_progress(seconds=2)
    cut_at = time.monotonic()
    with faults.migration_link_cut("kvm1"):
        doc = assert_ended(run, JobStatus.FAILED)
    took = run.seconds - (cut_at - run.started)
    print(f"ended {took:.1f} s after the cut")
    if doc["reason"].startswith("libvirt reported no progress"):
        # seen once: vmferry's own connection never answered a job-statistics call (the
        # test's did); the engine's silence guard then aborts through a new connection
        assert any("aborting the migration: libvirt reported no progress" in e["message"]
                   for e in doc["events"])  # fmt: skip
    else:
        assert "stalled" in doc["reason"] and "no data moved for 10 s" in doc["reason"], doc
        aborts = [e for e in doc["result"]["escalations"] if e["step"] == "abort"]
        assert len(aborts) == 1 and "stalled" in aborts[0]["reason"]
        assert any("aborting the migration: the migration stream stalled" in e["message"]
                   for e in doc["events"])  # fmt: skip
    assert_source_intact(console, cut_at)
    assert_no_copy_on_destination()


def test_migration_address_that_does_not_answer_fails_cleanly(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    # libvirt on kvm1 connects the stream itself and blocks until the kernel gives up
    # (about 130 s with the default SYN retries); 3 retries make that 15 s
    set_rate(guest, 36)
    with faults.syn_retries("kvm1", 3), faults.migration_link_cut("kvm2"):
        run = migration()
        run.wait_running()
        wait_until("an incoming copy waits on kvm2", lambda: bool(destination_copies()), 20)
        assert_ended(run, JobStatus.FAILED, "198.18.1.12")
    print(f"ended after {run.seconds:.1f} s")
    assert run.seconds < 60
    assert_source_intact(console, run.started)
    assert_no_copy_on_destination()


def test_ctrl_c_right_after_the_job_runs(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 36)
    run = migration()
    run.wait_running()
    at = time.monotonic()
    run.interrupt()
    assert_ended(run, JobStatus.CANCELLED, "interrupted (Ctrl-C)")
    print(f"ended {run.seconds - (at - run.started):.1f} s after Ctrl-C")
    assert_source_intact(console, at)
    assert_no_copy_on_destination()


def test_ctrl_c_in_a_later_pass(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 72)
    run = migration()
    run.wait_running()
    # a later pass, whenever the first (all 512 MiB over the 400 Mbit/s link, about 11 s on
    # an idle host) ends: its length depends on the host's speed, so it is waited for, not timed
    stats = run.wait_progress(iteration=2, timeout=90)
    assert int(stats["memory_iteration"]) >= 2, stats
    at = time.monotonic()
    run.interrupt()
    assert_ended(run, JobStatus.CANCELLED, "interrupted (Ctrl-C)")
    print(f"ended {run.seconds - (at - run.started):.1f} s after Ctrl-C")
    assert_source_intact(console, at)
    assert_no_copy_on_destination()


def test_job_cancel_from_another_process(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 72)
    run = migration()
    job = run.wait_running()
    run.wait_progress(seconds=3)
    at = time.monotonic()
    cancel = vmferry("job", "cancel", job.id, "--wait", "90", "--json", timeout=120)
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout)["status"] == "cancelled"
    assert_ended(run, JobStatus.CANCELLED, "cancelled by `vmferry job cancel`")
    print(f"ended {run.seconds - (at - run.started):.1f} s after `job cancel`")
    assert_source_intact(console, at)
    assert_no_copy_on_destination()


def test_timeout_aborts_and_leaves_the_source_running(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 72)
    # 10 MiB/s against a guest dirtying well above it: no convergence, whatever the TCG
    # guest's real dirty rate turns out to be under load
    run = migration("--timeout", "12", "--strategy", "live", "--bandwidth-mib-s", "10")
    run.wait_running()
    doc = assert_ended(run, JobStatus.FAILED, "no convergence within the 12 s timeout")
    print(f"ended after {run.seconds:.1f} s")
    aborts = [e for e in doc["result"]["escalations"] if e["step"] == "abort"]
    # not before the timeout; after it, within one 0.25 s sample and one bounded libvirt call
    # (the engine gives each 5 s): what the engine controls, not the host's speed
    assert len(aborts) == 1 and 12_000 <= aborts[0]["at_ms"] < 12_000 + 250 + 5_000, aborts
    assert_source_intact(console, run.started + 12)
    assert_no_copy_on_destination()
    set_rate(guest, 0)


def qemu_pid(host: str) -> int:
    """The pid of the guest's QEMU on ``host`` (libvirt's pidfile, read under the lab dir)."""
    pidfile = lab_dir() / "hosts" / host / "run" / "qemu" / f"{GUEST}.pid"
    return int(pidfile.read_text().strip())


def test_destination_qemu_killed_mid_migration(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 36)
    run = migration()
    run.wait_running()
    run.wait_progress(seconds=2)
    incoming = qemu_pid("kvm2")
    killed_at = time.monotonic()
    os.kill(incoming, signal.SIGKILL)
    assert_ended(run, JobStatus.FAILED)
    print(f"vmferry ended {run.seconds - (killed_at - run.started):.1f} s after the kill")
    assert_source_intact(console, killed_at)
    assert_no_copy_on_destination()
    set_rate(guest, 0)


def wait_moved_to_kvm2() -> None:
    """Until the source has no migration job left and the guest runs on kvm2."""
    wait_until("the guest runs on kvm2", lambda: source_job_stats() == {}
               and destination_copies() != [], 90, poll=0.2)  # fmt: skip


def assert_completed_and_caught_up(
    run: Migration, guest: GuestRecord, what: str, away_from: datetime, away_until: datetime
) -> None:
    """The move completed and was verified although the store was away (``what``) from
    ``away_from`` to ``away_until``; what happened meanwhile was written after, each event with
    its own time (the pause's measure, taken at the move's end, among them). Then the guest
    goes back to kvm1: the next case starts there."""
    code = run.wait()
    assert code == 0, run.stderr()
    result = json.loads(run.out.read_text())
    assert result["status"] == "completed" and result["verification"]["memory_integrity"] == "ok"
    doc = job_json(result["job_id"])  # read back from the store that was away
    assert doc["status"] == "completed"
    late = [e for e in doc["events"]
            if away_from <= datetime.fromisoformat(e["at"]) <= away_until]  # fmt: skip
    print(f"\n{what} {(away_until - away_from).total_seconds():.1f} s; recorded late: "
          + "; ".join(f"{e['kind']}: {e['message']}" for e in late))  # fmt: skip
    assert "measure" in [e["kind"] for e in late]
    back = vmferry("migrate", GUEST, "--to", "kvm1", "--no-cap", timeout=MIGRATE_TIMEOUT_S)
    assert back.returncode == 0, back.stderr
    set_rate(guest, 0)


def test_store_locked_mid_migration_the_move_goes_on_and_the_record_catches_up(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 4)
    run = migration("--json")
    run.wait_running()
    run.wait_progress(seconds=1)
    db = Path(os.environ["VMFERRY_DB"].removeprefix("sqlite:///"))
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the store, as SQLite sees it
    locked_at, locked = datetime.now(UTC), time.monotonic()
    try:
        # past SQLite's 5 s busy timeout (writes fail, not just wait), and past the move's end
        wait_moved_to_kvm2()
        time.sleep(max(3.0, 8 - (time.monotonic() - locked)))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_completed_and_caught_up(run, guest, "store locked", locked_at, datetime.now(UTC))


def test_postgresql_restarted_mid_migration_the_move_goes_on_and_the_record_catches_up(
    guest: GuestRecord,
    console: ConsoleTail,
    migration: Callable[..., Migration],
    pg_url: str,
    pg_cluster: PgCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store on a real PostgreSQL server, stopped while the move runs and started again
    after it ended: vmferry's recorder holds the events (with their own times) and writes
    them when the server is back; the move itself never waits for it."""
    hosts = open_store().list_hosts()  # the module's store: the lab's hosts, as it registered them
    monkeypatch.setenv("VMFERRY_DB", pg_url)
    store = open_store()
    for host in hosts:
        store.replace_host(host)
    set_rate(guest, 4)
    run = migration("--json")
    run.wait_running()
    run.wait_progress(seconds=1)
    stopped_at = datetime.now(UTC)
    pg_cluster.stop()  # pg_ctl stop -m fast: every connection is cut
    try:
        wait_moved_to_kvm2()
        time.sleep(3)  # the witnesses' checks run while the server is still down
    finally:
        pg_cluster.start()
    assert_completed_and_caught_up(run, guest, "PostgreSQL down", stopped_at, datetime.now(UTC))


# The last case: it kills the module's guest.
def test_source_qemu_killed_mid_migration_is_reported_and_nothing_is_started(
    guest: GuestRecord, console: ConsoleTail, migration: Callable[..., Migration]
) -> None:
    set_rate(guest, 36)
    run = migration()
    run.wait_running()
    run.wait_progress(seconds=2)
    os.kill(qemu_pid("kvm1"), signal.SIGKILL)
    died = "the VM died on its source kvm1 during the move; vmferry started it nowhere"
    doc = assert_ended(run, JobStatus.FAILED, died)
    # exactly no running copy: vmferry restarted nothing on either host
    assert source_state() != libvirt.VIR_DOMAIN_RUNNING
    assert_no_copy_on_destination()
    time.sleep(3)  # nothing starts it a moment later either
    assert source_state() != libvirt.VIR_DOMAIN_RUNNING and destination_copies() == []
    assert doc["result"]["verification"]["running_on_destination"] is False
    # the VM runs nowhere: the witnesses wait for no pass or heartbeat that cannot come
    notes = [e["message"] for e in doc["events"] if e["kind"] == "note"]
    assert not any("within 40 s" in n or "no heartbeat" in n for n in notes), notes
