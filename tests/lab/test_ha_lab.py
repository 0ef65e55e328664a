"""HA restart with fencing in a 3-host lab: `vmferry lab host fail|restore` (the fault
injector), then HA guests of one anti-affinity group on a host that is cut off, fenced and
restarted elsewhere, each exactly once (docs/operations.md)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from support.lab_fleet import answers, lab_power, runs_on, vmferry

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.errors import LabError, VmferryError
from vmferry.lab import client
from vmferry.lab.daemons import lockspace_dir
from vmferry.lab.state import GuestRecord, LabState, lab_dir
from vmferry.store import ha as ha_store
from vmferry.store import open_store

pytestmark = [pytest.mark.lab]


@pytest.fixture(scope="module")
def lab3(lab_factory: Callable[..., AbstractContextManager[LabState]]) -> Iterator[LabState]:
    """Three lab hosts (the module's own store)."""
    with lab_factory(3) as state:
        yield state


def test_a_host_cut_off_or_killed_and_restored(
    lab3: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """`vmferry lab host fail|restore` (the HA tests' fault injector): cut off, kvm2's libvirt
    does not answer while its guest still serves; killed, the guest is gone too; restored,
    kvm2 answers again and the guest is defined there, stopped."""
    guest = lab_guests("hf1", "kvm2", memory_mb=256, working_set_mb=64)
    cut = vmferry("lab", "host", "fail", "kvm2", "--mode", "partition")
    assert cut.returncode == 0, cut.stderr
    try:
        seen = json.loads(vmferry("balance", "--json").stdout)
        assert list(seen["unreachable"]) == ["kvm2"], seen
        assert len(client.echo(guest.address, count=2)) == 2  # its VM segment is up
        again = vmferry("lab", "host", "fail", "kvm2", "--mode", "kill")
        assert again.returncode == 2 and "has failed already (partition)" in again.stderr
    finally:
        assert vmferry("lab", "host", "restore", "kvm2").returncode == 0
    assert json.loads(vmferry("balance", "--json").stdout)["unreachable"] == {}
    killed = vmferry("lab", "host", "fail", "kvm2", "--mode", "kill")
    assert killed.returncode == 0 and "processes killed" in killed.stdout, killed.stderr
    try:
        assert list(json.loads(vmferry("balance", "--json").stdout)["unreachable"]) == ["kvm2"]
        with pytest.raises(LabError):
            client.echo(guest.address, count=1)
    finally:
        restored = vmferry("lab", "host", "restore", "kvm2")
    assert restored.returncode == 0, restored.stderr
    there = json.loads(vmferry("inventory", "--host", "kvm2", "--json").stdout)
    assert [(v["spec"]["name"], v["state"]) for v in there] == [("hf1", "shut-off")]


def test_ha_restarts_a_dead_hosts_vms_elsewhere_each_once_only_after_fencing_it(
    lab3: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """Two HA guests of one anti-affinity group on kvm1. kvm1 cut off (its guests still
    serve): with a power driver that fails nothing is restarted; with the lab's driver kvm1
    is powered off (fenced, its QEMUs gone with it) and only then each guest is started
    once, high priority first, on kvm2 and kvm3 (never together: their group); kvm1 powered
    on again keeps no second definition. Then ha1's new host killed outright: fenced, ha1
    restarted on kvm1, the one host without a VM of its group."""
    guests = {name: lab_guests(name, "kvm1", memory_mb=256, working_set_mb=32)
              for name in ("ha1", "ha2")}  # fmt: skip
    for name, priority in (("ha1", "high"), ("ha2", "low")):
        assert vmferry("vm", "tag", name, "anti-affinity:web").returncode == 0
        assert vmferry("ha", "enable", name, "--priority", priority).returncode == 0
    failing = ["host", "power", "set", "kvm1", "--on", "true", "--off", "false", "--status",
               "echo on"]  # fmt: skip
    assert vmferry(*failing).returncode == 0
    for host in ("kvm2", "kvm3"):
        assert vmferry(*lab_power(host)).returncode == 0
    failed: list[str] = []
    try:
        assert vmferry("lab", "host", "fail", "kvm1", "--mode", "partition").returncode == 0
        failed.append("kvm1")
        refused = vmferry("watch", "--once", "--timeout", "3")
        assert refused.returncode == 0, refused.stderr
        assert "kvm1: not fenced (power-off-failed); nothing restarted" in refused.stdout
        for guest in guests.values():  # they still serve, on kvm1
            assert len(client.echo(guest.address, count=2)) == 2
        # the second guard: kvm1's virtlockd holds ha1's disk lease in the shared lockspace,
        # and ha1 started on kvm2 from its definition is refused while kvm1 runs it
        lease = _lease(guests["ha1"].data_disk)
        assert _held(lease), f"no lease held for {guests['ha1'].data_disk}"
        twice = _start_elsewhere("ha1", "kvm2")
        assert twice is not None and "lock" in twice, twice
        assert len(client.echo(guests["ha1"].address, count=2)) == 2
        assert vmferry(*lab_power("kvm1")).returncode == 0
        began = time.monotonic()
        fenced = vmferry("watch", "--once", "--timeout", "3")
        assert fenced.returncode == 0, fenced.stderr
        lines = fenced.stdout.splitlines()
        assert lines[0] == "kvm1: fenced (powered off and confirmed off)", lines
        first = re.fullmatch(r"ha1: restarted on (kvm[23]) \(job \w+\)", lines[1])
        second = re.fullmatch(r"ha2: restarted on (kvm[23]) \(job \w+\)", lines[2])
        assert first and second and len(lines) == 3, lines
        home = {"ha1": first.group(1), "ha2": second.group(1)}
        assert home["ha1"] != home["ha2"], home  # their anti-affinity group
        assert vmferry("lab", "host", "power", "kvm1", "status").stdout.strip() == "off"
        failed.remove("kvm1")  # powered off: `power on` brings it back
        assert _held(lease)  # fenced: kvm1's lease died with it, ha1's new host holds it now
        for guest in guests.values():
            answers(guest.address, within_s=120)
        print(f"\nkvm1 cut off -> ha1 and ha2 answering on {home}: "
              f"{time.monotonic() - began:.1f} s")  # fmt: skip
        assert {name: runs_on(name) for name in guests} == {n: [h] for n, h in home.items()}
        assert vmferry("lab", "host", "power", "kvm1", "on").returncode == 0
        tidy = vmferry("watch", "--once", "--timeout", "3")
        for name, host in home.items():
            assert (
                f"{name}: its stale definition on kvm1 removed (it runs on {host})" in tidy.stdout
            )
        assert {name: runs_on(name) for name in guests} == {n: [h] for n, h in home.items()}
        status = json.loads(vmferry("ha", "status", "--json").stdout)
        assert [(s["vm"], s["host"], s["state"]) for s in status] == [
            ("ha1", home["ha1"], "restarted"), ("ha2", home["ha2"], "restarted")]  # fmt: skip
        jobs = json.loads(vmferry("jobs", "--json").stdout)
        restarts = sorted((j["vm"], j["destination"], j["status"]) for j in jobs
                          if j["kind"] == "ha-restart")  # fmt: skip
        assert restarts == [("ha1", home["ha1"], "completed"), ("ha2", home["ha2"], "completed")]

        dead = home["ha1"]
        assert vmferry("lab", "host", "fail", dead, "--mode", "kill").returncode == 0
        failed.append(dead)
        back = vmferry("watch", "--once", "--timeout", "3")
        assert back.stdout.splitlines()[:1] == [f"{dead}: fenced (powered off and confirmed off)"]
        assert "ha1: restarted on kvm1 (job " in back.stdout, back.stdout
        answers(guests["ha1"].address, within_s=120)
        assert runs_on("ha1") == ["kvm1"] and runs_on("ha2") == [home["ha2"]]
    finally:
        for host in failed:
            vmferry("lab", "host", "restore", host)
        for host in ("kvm1", "kvm2", "kvm3"):
            vmferry("lab", "host", "power", host, "on")
        for name in ("ha1", "ha2"):
            vmferry("ha", "disable", name)


def _lease(disk: str) -> Path:
    """virtlockd's lease file for ``disk``: the SHA-256 of its path in the lab's lockspace."""
    return lockspace_dir(lab_dir()) / hashlib.sha256(disk.encode()).hexdigest()


def _held(lease: Path) -> bool:
    """Whether a virtlockd holds ``lease`` (its fcntl lock is taken)."""
    fd = os.open(lease, os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _start_elsewhere(vm: str, host: str) -> str | None:
    """Define ``vm`` (as the HA record keeps it) on ``host`` and start it: the refusal, or
    None if it started (then it is destroyed at once). The definition is removed."""
    store = open_store()
    (record,) = [r for r in ha_store.ha_vms(store) if r.vm == vm]
    target = store.get_host(host)
    with LibvirtHost.connect(target.name, target.uri) as conn:
        conn.define_xml(record.definition_xml)
        try:
            conn.start(vm)
        except VmferryError as exc:
            return exc.message
        finally:
            if vm not in conn.running_vm_names():
                conn.undefine(vm)
        conn.destroy(vm)
        conn.undefine(vm)
        return None
