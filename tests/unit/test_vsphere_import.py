"""`vmferry import vsphere://SOURCE/VM` against the simulator: how the source VM is stopped
(VMware Tools, --force, the refusal), what never touches it (a dry run, a blocked import,
an unknown VM, a wrong password), and --rollback powering it on again."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.vcsim import Vcsim, running_vcsim, store_with_source, vsphere_cli
from support.vcsim_disks import power_state

from vmferry.drivers.vsphere import vsphere_session
from vmferry.imports.vsphere_power import PowerAction, decide_power_off
from vmferry.model.vsphere import VsphereSource, VsphereVmRef
from vmferry.service import import_vm, vsphere_import

TOOLS = "DC0_H0_VM0"  # VMware Tools run in it (the harness's -tools-running)
NO_TOOLS = "DC0_H0_VM1"  # powered on, Tools not running


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Vcsim]:
    workdir = tmp_path / "sim"
    workdir.mkdir()
    with running_vcsim(workdir, tools_running=(TOOLS,)) as started:
        yield started


@pytest.fixture
def db(sim: Vcsim, tmp_path: Path) -> Path:
    """A store with the simulator as source vc1 and libvirt's test driver as host t1."""
    return store_with_source(sim, tmp_path / "v.db")


vmferry = vsphere_cli


def error_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("vmferry: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_tools_not_running_and_no_force_is_refused_and_nothing_changes(
    sim: Vcsim, db: Path
) -> None:
    done = vmferry(db, "import", f"vsphere://vc1/{NO_TOOLS}", "--to", "t1", password=sim.password)
    assert error_line(done, 2) == (
        f"vmferry: {NO_TOOLS} is powered on and VMware Tools do not run in it "
        "(guestToolsNotRunning): shut it down in the guest, or pass --force to power it off "
        "(the guest is not asked); nothing was changed")  # fmt: skip
    assert power_state(sim, NO_TOOLS) == "poweredOn"


def test_a_dry_run_never_powers_anything_off(sim: Vcsim, db: Path) -> None:
    for vm in (TOOLS, NO_TOOLS):
        done = vmferry(db, "import", f"vsphere://vc1/{vm}", "--to", "t1", "--dry-run", "--force",
                       "--json", password=sim.password)  # fmt: skip
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert (doc["status"], doc["source_format"]) == ("dry-run", "vsphere")
        assert doc["spec"]["nics"][0]["mac"].startswith("00:0c:29:")
        assert doc["spec"]["disks"][0]["source"] == f"[LocalDS_0] {vm}/disk1.vmdk"
        assert power_state(sim, vm) == "poweredOn"
    refused = vmferry(db, "import", f"vsphere://vc1/{NO_TOOLS}", "--to", "t1", "--dry-run",
                      "--json", password=sim.password)  # fmt: skip
    findings = {f["id"]: f["severity"] for f in json.loads(refused.stdout)["findings"]}
    assert findings["import.vsphere.power"] == "blocker"  # what the real run would refuse
    assert power_state(sim, NO_TOOLS) == "poweredOn"


def test_a_blocked_import_leaves_the_vm_running(sim: Vcsim, db: Path) -> None:
    done = vmferry(db, "import", f"vsphere://vc1/{TOOLS}", "--to", "t1", password=sim.password)
    assert "blocked by checks: import.pool.missing" in error_line(done, 3)
    assert power_state(sim, TOOLS) == "poweredOn"


def test_unknown_vm_and_wrong_password_are_one_line_errors(sim: Vcsim, db: Path) -> None:
    done = vmferry(db, "import", "vsphere://vc1/nope", "--to", "t1", password=sim.password)
    assert error_line(done, 2) == ("vmferry: vSphere source vc1 has no VM named 'nope' "
                                   "(`vmferry inventory --source vc1` lists them)")  # fmt: skip
    done = vmferry(db, "import", f"vsphere://vc1/{TOOLS}", "--to", "t1", password="wrong")
    assert error_line(done, 2).startswith(f"vmferry: vSphere at {sim.host} refused the user ")
    done = vmferry(db, "import", "vsphere://vc9/x", "--to", "t1", password=sim.password)
    assert "vc9" in error_line(done, 2)
    assert power_state(sim, TOOLS) == "poweredOn"


def source(sim: Vcsim) -> VsphereSource:
    return VsphereSource("vc1", sim.host, sim.port, sim.user, ca_file=str(sim.ca_file))


@pytest.mark.parametrize(("vm", "force", "action", "said"), [
    (TOOLS, False, PowerAction.SHUTDOWN_GUEST, "through VMware Tools"),
    (NO_TOOLS, True, PowerAction.POWER_OFF, "--force: its guest is not asked"),
])  # fmt: skip
def test_the_vm_is_stopped_then_powered_on_again_by_rollback(
    sim: Vcsim, vm: str, force: bool, action: PowerAction, said: str
) -> None:
    ref = VsphereVmRef("vc1", vm, sim.password, force=force, rollback=True)
    notes: list[str] = []
    with vsphere_session(source(sim), sim.password) as session:
        handle = session.find_vm(vm)
        decision = decide_power_off(vm, handle.power_state(), handle.tools_state(), force)
        assert decision.action is action
        stopper = vsphere_import._Stopper(handle, decision.action, ref, notes.append)
        stopper.stop()
        assert stopper.stopped and handle.power_state() == "poweredOff"
        assert power_state(sim, vm) == "poweredOff"
        failed = _failed_outcome(vm)
        rolled = vsphere_import._rolled_back(failed, stopper, notes.append)
    assert rolled.reason == f"the copy broke; {vm} is powered on again on vSphere"
    assert power_state(sim, vm) == "poweredOn"
    assert any(said in note for note in notes), notes


def test_a_powered_off_vm_is_read_as_it_is(sim: Vcsim) -> None:
    with vsphere_session(source(sim), sim.password) as session:
        handle = session.find_vm(NO_TOOLS)
        handle.power_off(30)
        decision = decide_power_off(NO_TOOLS, handle.power_state(), handle.tools_state(), False)
        ref = VsphereVmRef("vc1", NO_TOOLS, sim.password, rollback=True)
        stopper = vsphere_import._Stopper(handle, decision.action, ref, lambda _n: None)
        stopper.stop()
    assert decision.action is PowerAction.NONE
    assert not stopper.stopped  # so --rollback would not power it on
    assert power_state(sim, NO_TOOLS) == "poweredOff"


def _failed_outcome(vm: str) -> import_vm.ImportOutcome:
    from vmferry.imports.mapping import ImportPlan
    from vmferry.model.source_vm import SourceFormat, SourceVm

    plan = ImportPlan.__new__(ImportPlan)
    return import_vm.ImportOutcome(SourceVm(vm, SourceFormat.VSPHERE, 1, 32), "t1", "failed",
                                   "the copy broke", (), plan, "")  # fmt: skip


def _imported_job(db: Path, vm: str, *, stopped: bool) -> str:
    """A completed import job of ``vsphere://vc1/VM`` as `vmferry import` records it (its
    domain on t1 already gone, so only the vSphere side is left to roll back)."""
    from vmferry.model.migration import JobStatus, MigrationOptions
    from vmferry.store.db import open_store

    store = open_store(f"sqlite:///{db}")
    job = store.create_job("import", "imp1", f"vsphere://vc1/{vm}", "t1", MigrationOptions())
    store.set_status(job.id, JobStatus.RUNNING)
    store.add_event(job.id, "import", "import completed: imp1 on t1", {
        "vm": "imp1", "destination": "t1", "status": "completed", "volumes": [],
        "source_stopped": stopped})  # fmt: skip
    store.set_status(job.id, JobStatus.COMPLETED)
    return job.id


def test_rollback_of_an_import_powers_the_vm_it_stopped_on_again(sim: Vcsim, db: Path) -> None:
    with vsphere_session(source(sim), sim.password) as session:
        session.find_vm(TOOLS).power_off(30)  # as the import left it
    job = _imported_job(db, TOOLS, stopped=True)
    no_password = vmferry(db, "rollback", job, password=None)
    assert "VMFERRY_VSPHERE_PASSWORD" in error_line(no_password, 2)
    wrong = vmferry(db, "rollback", job, password="not-it")
    assert "refused the user" in error_line(wrong, 2)
    assert power_state(sim, TOOLS) == "poweredOff"  # nothing touched by either
    done = vmferry(db, "rollback", job, "--json", password=sim.password)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "rolled-back"
    said = " ".join(done.stderr.split())  # Rich wraps the line
    assert f"removed from t1; {TOOLS} powered on again on vSphere" in said
    assert power_state(sim, TOOLS) == "poweredOn"
    again = vmferry(db, "rollback", job, "--json", password=None)
    assert json.loads(again.stdout)["status"] == "already-rolled-back", again.stderr


def test_rollback_leaves_a_vm_the_import_did_not_stop_as_it_is(sim: Vcsim, db: Path) -> None:
    with vsphere_session(source(sim), sim.password) as session:
        session.find_vm(NO_TOOLS).power_off(30)  # off before the import: it read it as it was
    job = _imported_job(db, NO_TOOLS, stopped=False)
    done = vmferry(db, "rollback", job, "--json", password=None)  # no password needed
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "rolled-back"
    assert power_state(sim, NO_TOOLS) == "poweredOff"


def test_a_vsphere_guest_to_convert_has_its_staging_directory_before_its_first_copy(
    tmp_path: Path,
) -> None:
    """A warm import of a guest virt-v2v converts writes its copies into the workdir from
    its first round (before_copy), so the directory exists as soon as a path is given."""
    from vmferry.imports.mapping import PlannedDisk
    from vmferry.service.import_vm import _staged_path

    disk = PlannedDisk(0, "[ds] a/a.vmdk", "vmdk", 2**20, None, "vda", "virtio", "a-disk0", 1)
    staged = _staged_path(tmp_path, disk)
    assert staged == tmp_path / "datastore" / "a-disk0.qcow2" and staged.parent.is_dir()


def test_only_another_running_import_of_the_vm_keeps_leftover_warm_snapshots() -> None:
    """The store's view behind a warm import's clean-up of snapshots an earlier one left:
    another import of the same vSphere VM whose owner lives keeps them; this process's
    own imports, other VMs' and dead owners' do not."""
    import os
    import secrets
    import socket

    from vmferry.drivers.processes import start_ticks
    from vmferry.model.migration import JobStatus, MigrationOptions
    from vmferry.service.lease import process_lease, this_node
    from vmferry.store.db import open_store

    label = "vsphere://vc1/VMX"
    assert not vsphere_import._other_import_runs(label)
    with open_store() as store:
        pid = os.getpid()
        other = store.take_lease(secrets.token_hex(8), host=socket.gethostname(),
                                 node=this_node(), pid=pid, start_ticks=start_ticks(pid),
                                 lease_s=60)  # fmt: skip
        mine = store.create_job("import", "imx-mine", label, "kvm1", MigrationOptions())
        store.set_owner(mine.id, process_lease(store))
        store.set_status(mine.id, JobStatus.RUNNING)
        assert not vsphere_import._other_import_runs(label)  # our own
        theirs = store.create_job("import", "imx", label, "kvm1", MigrationOptions())
        store.set_owner(theirs.id, other)
        store.set_status(theirs.id, JobStatus.RUNNING)
        assert vsphere_import._other_import_runs(label)
        assert not vsphere_import._other_import_runs("vsphere://vc1/OTHER")
        store.set_status(theirs.id, JobStatus.FAILED, "ended")
        assert not vsphere_import._other_import_runs(label)
