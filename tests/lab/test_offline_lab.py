"""`vmferry migrate --strategy warm|cold` against the real lab: the VM moves offline and
vmferry proves it; a warm move the destination refuses leaves the VM running on the source."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest
from support.stack import live_tcg_moves_work

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.lab import client
from vmferry.lab.console import ConsoleTail, MemCheck
from vmferry.lab.state import GuestRecord, LabState, load_state
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


def test_a_warm_move_keeps_the_guests_memory(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    record = lab_guests("warm1", "kvm1", memory_mb=256, working_set_mb=96,
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


def test_a_cold_move_boots_the_guest_on_the_destination(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    record = lab_guests("cold1", "kvm1", memory_mb=256, working_set_mb=64)
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


def test_strategy_auto_chooses_what_the_stack_allows_and_says_why(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """Idle, small and on a QEMU that moves TCG guests live: live, because pre-copy
    converges within 300 ms, over 4 multifd channels with zstd (both hosts can). On QEMU
    7.2 the live move is refused by pre-flight (migration.tcg-lost-writes) and auto moves
    the same guest warm, memory kept."""
    lab_guests("auto1", "kvm1", memory_mb=256, working_set_mb=64)
    done = vmferry("migrate", "auto1", "--to", "kvm2", "--strategy", "auto", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    reason = result["strategy_reason"]
    print("auto:", result["strategy"], "-", reason)
    if live_tcg_moves_work():
        assert result["strategy"] == "live"
        assert "pre-copy converges" in reason and "within the tolerance of 300 ms" in reason
        assert "; stream: 4 multifd channels with zstd, which both hosts can do" in reason
        assert isinstance(result["guest_pause_ms"], int)
    else:
        assert result["strategy"] == "warm"
        assert "a live move is refused (migration.tcg-lost-writes)" in reason
    assert result["status"] == "completed"
    assert result["verification"]["memory_integrity"] == "ok"
    assert where("auto1") == [("kvm2", "running")]
    job = json.loads(vmferry("job", "show", result["job_id"], "--json").stdout)
    chosen = [e for e in job["events"] if e["kind"] == "strategy"]
    assert [e["data"] for e in chosen] == [{"strategy": result["strategy"], "reason": reason}]
    stream = (job["options"]["parallel"], job["options"]["compression"])
    assert stream == ((4, "zstd") if live_tcg_moves_work() else (0, "none")), job["options"]


def test_a_cold_move_without_force_gives_up_and_restarts_the_vm(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    lab_guests("cold2", "kvm1", memory_mb=256, working_set_mb=64)
    done = vmferry("migrate", "cold2", "--to", "kvm2", "--strategy", "cold",
                   "--shutdown-timeout", "2", "--json")  # fmt: skip
    assert done.returncode == 4, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "failed" and "--force" in result["reason"]
    assert where("cold2") == [("kvm1", "running")]


def test_a_refused_restore_leaves_the_vm_running_on_the_source(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    lab_guests("warm2", "kvm1", memory_mb=256, working_set_mb=96, dirty_mb_s=4)
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


def test_a_state_dir_only_one_host_sees_is_bad_input(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    name = "sdir1"  # its own guest: nothing depends on the tests before
    lab_guests(name, "kvm1", memory_mb=256, working_set_mb=32)
    # every host has a `default` pool at /var/lib/libvirt/images, private to it
    done = vmferry("migrate", name, "--to", "kvm2", "--strategy", "warm", "--state-dir",
                   "/var/lib/libvirt/images")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "does not see" in done.stderr and "Traceback" not in done.stderr
    assert where(name) == [("kvm1", "running")]
    wrong = vmferry("migrate", name, "--to", "kvm2", "--strategy", "live", "--force")
    assert wrong.returncode == 2 and "--force" in wrong.stderr


def wait_for_saving(vm: str, timeout_s: float = 120) -> tuple[str, str]:
    """The warm job of ``vm`` and its state file, once the job records that it saves."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open_store() as store:
            for job in store.unfinished_jobs(vm):
                full = store.get_job(job.id)
                for e in full.events:
                    if e.message.startswith(f"saving {vm}") and isinstance(e.data.get("path"), str):
                        return job.id, str(e.data["path"])
        time.sleep(0.05)
    raise AssertionError(f"no warm job of {vm} started saving within {timeout_s} s")


def wait_for_libvirt_job(host: str, vm: str, timeout_s: float = 30) -> None:
    """Until libvirt on ``host`` runs a job (here: the save) on ``vm``."""
    uri = {h.name: h.uri for h in open_store().list_hosts()}[host]
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(vm)
        deadline = time.monotonic() + timeout_s
        while dom.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE:
            assert time.monotonic() < deadline, f"no libvirt job on {vm} within {timeout_s} s"
            time.sleep(0.02)
    finally:
        conn.close()


def test_a_warm_move_killed_while_saving_is_resumed_back_onto_its_source(
    lab: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """vmferry is killed (SIGKILL) as soon as the VM starts saving: libvirt finishes the save
    on its own, so the VM runs nowhere, with its memory in the state file. `vmferry job
    resume` restores it on the source from that file and removes the file."""
    record = lab_guests("warm3", "kvm1", memory_mb=256, working_set_mb=96,
                                 dirty_mb_s=4)  # fmt: skip
    argv = [sys.executable, "-m", "vmferry.cli.main", "migrate", "warm3", "--to", "kvm2",
            "--strategy", "warm"]  # fmt: skip
    proc = subprocess.Popen(argv, env=os.environ, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        job_id, path = wait_for_saving("warm3")
        wait_for_libvirt_job("kvm1", "warm3")  # the save reached libvirt: it goes on alone
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with ConsoleTail(Path(record.console)) as tail:
        time.sleep(0.5)  # the tail has read what the log holds from before the kill
        resumed_from = time.monotonic()
        done = vmferry("job", "resume", job_id, "--wait", "120", "--json")
        assert done.returncode == 0, done.stderr
        with open_store() as store:
            job = store.get_job(job_id)
        events = [e.message for e in job.events]
        print("[warm-kill]", "\n[warm-kill] ".join(events))
        assert job.status is JobStatus.FAILED, events
        assert job.reason is not None and "restored warm3 on kvm1" in job.reason
        repaired = [m for m in events if m.startswith("repaired")]
        assert repaired == ["repaired: restore-on-source", "repaired: remove-state-file"]
        assert where("warm3") == [("kvm1", "running")]
        check = tail.wait_for(
            lambda ln: isinstance(ln.event, MemCheck) and ln.monotonic > resumed_from, timeout=60
        )
    assert isinstance(check.event, MemCheck) and check.event.ok, check.text  # memory kept
    assert not os.path.exists(path)
    assert len(client.echo(record.address, count=2)) == 2
    again = vmferry("job", "resume", job_id, "--json")  # a second resume changes nothing
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "failed"
    assert where("warm3") == [("kvm1", "running")]
