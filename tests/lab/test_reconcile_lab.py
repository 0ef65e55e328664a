"""`vmferry job resume` / `job cancel` after vmferry was killed mid-migration, against the
real lab: a job left "running" by a dead owner is brought in line with libvirt.

One guest, created on kvm1, is shared by the module. The tests run in file order: the
second one moves the guest to kvm2 (with virsh, as if vmferry had died after starting it),
the third finds it wherever it runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt
import pytest
from support.leases import dead_owner_lease

from vmferry.lab import guests
from vmferry.lab.state import LabState
from vmferry.model.migration import Job, JobStatus, MigrationOptions
from vmferry.service import jobs as jobs_service
from vmferry.service.locate import locate
from vmferry.store.db import open_store

pytestmark = [pytest.mark.lab, pytest.mark.live_moves]

GUEST = "rcg"


def vmferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=os.environ,
                          capture_output=True, text=True, timeout=180, check=False)  # fmt: skip


def vmferry_json(*args: str) -> dict[str, Any]:
    done = vmferry(*args, "--json")
    assert done.returncode == 0, (done.stdout, done.stderr)
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def uri(host: str) -> str:
    return open_store().get_host(host).uri


@contextmanager
def conn(host: str) -> Iterator[Any]:
    c = libvirt.open(uri(host))
    try:
        yield c
    finally:
        c.close()


def state_of(host: str, name: str) -> int | None:
    """libvirt's state of domain ``name`` on ``host``; None if there is no such domain."""
    with conn(host) as c:
        try:
            state, _reason = c.lookupByName(name).state(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        return int(state)


def orphaned_job(source: str, destination: str) -> Job:
    """A migrate job left "running" by a vmferry that died."""
    store = open_store()
    job = store.create_job("migrate", GUEST, source, destination, MigrationOptions())
    store.set_owner(job.id, dead_owner_lease(store))
    return store.set_status(job.id, JobStatus.RUNNING)


@pytest.fixture(scope="module")
def guest(lab: LabState) -> str:
    guests.create_guest(GUEST, "kvm1", memory_mb=256, working_set_mb=64)
    return GUEST


def test_orphan_on_the_destination_is_destroyed_and_the_job_fails(
    guest: str, tmp_path: Path
) -> None:
    job = orphaned_job("kvm1", "kvm2")
    # What a migration killed halfway leaves on the destination: a paused copy of the VM.
    # It gets its own console file, so it cannot disturb the source's console log, and no
    # disk: an incoming QEMU opens the shared disk without locking it, a paused start
    # would not get the write lock the source's QEMU holds.
    with conn("kvm1") as c:
        xml = str(c.lookupByName(guest).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    console = f"/var/lib/vmferry-lab/shared/consoles/{guest}.log"
    assert console in xml
    orphan_xml = xml.replace(console, str(tmp_path / "orphan-console.log"))
    orphan_xml, disks = re.subn(r"<disk\b.*?</disk>", "", orphan_xml, flags=re.DOTALL)
    assert disks == 1
    with conn("kvm2") as c:
        dom = c.defineXML(orphan_xml)
        try:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            assert state_of("kvm2", guest) == libvirt.VIR_DOMAIN_PAUSED
            assert state_of("kvm1", guest) == libvirt.VIR_DOMAIN_RUNNING

            doc = vmferry_json("job", "resume", job.id)
            assert doc["status"] == "failed"
            assert doc["reason"] == (
                f"vmferry was interrupted; the migration did not complete: {guest} still runs "
                "on kvm1; destroyed the paused incoming copy left on kvm2"
            )
            assert doc["result"]["status"] == "failed"
            assert state_of("kvm2", guest) == libvirt.VIR_DOMAIN_SHUTOFF  # its definition stays
            assert state_of("kvm1", guest) == libvirt.VIR_DOMAIN_RUNNING
            notes = [e["message"] for e in doc["events"] if e["kind"] == "note"]
            assert f"destroyed: the incoming copy of {guest} on kvm2" in notes

            # again, through the CLI and through reconcile_vm: nothing more changes
            assert vmferry_json("job", "resume", job.id) == doc
            assert jobs_service.reconcile_vm(guest) == []
            assert vmferry_json("job", "show", job.id) == doc
            assert state_of("kvm1", guest) == libvirt.VIR_DOMAIN_RUNNING
        finally:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    assert state_of("kvm2", guest) is None


def test_a_migration_that_completed_is_recorded_completed(guest: str) -> None:
    job = orphaned_job("kvm1", "kvm2")
    # the migration vmferry had started goes through without it
    moved = subprocess.run(
        ["virsh", "-c", uri("kvm1"), "migrate", "--live", "--p2p", "--persistent",
         "--undefinesource", "--unsafe", guest, uri("kvm2"), "tcp://198.18.1.12"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert state_of("kvm1", guest) is None
    assert state_of("kvm2", guest) == libvirt.VIR_DOMAIN_RUNNING

    done = vmferry("job", "resume", job.id)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout

    after = jobs_service.get_job(job.id)
    assert after.status is JobStatus.COMPLETED
    assert after.reason == (
        "vmferry was interrupted; the migration completed: found running on kvm2"
    )
    note = next(e for e in after.events if e.message == "resumed: complete")
    assert note.data["hosts"] == {"kvm1": "absent", "kvm2": "running"}
    assert note.data["source"] == {
        "exists": False,
        "running": False,
        "paused": False,
        "persistent": False,
        "job_active": False,
        "postcopy_failed": False,
    }
    assert jobs_service.reconcile_job(job.id) == after
    assert state_of("kvm2", guest) == libvirt.VIR_DOMAIN_RUNNING


def test_a_completed_migration_that_left_the_source_defined_is_tidied(guest: str) -> None:
    """The migration went through but the source's definition stayed (no
    --undefinesource, as when vmferry died before its own end removed it): resuming the job
    removes it, so the VM is defined on one host only."""
    where = locate(guest).host.name
    other = "kvm1" if where == "kvm2" else "kvm2"
    job = orphaned_job(where, other)
    moved = subprocess.run(
        ["virsh", "-c", uri(where), "migrate", "--live", "--p2p", "--persistent", "--unsafe",
         guest, uri(other), f"tcp://198.18.1.{12 if other == 'kvm2' else 11}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert state_of(where, guest) == libvirt.VIR_DOMAIN_SHUTOFF  # still defined there

    done = vmferry("job", "resume", job.id)
    assert done.returncode == 0, done.stderr
    after = jobs_service.get_job(job.id)
    assert after.status is JobStatus.COMPLETED
    assert after.reason == (
        f"vmferry was interrupted; the migration completed: found running on {other}; "
        f"removed the stopped definition left on {where}"
    )
    assert state_of(where, guest) is None
    assert state_of(other, guest) == libvirt.VIR_DOMAIN_RUNNING


def test_cancel_of_a_job_whose_owner_died_reconciles_it(guest: str) -> None:
    where = locate(guest).host.name
    other = "kvm1" if where == "kvm2" else "kvm2"
    job = orphaned_job(where, other)

    doc = vmferry_json("job", "cancel", job.id)
    assert doc["status"] == "cancelled"
    assert doc["cancel_requested"] is True
    assert doc["reason"] == (
        f"vmferry was interrupted; the migration did not complete: {guest} still runs on {where}"
    )
    assert [e["message"] for e in doc["events"] if e["kind"] == "status"] == [
        "pending -> running",
        f"running -> cancelled: {doc['reason']}",
    ]
    assert state_of(where, guest) == libvirt.VIR_DOMAIN_RUNNING
    assert state_of(other, guest) is None

    again = vmferry("job", "cancel", job.id)
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout
    assert jobs_service.get_job(job.id) == jobs_service.cancel_job(job.id)
