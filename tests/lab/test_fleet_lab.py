"""Fleet operations in a 3-host lab (docs/operations.md): maintenance, balancing and
power-saving consolidation with their guests verified, then `vmferry lab host fail|restore`
(the fault injector) and HA guests of one anti-affinity group on a host that is cut off,
fenced and restarted elsewhere, each exactly once."""

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


def _verified(plan_id: str) -> dict[str, dict[str, object]]:
    """Each move of plan ``plan_id``: its VM's verification (heartbeat and MEMCHECK seen
    across the move)."""
    store = open_store()
    found = {}
    for item in store.get_plan(plan_id).items:
        assert item.job_id is not None, item
        result = store.get_job(item.job_id).result
        assert result is not None and result.verification is not None, item
        v = result.verification
        assert v.passed and v.memory_integrity == "ok", (item.vm, v)
        assert isinstance(v.heartbeat_max_gap_ms, int), (item.vm, v)
        found[item.vm] = {"heartbeat_max_gap_ms": v.heartbeat_max_gap_ms,
                          "downtime_ms": result.downtime_ms}  # fmt: skip
    return found


def test_maintenance_empties_a_host_and_keeps_vms_off_it_until_exit(
    lab3: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """`vmferry host maintenance enter kvm1` moves its working guests live to kvm2 and kvm3
    through a plan, each verified (heartbeat and MEMCHECK kept across the move), and marks
    it; nothing is placed on it (a move, the balancer) until `maintenance exit`."""
    guests = {name: lab_guests(name, "kvm1", memory_mb=256, working_set_mb=64, dirty_mb_s=4)
              for name in ("mt1", "mt2")}  # fmt: skip
    unprofiled = vmferry("host", "maintenance", "enter", "kvm1", "--dry-run", "--json")
    assert sorted(json.loads(unprofiled.stdout)["counted_at_size"]) == ["mt1", "mt2"]
    profiled = vmferry("profile", "--host", "kvm1", "--duration", "3", "--interval", "1")
    assert profiled.returncode == 0, profiled.stderr
    dry = vmferry("host", "maintenance", "enter", "kvm1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["counted_at_size"] == [] and planned["state"] is None  # nothing marked
    targets = {m["vm"]: m["destination"] for m in planned["moves"]}
    assert sorted(targets) == ["mt1", "mt2"] and set(targets.values()) <= {"kvm2", "kvm3"}
    done = vmferry("host", "maintenance", "enter", "kvm1", "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert (outcome["state"], outcome["plan_status"], outcome["stuck"]) == (
        "in-maintenance", "completed", [])  # fmt: skip
    print(f"\nmaintenance moves {targets}: {_verified(outcome['plan_id'])}")
    for name, guest in guests.items():
        assert runs_on(name) == [targets[name]]
        answers(guest.address, within_s=10)
    try:
        back = vmferry("migrate", "mt1", "--to", "kvm1", "--json")
        assert back.returncode == 3, back.stderr
        check = json.loads(vmferry("check", "mt1", "--to", "kvm1", "--json").stdout)
        assert "host.maintenance" in [f["id"] for f in check["findings"]
                                      if f["severity"] == "blocker"]  # fmt: skip
        balance = json.loads(vmferry("balance", "--json").stdout)
        assert "kvm1" not in [h["name"] for h in balance["hosts"]]  # outside the metric
    finally:
        out = vmferry("host", "maintenance", "exit", "kvm1")
    assert out.returncode == 0 and out.stdout.strip() == "kvm1 is back in service"
    again = vmferry("check", "mt1", "--to", "kvm1", "--json")
    assert "host.maintenance" not in again.stdout


def test_balance_spreads_a_busy_host_in_the_predicted_moves_and_then_rests(
    lab3: LabState, lab_guests: Callable[..., GuestRecord], tmp_path: Path
) -> None:
    """Three busy guests on kvm1 (CPU and memory load), none on kvm2 and kvm3: profiled,
    `vmferry balance` predicts two moves, one to each idle host, and writes them as a plan
    file; `vmferry watch --balance`, measuring the guests itself, waits the rounds it must
    and carries out those two moves as a plan, each verified; then `balance --apply`
    recommends nothing."""
    names = ("bl1", "bl2", "bl3")
    for name in names:
        lab_guests(name, "kvm1", memory_mb=256, working_set_mb=96, dirty_mb_s=16)
    profiled = vmferry("profile", "--host", "kvm1", "--duration", "4", "--interval", "1",
                       "--json")  # fmt: skip
    assert profiled.returncode == 0, profiled.stderr
    cpu = {r["vm"]: r["stats"]["cpu_share"]["p95"] for r in json.loads(profiled.stdout)}
    plan_file = tmp_path / "moves.yaml"
    first = vmferry("balance", "--metric", "cpu", "--threshold", "0.05", "--json",
                    "--plan-out", str(plan_file))  # fmt: skip
    assert first.returncode == 0, first.stderr
    rec = json.loads(first.stdout)
    loads = {h["name"]: h["load"] for h in rec["hosts"]}
    print(f"\nCPU p95 {cpu}; loads {loads}; imbalance {rec['imbalance_before']:.3f} -> "
          f"{rec['imbalance_after']:.3f}; moves {rec['moves']}")  # fmt: skip
    assert rec["counted_at_size"] == [] and loads["kvm2"] == loads["kvm3"] == 0 < loads["kvm1"]
    assert rec["imbalance_before"] > 0.05, rec  # the guests burn CPU (asserted above)
    predicted = sorted((m["source"], m["destination"]) for m in rec["moves"])
    assert predicted == [("kvm1", "kvm2"), ("kvm1", "kvm3")], rec["moves"]
    assert all(m["vm"] in plan_file.read_text() for m in rec["moves"])
    watched = vmferry("watch", "--balance", "--metric", "cpu", "--threshold", "0.05",
                      "--persist", "2", "--rounds", "3", "--interval", "2", "--timeout", "5",
                      timeout=900)  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    print(f"watch --balance: {lines}")
    assert lines[0] == "balance: waiting for samples of bl1, bl2, bl3", lines  # counters
    assert lines[1].endswith("(1 of 2 rounds)"), lines  # the guests' own load, measured live
    assert lines[2].endswith("for 2 rounds: balancing"), lines
    ran = re.match(r"balance: plan (\S+) completed: (bl\d) kvm1->(kvm\d), (bl\d) kvm1->(kvm\d);"
                   r" imbalance ", lines[3])  # fmt: skip
    assert ran is not None and len(lines) == 4, lines  # the predicted number of moves
    moved = {ran.group(2): ran.group(3), ran.group(4): ran.group(5)}
    assert sorted(moved.values()) == ["kvm2", "kvm3"], moved  # the live figures may pick
    # other guests than the first recommendation: they are alike
    print(f"verified: {_verified(ran.group(1))}")
    stayed = (set(names) - set(moved)).pop()
    assert {name: runs_on(name) for name in names} == {
        stayed: ["kvm1"], **{n: [h] for n, h in moved.items()}}  # fmt: skip
    again = vmferry("balance", "--metric", "cpu", "--threshold", "0.05", "--apply", "--json")
    assert again.returncode == 0, again.stderr
    assert "nothing to apply" in again.stderr
    doc = json.loads(again.stdout)
    print(f"after: imbalance {doc['imbalance_before']:.3f} ({doc['stop']})")
    # one busy guest per host: nothing to move, whether the p95s (which include the samples
    # taken while a guest moved) put the fleet under 0.05 or a little over it
    assert doc["moves"] == [] and doc["plan_id"] is None, doc
    assert doc["stop"] in ("under the threshold", "no allowed move lowers the imbalance"), doc
    assert doc["imbalance_before"] < rec["imbalance_before"] / 2, (doc, rec)


def test_consolidation_empties_hosts_powers_them_off_and_wakes_them(
    lab3: LabState, lab_guests: Callable[..., GuestRecord]
) -> None:
    """A quiet guest on each of the three hosts, profiled: `vmferry consolidate --apply
    --power-off` moves two guests so one host runs all three, puts the two emptied hosts in
    standby and powers them off (their daemons stopped) through the lab's power driver;
    `vmferry watch --power` leaves them off while the guests are quiet and wakes as many as
    its decision names, back into service, when they get busy (DPM's band, narrowed and
    with a short window for the test)."""
    guests = {f"cn{i}": lab_guests(f"cn{i}", f"kvm{i}", memory_mb=256, working_set_mb=16,
                                   dirty_mb_s=0) for i in (1, 2, 3)}  # fmt: skip
    hosts = ("kvm1", "kvm2", "kvm3")
    for host in hosts:
        assert vmferry(*lab_power(host)).returncode == 0
        profiled = vmferry("profile", "--host", host, "--duration", "4", "--interval", "1")
        assert profiled.returncode == 0, profiled.stderr
    freed: list[str] = []
    try:
        done = vmferry("consolidate", "--apply", "--power-off", "--json", timeout=900)
        doc = json.loads(done.stdout) if done.stdout else {}
        assert done.returncode == 0, (done.stderr, doc)
        freed = sorted(doc["hosts_freed"])
        assert len(freed) == 2 and len(doc["moves"]) == 2, doc
        (kept,) = set(hosts) - set(freed)
        assert doc["plan_status"] == "completed"
        assert sorted(doc["standby"], key=lambda s: s["host"]) == [
            {"host": h, "powered_off": True, "why": "empty, powered off"} for h in freed
        ]
        print(f"\nconsolidated on {kept}: {_verified(doc['plan_id'])}")
        for host in freed:
            assert vmferry("lab", "host", "power", host, "status").stdout.strip() == "off"
        for guest in guests.values():
            answers(guest.address, within_s=30)
        assert {name: runs_on(name) for name in guests} == {name: [kept] for name in guests}
        held = json.loads(vmferry("host", "maintenance", "status", "--json").stdout)
        assert sorted((h["host"], h["state"]) for h in held) == [(h, "standby") for h in freed]
        dpm = ["watch", "--power", "--target", "40", "--tolerance", "10", "--power-on-window",
               "4", "--power-off-window", "3600", "--interval", "2", "--timeout", "3"]  # fmt: skip
        quiet = vmferry(*dpm, "--rounds", "2")
        assert quiet.returncode == 0, quiet.stderr
        print(f"quiet: {quiet.stdout.splitlines()}")
        assert "awake" not in quiet.stdout and "power:" in quiet.stdout, quiet.stdout
        for guest in guests.values():  # each guest's vCPU about 80 % busy: demand rises
            assert client.control(guest.address, "rate 8").startswith("ok rate 8")
        woken = vmferry(*dpm, "--rounds", "2", timeout=400)
        assert woken.returncode == 0, woken.stderr
        lines = woken.stdout.splitlines()
        print(f"busy: {lines}")
        decided = [re.fullmatch(r"power: \d+% over 4 s is above 50%: waking (\d) brings it to "
                                r"\d+%", line) for line in lines]  # fmt: skip
        (decision,) = [d for d in decided if d is not None]
        awake = [line.split()[1] for line in lines
                 if re.fullmatch(r"power: kvm\d is awake and back in service", line)]  # fmt: skip
        assert 1 <= int(decision.group(1)) == len(awake) and set(awake) <= set(freed), lines
        standby = json.loads(vmferry("host", "maintenance", "status", "--json").stdout)
        assert sorted(h["host"] for h in standby) == sorted(set(freed) - set(awake)), standby
        for host in awake:
            assert vmferry("inventory", "--host", host, "--json").returncode == 0
        freed = sorted(set(freed) - set(awake))
    finally:
        for host in freed:
            vmferry("lab", "host", "power", host, "on")
            vmferry("host", "maintenance", "exit", host)


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
