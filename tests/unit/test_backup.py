"""`--backup POOL` and `vmferry rollback`: the backup plan (assess/backup.py), the retention
choice, the record (store/backups.py on SQLite), when a move is rolled back, and the command
line's refusals. The backups themselves run against real libvirt in
tests/lab/test_migrate_lab.py."""

from __future__ import annotations

import secrets
import socket
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vmferry.assess.backup import BackupTarget, plan_backup
from vmferry.cli.main import build_app
from vmferry.errors import AlreadyExistsError, VmferryError
from vmferry.model.backup import DiskBackup
from vmferry.model.migration import (
    JobStatus,
    MigrationOptions,
    MigrationResult,
    Strategy,
    Verification,
)
from vmferry.model.vm import Disk, DiskDevice
from vmferry.service.backup import prune_choice
from vmferry.service.import_job import (
    end_import_job,
    import_document,
    make_import_job,
    reconcile_import,
)
from vmferry.service.import_vm import ImportRequest
from vmferry.service.lease import this_node
from vmferry.service.restore import restored_name
from vmferry.service.rollback import needs_rollback
from vmferry.store import Store
from vmferry.store import backups as backup_store

MIB = 2**20
DISKS = (
    Disk("vda", "virtio", format="qcow2", source="/p/web1.qcow2", capacity_bytes=200 * MIB,
         allocation_bytes=60 * MIB),
    Disk("vdb", "virtio", format="raw", source="/p/web1-data.raw", capacity_bytes=100 * MIB),
    Disk("hdc", "ide", DiskDevice.CDROM, format="raw", source=None, source_kind="none"),
    Disk("vdc", "virtio", format="raw", source="/p/shared.raw", capacity_bytes=MIB,
         shareable=True),
)  # fmt: skip


def test_each_writable_disk_gets_a_volume_named_for_the_vm_disk_and_job() -> None:
    plan = plan_backup("web1", "abc123", DISKS, "default", 1000 * MIB)
    assert plan.refused is None
    assert plan.targets == (
        BackupTarget("vda", "web1-vda-backup-abc123.qcow2", 200 * MIB, 60 * MIB),
        BackupTarget("vdb", "web1-vdb-backup-abc123.qcow2", 100 * MIB, 100 * MIB),
    )
    assert plan.skipped == ("hdc", "vdc") and plan.needed_bytes == 160 * MIB


def test_a_pool_that_cannot_hold_the_used_parts_refuses_before_anything_is_written() -> None:
    plan = plan_backup("web1", "abc123", DISKS, "default", 159 * MIB)
    assert plan.refused == ("pool default has 159.0 MiB free and the backup of web1 needs "
                            "160.0 MiB: the move does not start")  # fmt: skip
    assert plan_backup("web1", "j", DISKS, "default", 160 * MIB).refused is None


def test_nothing_to_back_up_or_an_unknown_size_refuses() -> None:
    assert plan_backup("cd", "j", DISKS[2:3], "p", MIB).refused == "cd has no disk to back up"
    unknown = (Disk("vda", "virtio", source="/p/x.img"),)
    assert "size of disk vda of x is unknown" in (plan_backup("x", "j", unknown, "p", MIB).refused
                                                 or "")  # fmt: skip


def _backup(i: int, vm: str, job: str, target: str = "vda") -> DiskBackup:
    volume = f"{vm}-{target}-{job}.qcow2"
    return DiskBackup(i, job, vm, "kvm1", "default", target, volume, f"/p/{volume}", "qcow2",
                      MIB, "2026-12-04T00:00:00Z")  # fmt: skip


def test_prune_keeps_each_vms_newest_moves_with_all_their_disks() -> None:
    kept = [_backup(1, "web1", "j1"), _backup(2, "web1", "j1", "vdb"),
            _backup(3, "db1", "j2"), _backup(4, "web1", "j3"),
            _backup(5, "web1", "j4"), _backup(6, "db1", "j5")]  # fmt: skip
    assert [b.id for b in prune_choice(kept, 1)] == [1, 2, 3, 4]
    assert [b.id for b in prune_choice(kept, 2)] == [1, 2]
    assert [b.id for b in prune_choice(kept, 0)] == [1, 2, 3, 4, 5, 6]
    assert prune_choice(kept, 5) == []


def test_the_record_lists_kept_backups_oldest_first_and_marks_pruned_ones(store: Store) -> None:
    first = backup_store.add(store, _backup(0, "web1", "j1"))
    second = backup_store.add(store, _backup(0, "db1", "j2"))
    assert first.id < second.id and first.created_at.endswith("Z")
    backup_store.mark_removed(store, first.id)
    assert [b.id for b in backup_store.backups(store, kept_only=True)] == [second.id]
    everything = backup_store.backups(store)
    assert [b.id for b in everything] == [first.id, second.id]
    assert everything[0].removed_at is not None and everything[1].removed_at is None
    assert [b.vm for b in backup_store.backups_of_job(store, "j2")] == ["db1"]


def _result(status: JobStatus, on_destination: bool | None) -> MigrationResult:
    verification = (None if on_destination is None
                    else Verification(on_destination, on_destination))  # fmt: skip
    return MigrationResult("j", "web1", "kvm1", "kvm2", Strategy.LIVE, status, "why", None,
                           None, None, None, verification=verification)  # fmt: skip


def test_only_a_move_that_failed_with_the_vm_on_the_destination_is_rolled_back() -> None:
    assert needs_rollback(_result(JobStatus.FAILED, True))
    assert not needs_rollback(_result(JobStatus.FAILED, False))  # still on the source
    assert not needs_rollback(_result(JobStatus.FAILED, None))  # failed before the switch
    assert not needs_rollback(_result(JobStatus.COMPLETED, True))


def test_options_carry_the_backup_pool_and_rollback_through_the_job(store: Store) -> None:
    job = store.create_job("migrate", "web1", "kvm1", "kvm2",
                           MigrationOptions(backup_pool="default", rollback=True))  # fmt: skip
    options = store.get_job(job.id).options
    assert (options.backup_pool, options.rollback) == ("default", True)


@pytest.mark.parametrize("flag", [["--backup", "default"], ["--rollback"]])
def test_backup_and_rollback_have_no_remote_form_yet(
    flag: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMFERRY_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("VMFERRY_TOKEN", "t")
    result = CliRunner().invoke(build_app("migrate"), ["migrate", "web1", "--to", "kvm2", *flag])
    assert isinstance(result.exception, VmferryError) and result.exception.exit_code == 2
    assert f"`vmferry migrate {flag[0]}` has no remote form yet" in str(result.exception)


def test_rolling_back_a_job_that_is_not_a_move_or_has_not_ended_is_bad_input(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMFERRY_DB", db_url)
    job = store.create_job("move-storage", "web1", "kvm1", "kvm1", MigrationOptions())
    result = CliRunner().invoke(build_app("rollback"), ["rollback", job.id, "--json"])
    assert isinstance(result.exception, VmferryError) and result.exception.exit_code == 2
    assert "is a move-storage job; only moves and imports are rolled back" in str(result.exception)
    move = store.create_job("migrate", "db1", "kvm1", "kvm2", MigrationOptions())
    result = CliRunner().invoke(build_app("rollback"), ["rollback", move.id])
    assert isinstance(result.exception, VmferryError) and result.exception.exit_code == 2
    assert f"job {move.id} has not ended (pending)" in str(result.exception)
    assert result.stdout == ""


def test_a_restored_volume_is_named_for_the_old_file_and_the_job() -> None:
    assert restored_name("/srv/pool/web1-data.qcow2", "vda", "web1", "3f2a9c0e11ab") == (
        "web1-data-restored-3f2a9c0e.qcow2")  # fmt: skip
    assert restored_name("", "vdb", "web1", "3f2a9c0e11ab") == "web1-vdb-restored-3f2a9c0e.qcow2"


def test_an_import_that_did_not_complete_or_was_rolled_back_is_left_as_it_is(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No host is asked: a failed import left nothing, a rolled-back one has nothing left
    (kvm9 is not even registered)."""
    monkeypatch.setenv("VMFERRY_DB", db_url)
    failed = store.create_job("import", "imp1", "disk.raw", "kvm9", MigrationOptions())
    store.set_status(failed.id, JobStatus.RUNNING)
    end_import_job(store, failed.id, None, JobStatus.FAILED, "the copy differs at GiB 0")
    result = CliRunner().invoke(build_app("rollback"), ["rollback", failed.id, "--json"])
    assert isinstance(result.exception, VmferryError) and result.exception.exit_code == 2
    assert "import did not complete (failed): it left nothing" in str(result.exception)
    done = store.create_job("import", "imp2", "disk.raw", "kvm9", MigrationOptions())
    store.set_status(done.id, JobStatus.RUNNING)
    doc = {"vm": "imp2", "destination": "kvm9", "status": "completed", "reason": None,
           "volumes": ["/p/imp2-disk0.qcow2"]}  # fmt: skip
    end_import_job(store, done.id, doc, JobStatus.COMPLETED)
    assert import_document(store.get_job(done.id)) == doc
    store.add_event(done.id, "rollback", "rolled back", {"status": "completed"})
    result = CliRunner().invoke(build_app("rollback"), ["rollback", done.id, "--json"])
    assert result.exit_code == 0, result.output
    assert '"status": "already-rolled-back"' in result.stdout


def test_an_import_whose_process_died_is_failed_on_resume_naming_what_may_be_left(
    store: Store,
) -> None:
    job = store.create_job("import", "imp3", "disk.raw", "kvm2", MigrationOptions())
    store.set_status(job.id, JobStatus.RUNNING)
    ended = reconcile_import(store, store.get_job(job.id))
    assert ended.status is JobStatus.FAILED and ended.reason is not None
    assert "*.vmferry-part" in ended.reason and "a domain imp3" in ended.reason


def test_a_new_import_first_fails_an_earlier_one_whose_process_died(store: Store) -> None:
    """`vmferry import` killed (SIGKILL, the machine restarted) leaves its job running with
    a dead owner: the next import of that name records it failed and goes on; one whose
    process still runs is refused in one line."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = store.take_lease(secrets.token_hex(8), host=socket.gethostname(), node=this_node(),
                            pid=gone.pid, start_ticks=1, lease_s=60)  # fmt: skip
    killed = store.create_job("import", "imp4", "disk.raw", "kvm2", MigrationOptions())
    store.set_owner(killed.id, dead)
    store.set_status(killed.id, JobStatus.RUNNING)
    request = ImportRequest(source=Path("disk.raw"), to="kvm2")
    again = make_import_job(store, request, "imp4")
    ended = store.get_job(killed.id)
    assert ended.status is JobStatus.FAILED and "*.vmferry-part" in (ended.reason or "")
    assert store.get_job(again).status is JobStatus.PENDING
    store.set_status(again, JobStatus.RUNNING)  # owned by this process, which runs
    with pytest.raises(AlreadyExistsError, match=f"unfinished job already: {again}"):
        make_import_job(store, request, "imp4")
    assert store.get_job(again).status is JobStatus.RUNNING
