"""The owner of a job is a lease in the store: renewed by its process's heartbeat, judged by
the store's clock, so an owner on another machine is neither taken for dead while it renews
nor kept alive after it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.leases import dead_owner_lease

from vmferry.model.lease import Lease, heartbeat_interval_s, owner_state
from vmferry.model.migration import JobStatus
from vmferry.service import jobs as jobs_service
from vmferry.service.lease import owner_of, process_lease, this_node
from vmferry.store import Store, open_store

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def lease(node: str = "here", expires_in_s: float = 10) -> Lease:
    return Lease("abc", "kvm-admin", node, 4242, 77, T0, T0, T0 + timedelta(seconds=expires_in_s))


def test_an_owner_is_alive_while_its_lease_is_current_and_its_process_is_not_seen_dead() -> None:
    assert owner_state(lease(), T0 + timedelta(seconds=9), "here", True).alive
    elsewhere = owner_state(lease("there"), T0 + timedelta(seconds=9), "here", None)
    assert elsewhere.alive and elsewhere.why == "vmferry pid 4242 on kvm-admin holds its lease"
    expired = owner_state(lease("there"), T0 + timedelta(seconds=12), "here", None)
    assert not expired.alive and "last renewed its lease 12 s ago; it expired" in expired.why
    killed = owner_state(lease(), T0 + timedelta(seconds=1), "here", False)
    assert not killed.alive and "is gone (this machine" in killed.why
    assert not owner_state(None, T0, "here", None).alive
    assert heartbeat_interval_s(15) == 5 and heartbeat_interval_s(1) == 0.5


def test_a_lease_is_taken_renewed_and_released_on_the_stores_clock(store: Store) -> None:
    before = store.clock()
    taken = store.take_lease("feed01", host="a", node="n", pid=1, start_ticks=None, lease_s=15)
    assert before <= taken.heartbeat_at <= store.clock()
    assert taken.expires_at - taken.heartbeat_at == timedelta(seconds=15)
    time.sleep(0.05)
    renewed = store.renew_lease("feed01", 30)
    assert renewed is not None and renewed.heartbeat_at > taken.heartbeat_at
    assert renewed.expires_at - renewed.heartbeat_at == timedelta(seconds=30)
    assert renewed.started_at == taken.started_at
    store.release_lease("feed01")
    assert store.lease("feed01") is None and store.renew_lease("feed01", 15) is None


def test_a_killed_owner_on_this_machine_is_seen_at_once(store: Store) -> None:
    dead = dead_owner_lease(store)
    assert dead.expires_at > store.clock()  # the lease has not expired
    state = owner_of(store, dead.owner_id, dead.pid, dead.start_ticks)
    assert not state.alive and "is gone" in state.why
    mine = process_lease(store)
    assert mine is process_lease(store)  # one lease per process and database
    assert owner_of(store, mine.owner_id, mine.pid, mine.start_ticks).alive


# -- an owner on another machine ----------------------------------------------------------

# Runs in its own pid and UTS namespaces: a pid there names nothing here, as on another
# machine; only the lease in the shared store tells whether it lives.
OWNER = textwrap.dedent("""
    import sys, time
    from vmferry.model.migration import MigrationOptions, JobStatus
    from vmferry.service.lease import process_lease
    from vmferry.store import open_store
    store = open_store(sys.argv[1])
    job = store.create_job("migrate", "web1", "kvm1", "kvm2", MigrationOptions())
    store.set_owner(job.id, process_lease(store))
    store.set_status(job.id, JobStatus.RUNNING)
    print(job.id, flush=True)
    time.sleep(600)
""")


@pytest.fixture
def remote_owner(db_url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (new pid and UTS namespaces); run it as make test does")
    with open_store(db_url) as store:
        store.set_setting("jobs.owner_lease_s", "3")
    inner = f"hostname vmferry-elsewhere && exec {sys.executable} -c '{OWNER}' '{db_url}'"
    owner = subprocess.Popen(["unshare", "--pid", "--uts", "--fork", "--mount-proc", "sh", "-c",
                              inner], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        assert owner.stdout is not None
        job_id = owner.stdout.readline().strip()
        assert job_id, "the owner process printed no job id"
        yield owner, job_id
    finally:
        if owner.poll() is None:
            os.killpg(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)


def test_an_owner_elsewhere_is_left_alone_while_it_renews_and_reconciled_once_it_expires(
    db_url: str, remote_owner: tuple[subprocess.Popen[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, job_id = remote_owner
    monkeypatch.setenv("VMFERRY_DB", db_url)  # the store `vmferry job resume` would open
    with open_store(db_url) as store:
        job = store.get_job(job_id)
        held = store.lease(job.owner_id or "")
        assert held is not None
        assert held.host == "vmferry-elsewhere" and held.node != this_node()
        # it renews: the heartbeat moves on (every 1 s with a 3 s lease), and meanwhile its
        # job is not taken from it
        deadline = time.monotonic() + 30
        while (now := store.lease(held.owner_id)) is not None and now.heartbeat_at == (
            held.heartbeat_at
        ):
            assert time.monotonic() < deadline, "the owner never renewed its lease"
            time.sleep(0.2)
        assert jobs_service.owner_alive(store, job)
        assert jobs_service.reconcile_job(job_id, wait_s=0) == store.get_job(job_id)

        os.killpg(owner.pid, signal.SIGKILL)  # the whole "machine"
        owner.wait(timeout=10)
        last = store.lease(held.owner_id)
        assert last is not None
        deadline = time.monotonic() + 30
        while jobs_service.owner_alive(store, job):
            assert time.monotonic() < deadline, "the dead owner's lease never expired"
            time.sleep(0.2)
        after = store.lease(held.owner_id)
        assert after is not None and after.heartbeat_at == last.heartbeat_at  # nobody renewed
        state = jobs_service.owner_of_job(store, job)
        assert "on vmferry-elsewhere last renewed its lease" in state.why
        # now it is an orphan: reconciling looks at the hosts (none registered here)
        reconciled = jobs_service.reconcile_job(job_id, wait_s=0)
        assert reconciled.status is JobStatus.RUNNING
        assert reconciled.events[-1].message.startswith("not resumed: cannot tell where web1")
