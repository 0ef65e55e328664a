"""A fleet as the recommender reads it (fleetops/loads.py, pure) and `vmferry balance` over a
real libvirt (the test driver) and a store (service/balance.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.cli import vmferry

from vmferry.fleetops.balance import recommend
from vmferry.fleetops.loads import host_load, vm_load
from vmferry.fleetops.model import HostLoad, VmLoad
from vmferry.fleetops.plan_file import plan_yaml
from vmferry.model import HostInfo, VmRecord, VmSpec, VmState
from vmferry.model.workload import ProfileSample
from vmferry.plan import load_plan
from vmferry.predict.profile import summarise
from vmferry.store.db import open_store

GIB = 2**30
INFO = HostInfo("kvm1", "kvm1.lab", "qemu:///system", "QEMU", "11.3.0", "Skylake-Server",
                "x86_64", 16, 64 * GIB, 32 * GIB)  # fmt: skip


def record(mode: str | None = None) -> VmRecord:
    return VmRecord("kvm1", VmState.RUNNING, True,
                    VmSpec("web1", "uuid-web1", 4, 8 * GIB, cpu_mode=mode))  # fmt: skip


def samples(cpu: float, used_gib: float, dirty: float) -> list[ProfileSample]:
    return [ProfileSample("web1", "kvm1", f"2026-12-04T00:00:{i:02d}.000Z",
                          {"cpu_share": cpu, "memory_used_bytes": used_gib * GIB,
                           "dirty_rate_bytes_s": dirty, "vcpus": 4})
            for i in range(20)]  # fmt: skip


def test_a_host_is_its_capacity_and_cpu_model() -> None:
    load = host_load(INFO)
    assert (load.name, load.cpus, load.memory_bytes, load.cpu_key) == (
        "kvm1", 16, 64 * GIB, "Skylake-Server")  # fmt: skip


def test_a_profiled_vm_is_its_p95_and_an_unprofiled_one_its_size() -> None:
    summary = summarise("web1", "kvm1", samples(0.25, 2, 5e6), 4, 8 * GIB)
    profiled = vm_load(record(), summary, "Skylake-Server", ("anti-affinity:db", "tier:1"))
    assert (profiled.cpu_demand, profiled.memory_demand_bytes, profiled.dirty_rate_bytes_s) == (
        1.0, 2 * GIB, 5e6)  # fmt: skip
    assert (profiled.anti_affinity, profiled.cpu_key) == ("db", None)
    at_size = vm_load(record("host-passthrough"), None, "Skylake-Server")
    assert (at_size.cpu_demand, at_size.memory_demand_bytes, at_size.anti_affinity,
            at_size.cpu_key) == (4.0, 8 * GIB, None, "Skylake-Server")  # fmt: skip


def test_balance_reads_the_hosts_and_the_stored_profiles(tmp_path: Path) -> None:
    """libvirt's test driver: one host running the VM "test"; unprofiled it counts at its
    size (every vCPU busy), profiled at half of it (a p95 CPU share of 0.5)."""
    db = tmp_path / "x.db"
    assert vmferry("hosts", "add", "t1", "test:///default", db=db).returncode == 0
    first = vmferry("balance", "--json", "--metric", "cpu", db=db)
    assert first.returncode == 0, first.stderr
    before = json.loads(first.stdout)
    assert (before["moves"], before["counted_at_size"], [h["name"] for h in before["hosts"]]) == (
        [], ["test"], ["t1"])  # fmt: skip
    with open_store(f"sqlite:///{db}") as store:
        at = "2026-12-04T00:00:{:02d}.000Z"
        store.add_profile_samples([ProfileSample("test", "t1", at.format(i), {"cpu_share": 0.5})
                                   for i in range(5)])  # fmt: skip
    after = json.loads(vmferry("balance", "--json", "--metric", "cpu", db=db).stdout)
    assert after["counted_at_size"] == []
    assert after["hosts"][0]["load"] == before["hosts"][0]["load"] / 2 > 0


def test_bad_input_is_one_line_and_no_host_is_said(tmp_path: Path) -> None:
    done: subprocess.CompletedProcess[str] = vmferry("balance", "--threshold", "0",
                                                     db=tmp_path / "x.db")  # fmt: skip
    assert (done.returncode, done.stderr.strip()) == (
        2, "vmferry: --threshold must be in (0, 1] (got 0)")  # fmt: skip
    empty = vmferry("balance", db=tmp_path / "x.db")
    assert (empty.returncode, empty.stderr.strip()) == (
        2, "vmferry: no registered host answered; `vmferry hosts list` shows them")  # fmt: skip


def test_a_recommendation_becomes_a_plan_file_the_planner_takes(tmp_path: Path) -> None:
    hosts = [HostLoad("kvm1", 8, 32 * GIB, "Skylake"), HostLoad("kvm2", 8, 32 * GIB, "Skylake")]
    vms = [VmLoad(f"v{i}", "kvm1", 2, 4 * GIB, 2.0, 3 * GIB) for i in range(4)]
    rec = recommend(hosts, vms, metric="cpu", threshold=0.05)
    assert [(m.source, m.destination) for m in rec.moves] == [("kvm1", "kvm2")] * 2
    path = tmp_path / "moves.yaml"
    path.write_text(plan_yaml(rec.moves, hosts, vms, link_bytes_s=1.25e8))
    spec = load_plan(path)
    assert [(v.name, v.source, v.destination, v.memory_mb, v.vcpus, v.strategy)
            for v in spec.vms] == [(m.vm, "kvm1", "kvm2", 4096, 2, "live")
                                   for m in rec.moves]  # fmt: skip
    # kvm1 offers the plan what its two staying VMs leave; kvm2 all of it
    assert {h.name: h.memory_mb for h in spec.hosts} == {"kvm1": 24 * 1024, "kvm2": 32 * 1024}
    assert spec.defaults.link_gbps == 1.0
