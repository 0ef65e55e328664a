"""A vSphere VM's profile from vCenter's statistics: the counters' mapping (pure), then
`vmferry profile vsphere://SOURCE/VM` against the simulator, whose harness answers
QueryPerf with the series the test sets (tests/support/vcsim/main.go)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import vmferry
from support.vcsim import Vcsim, running_vcsim, set_perf

from vmferry.model.vsphere import RawPerf
from vmferry.sources.vsphere_perf import COUNTERS, samples_from_perf
from vmferry.store.db import open_store

MIB = 2**20
VM = "DC0_H0_VM0"


def test_each_counter_becomes_its_metric_in_the_metrics_unit() -> None:
    perf = RawPerf(20, ("2026-12-06T09:00:00Z", "2026-12-06T09:00:20Z"), {
        "cpu.usage.average": (2500, 10000),          # hundredths of a percent
        "mem.active.average": (262144, None),        # KB; None: vCenter had none
        "disk.read.average": (1024, 0),              # KBps
        "disk.write.average": (512, 2048),
        "disk.numberReadAveraged.average": (30, 40),
        "net.received.average": (10, 20),
        "net.packetsRx.summation": (400, 200),       # packets in the 20 s
    })  # fmt: skip
    first, second = samples_from_perf("db1", "vsphere://vc1", perf, 4, 2048)
    assert first.taken_at == "2026-12-06T09:00:00Z" and first.host == "vsphere://vc1"
    assert first.metrics == {
        "vcpus": 4, "memory_bytes": 2048 * MIB, "cpu_share": 0.25,
        "memory_used_bytes": 256 * MIB, "disk_read_bytes_s": 1024 * 1024,
        "disk_write_bytes_s": 512 * 1024, "disk_read_ops_s": 30,
        "net_rx_bytes_s": 10 * 1024, "net_rx_packets_s": 20.0,
    }  # fmt: skip
    assert second.get("cpu_share") == 1.0 and second.get("memory_used_bytes") is None
    assert second.get("net_rx_packets_s") == 10.0
    assert "dirty_rate_bytes_s" not in second.metrics  # vSphere measures none
    assert set(COUNTERS) >= set(perf.series)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    workdir = tmp_path_factory.mktemp("sim")
    with running_vcsim(workdir) as started:
        yield started


def run(sim: Vcsim, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return vmferry(*args, db=db, env={"VMFERRY_VSPHERE_PASSWORD": sim.password}, timeout=120)


def registered(sim: Vcsim, tmp_path: Path) -> Path:
    """A store with the simulator registered as source vc1."""
    db = tmp_path / "v.db"
    added = run(sim, db, "sources", "add", "vc1", sim.vsphere_url(), "--ca", str(sim.ca_file))
    assert added.returncode == 0, added.stderr
    return db


def test_profile_reads_the_last_hour_at_once_stores_it_once_and_right_sizes(
    sim: Vcsim, tmp_path: Path
) -> None:
    db = registered(sim, tmp_path)
    cpu = [500, 700, 600, 800, 500, 600]  # 5-8 % of its vCPU
    write = [100, 300, 200, 4000, 200, 100]  # KBps
    set_perf(sim, VM, {"cpu.usage.average": cpu, "disk.write.average": write,
                       "mem.active.average": [8192] * 6})  # fmt: skip
    done = run(sim, db, "profile", f"vsphere://vc1/{VM}", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["vm"] == VM and doc["host"] == "vsphere://vc1" and doc["samples"] == 6
    stats = doc["stats"]
    assert stats["cpu_share"]["max"] == pytest.approx(0.08)
    assert stats["disk_write_bytes_s"]["mean"] == pytest.approx(sum(write) / 6 * 1024)
    assert stats["disk_write_bytes_s"]["max"] == 4000 * 1024
    assert stats["memory_used_bytes"]["p95"] == 8 * MIB
    assert "dirty_rate_bytes_s" not in stats
    sizing = doc["rightsizing"]
    assert sizing["vcpus"] == 1 and sizing["recommended_vcpus"] == 1
    assert "6 samples of vCenter's statistics" in done.stderr
    again = run(sim, db, "profile", f"vsphere://vc1/{VM}", "--json", "--duration", "70")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["samples"] == 4  # the last 70 s: 0, 20, 40 and 60 s ago
    with open_store(f"sqlite:///{db}") as store:
        stored = store.profile_samples(VM)
    assert {s.host for s in stored} == {"vsphere://vc1"}
    # both reads stored (the harness stamps its newest sample now at each query, so the
    # second read's times are new ones: see the next test for a sample read again)
    assert {s.get("disk_write_bytes_s") for s in stored} == {w * 1024 for w in write}
    assert len(stored) in (6 + 4, 6)


def test_a_sample_read_again_is_not_stored_twice(tmp_path: Path) -> None:
    """vCenter's samples keep their times: a second profile within the hour reads some of
    the same ones, which are stored once (the harness stamps its newest sample now at each
    query, so this is checked on the store)."""
    from vmferry.service.vsphere_profile import _not_stored

    perf = RawPerf(20, ("2026-12-06T09:00:00Z", "2026-12-06T09:00:20Z"),
                   {"cpu.usage.average": (100, 200)})  # fmt: skip
    later = RawPerf(20, ("2026-12-06T09:00:20Z", "2026-12-06T09:00:40Z"),
                    {"cpu.usage.average": (200, 300)})  # fmt: skip
    with open_store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        first = samples_from_perf(VM, "vsphere://vc1", perf, 1, 32)
        store.add_profile_samples(_not_stored(store, first))
        fresh = _not_stored(store, samples_from_perf(VM, "vsphere://vc1", later, 1, 32))
        assert [s.taken_at for s in fresh] == ["2026-12-06T09:00:40Z"]
        elsewhere = samples_from_perf(VM, "kvm1", perf, 1, 32)  # another host's: its own
        assert len(_not_stored(store, elsewhere)) == 2


def test_profile_of_a_vsphere_vm_refuses_what_vcenter_cannot_give(
    sim: Vcsim, tmp_path: Path
) -> None:
    db = registered(sim, tmp_path)
    for args, said in (
        (("--duration", "7200"), "vCenter keeps its realtime statistics"),
        (("--interval", "5"), "--interval is vCenter's own"),
    ):
        done = run(sim, db, "profile", f"vsphere://vc1/{VM}", *args)
        assert done.returncode == 2 and said in done.stderr, done.stderr
    missing = run(sim, db, "profile", "vsphere://vc1/nope")
    assert missing.returncode == 2 and "has no VM named 'nope'" in missing.stderr
