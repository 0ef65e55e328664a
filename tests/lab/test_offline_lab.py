"""`vmferry migrate --strategy warm|cold` against the real lab: the VM moves offline and
vmferry proves it; a warm move the destination refuses leaves the VM running on the source."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.lab import client, guests
from vmferry.lab.state import LabState, load_state
from vmferry.model.migration import JobStatus, MigrationOptions, Strategy
from vmferry.service.migrate import migrate
from vmferry.store.db import open_store

pytestmark = pytest.mark.lab


def vmferry(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=os.environ,
                          capture_output=True, text=True, timeout=timeout, check=False)  # fmt: skip


def where(name: str) -> list[tuple[str, str]]:
    inventory = json.loads(vmferry("inventory", "--json").stdout)
    return [(r["host"], r["state"]) for r in inventory if r["spec"]["name"] == name]


def test_a_warm_move_keeps_the_guests_memory(lab: LabState) -> None:
    record = guests.create_guest("warm1", "kvm1", memory_mb=256, working_set_mb=96,
                                 dirty_mb_s=4)  # fmt: skip
    done = vmferry("migrate", "warm1", "--to", "kvm2", "--strategy", "warm", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    print("warm:", {k: result[k] for k in ("total_time_ms", "downtime_ms")})
    assert (result["status"], result["strategy"]) == ("completed", "warm")
    v = result["verification"]
    assert v["running_on_destination"] and v["absent_on_source"]
    assert v["memory_integrity"] == "ok"  # the restored guest kept its working set
    assert isinstance(v["heartbeat_max_gap_ms"], int)
    assert 0 < result["downtime_ms"] <= result["total_time_ms"]
    assert where("warm1") == [("kvm2", "running")]
    assert len(client.echo(record.address, count=2)) == 2
    state = load_state()
    assert state is not None and state.guests["warm1"].host == "kvm2"
    job = json.loads(vmferry("job", "show", result["job_id"], "--json").stdout)
    assert any("saving warm1" in e["message"] for e in job["events"])
    shared = os.path.join(os.path.dirname(record.data_disk))
    assert not [f for f in os.listdir(shared) if f.endswith(".save")]  # state file removed


def test_a_cold_move_boots_the_guest_on_the_destination(lab: LabState) -> None:
    record = guests.create_guest("cold1", "kvm1", memory_mb=256, working_set_mb=64)
    # the lab guest has no ACPI handler: the shutdown times out and --force powers it off
    done = vmferry("migrate", "cold1", "--to", "kvm2", "--strategy", "cold", "--force",
                   "--shutdown-timeout", "3", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    print("cold:", {k: result[k] for k in ("total_time_ms", "downtime_ms")})
    assert (result["status"], result["strategy"]) == ("completed", "cold")
    v = result["verification"]
    assert v["running_on_destination"] and v["absent_on_source"]
    assert v["memory_integrity"] is None  # it rebooted: nothing to compare
    assert isinstance(v["heartbeat_max_gap_ms"], int) and v["heartbeat_max_gap_ms"] > 0
    assert 0 < result["downtime_ms"] <= result["total_time_ms"]
    assert where("cold1") == [("kvm2", "running")]
    assert len(client.echo(record.address, count=2)) == 2


def test_a_cold_move_without_force_gives_up_and_restarts_the_vm(lab: LabState) -> None:
    guests.create_guest("cold2", "kvm1", memory_mb=256, working_set_mb=64)
    done = vmferry("migrate", "cold2", "--to", "kvm2", "--strategy", "cold",
                   "--shutdown-timeout", "2", "--json")  # fmt: skip
    assert done.returncode == 4, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "failed" and "--force" in result["reason"]
    assert where("cold2") == [("kvm1", "running")]


def test_a_refused_restore_leaves_the_vm_running_on_the_source(lab: LabState) -> None:
    guests.create_guest("warm2", "kvm1", memory_mb=256, working_set_mb=96, dirty_mb_s=4)
    hosts = {h.name: h for h in open_store().list_hosts()}
    conflict = ("<domain type='qemu'><name>warm2</name><memory unit='MiB'>64</memory>"
                "<os><type arch='x86_64'>hvm</type></os></domain>")  # fmt: skip

    def note(message: str) -> None:  # the fault: once the VM is saving, kvm2 gets a VM of
        if message.startswith("saving warm2"):  # that name, so its restore is refused
            with LibvirtHost.connect("kvm2", hosts["kvm2"].uri) as kvm2:
                kvm2.define_xml(conflict)

    try:
        outcome = migrate("warm2", "kvm2", MigrationOptions(strategy=Strategy.WARM), note=note)
    finally:
        with LibvirtHost.connect("kvm2", hosts["kvm2"].uri) as kvm2:
            kvm2.undefine("warm2")
    result = outcome.result
    assert result.status is JobStatus.FAILED
    assert result.reason is not None and "restoring" in result.reason
    assert result.verification is not None
    assert result.verification.memory_integrity == "ok"  # restored on kvm1 with its memory
    assert where("warm2") == [("kvm1", "running")]
    job = open_store().get_job(result.job_id)
    undone = [e.message for e in job.events if e.message.startswith("undone")]
    assert undone == ["undone: restore-on-source", "undone: remove-state-file"]


def test_a_state_dir_only_one_host_sees_is_bad_input(lab: LabState) -> None:
    state = load_state()
    assert state is not None
    name = next(n for n, g in sorted(state.guests.items()) if g.host == "kvm1")
    # every host has a `default` pool at /var/lib/libvirt/images, private to it
    done = vmferry("migrate", name, "--to", "kvm2", "--strategy", "warm", "--state-dir",
                   "/var/lib/libvirt/images")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "does not see" in done.stderr and "Traceback" not in done.stderr
    assert where(name) == [("kvm1", "running")]
    wrong = vmferry("migrate", name, "--to", "kvm2", "--strategy", "live", "--force")
    assert wrong.returncode == 2 and "--force" in wrong.stderr
