"""Plans with VMs of vSphere sources: the plan file's `sources:`, what `plan create` reads
from the source (against the simulator), the import each VM gets, and `plan run` handing a
warm import the cutover time its schedule gave."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support.vcsim import Vcsim, running_vcsim, set_perf
from support.vcsim_disks import admin, find_vm, wait

from vmferry.errors import BadInputError, NotFoundError
from vmferry.model.plan_run import ItemStatus, PlanItem, PlanStatus
from vmferry.model.vsphere import VsphereDisk, VsphereSource, VsphereVm
from vmferry.plan import PlanSpec, parse_plan
from vmferry.service.plan import create_plan
from vmferry.service.plan_imports import (
    IMPORT_CUTOVER_S,
    ImportItemResult,
    ImportTerms,
    choose_import,
    cutover_time,
    import_sources,
    stop_to_start_ms,
)
from vmferry.service.plan_run import run_plan
from vmferry.service.profile import ProfileRun
from vmferry.service.vsphere_sources import add_source, inventory
from vmferry.service.warm_cutover import WarmCancelledError
from vmferry.store.db import Store

START = "2026-12-06T10:00:00+00:00"
PLAN = f"""\
version: 1
start_at: "{START}"
defaults: {{precopy_interval_s: 600}}
hosts:
  - {{name: kvm1, cpus: 16, memory_mb: 8192, link_gbps: 1}}
sources:
  - name: vc
    link_gbps: 1
    max_concurrent: 1
    network_map: {{VM Network: vmnet}}
    storage_map: {{"*": default}}
vms:
  - {{name: DC0_H0_VM0, source: vc, destination: kvm1}}
  - {{name: DC0_H0_VM1, source: vc}}
windows:
  - {{start: 3600, end: 7200}}
"""


def no_facts(_source: str, _vm: str) -> dict[str, int] | str:
    return {"memory_mb": 1024, "vcpus": 1, "bytes": 2**30}


# -- the plan file -----------------------------------------------------------------------


def problems(text: str) -> str:
    with pytest.raises(BadInputError) as caught:
        parse_plan(text, facts=no_facts)
    return caught.value.message


def test_a_vm_of_a_source_takes_what_the_plan_file_leaves_out_from_the_source() -> None:
    seen: list[tuple[str, str]] = []

    def facts(source: str, vm: str) -> dict[str, int] | str:
        seen.append((source, vm))
        return {"memory_mb": 2048, "vcpus": 2, "bytes": 5 * 2**30}

    text = PLAN.replace("{name: DC0_H0_VM1, source: vc}",
                        "{name: DC0_H0_VM1, source: vc, memory_mb: 512}")  # fmt: skip
    spec = parse_plan(text, facts=facts)
    assert seen == [("vc", "DC0_H0_VM0"), ("vc", "DC0_H0_VM1")]
    first, second = spec.vms
    assert (first.memory_mb, first.vcpus, first.bytes) == (2048, 2, 5 * 2**30)
    assert second.memory_mb == 512  # the plan file's own value is kept
    assert spec.imports(first) and spec.source("vc") is not None
    assert spec.sources[0].storage_map == {"*": "default"}
    assert spec.defaults.precopy_interval_s == 600


def test_a_vm_the_source_does_not_have_is_named_with_its_line() -> None:
    def facts(_source: str, vm: str) -> dict[str, int] | str:
        return f"no VM {vm!r} on vSphere source vc"

    with pytest.raises(BadInputError) as caught:
        parse_plan(PLAN, facts=facts)
    assert caught.value.message.splitlines()[0] == (
        "plan.yaml:13: vms[0].name: no VM 'DC0_H0_VM0' on vSphere source vc"
    )


def test_imports_refuse_what_only_moves_between_hosts_have() -> None:
    text = PLAN.replace("{name: DC0_H0_VM0, source: vc, destination: kvm1}",
                        "{name: DC0_H0_VM0, source: vc, destination: vc, strategy: live, "
                        "backup_pool: p}")  # fmt: skip
    said = problems(text)
    assert "vms[0].destination: 'vc' is a vSphere source: VMs go to hosts" in said
    assert (
        "vms[0].strategy: a VM from vSphere source vc is imported: auto, warm, cold or live-import"
    ) in said
    assert "vms[0].backup_pool: an import never writes its source: nothing to back up" in said
    clash = PLAN.replace("sources:\n", "sources:\n  - {name: kvm1}\n")
    assert "sources[0].name: 'kvm1' is a host's name too" in problems(clash)


def test_live_import_is_for_vms_of_a_source_only() -> None:
    text = PLAN.replace(
        "  - {name: kvm1, cpus: 16, memory_mb: 8192, link_gbps: 1}\n",
        "  - {name: kvm1, cpus: 16, memory_mb: 8192, link_gbps: 1}\n"
        "  - {name: kvm2, cpus: 16, memory_mb: 8192, link_gbps: 1}\n",
    )
    text = text.replace(
        "vms:\n",
        "vms:\n  - {name: web, source: kvm2, memory_mb: 512, vcpus: 1, strategy: live-import}\n",
    )
    assert "vms[0].strategy: live-import is for a VM of a vSphere source" in problems(text)
    imported = PLAN.replace("destination: kvm1}", "destination: kvm1, strategy: live-import}")
    assert parse_plan(imported, facts=no_facts).vms[0].strategy == "live-import"


# -- the choice --------------------------------------------------------------------------


def test_a_live_import_stops_the_vm_for_one_boot_and_streams_its_disks_behind_it() -> None:
    rate = 125e6
    live = choose_import("live-import", "vc", "poweredOn", 2**30, rate, 3600)
    assert (live.strategy, live.start) == ("live-import", True)
    assert live.downtime_ms == round(IMPORT_CUTOVER_S * 1000)  # not the copy: it runs meanwhile
    assert live.duration_s == pytest.approx(2**30 / rate + IMPORT_CUTOVER_S)
    assert "runs on KVM at once" in live.reason and "stream in behind it" in live.reason
    off = choose_import("live-import", "vc", "poweredOff", 2**30, rate, 3600)
    assert (off.strategy, off.start) == ("cold", False)
    assert "it is not started on KVM either" in off.reason


def test_a_running_vm_is_imported_warm_and_one_that_is_off_cold() -> None:
    rate = 125e6  # 1 Gbit/s
    warm = choose_import("auto", "vc", "poweredOn", 2**30, rate, 3600)
    assert (warm.strategy, warm.start, warm.downtime_ms) == ("warm", True, 60_000)
    assert warm.duration_s == pytest.approx(2**30 / rate + IMPORT_CUTOVER_S)
    assert "it runs on vSphere source vc: a warm import reads its disks (1024 MiB, " in (
        warm.reason
    )
    assert "its disk writes are not known" in warm.reason
    cold = choose_import("auto", "vc", "poweredOff", 2**30, rate, 3600)
    assert (cold.strategy, cold.start, cold.downtime_ms) == ("cold", False, 0)
    asked_warm = choose_import("warm", "vc", "poweredOff", 2**30, rate, 3600)
    assert asked_warm.strategy == "cold" and "nothing changes while it is off" in (
        asked_warm.reason
    )
    asked_cold = choose_import("cold", "vc", "poweredOn", 2**30, rate, 3600)
    assert asked_cold.strategy == "cold" and asked_cold.start
    assert asked_cold.downtime_ms == round((2**30 / rate + IMPORT_CUTOVER_S) * 1000)


def test_a_warm_cutover_copies_what_the_vm_writes_in_one_interval() -> None:
    rate = 125e6
    written = choose_import("auto", "vc", "poweredOn", 2**30, rate, 600, 2**20 / 4)
    changed = 600 * 2**20 / 4  # 150 MiB: a quarter MiB/s for one interval
    assert written.cutover_s == pytest.approx(IMPORT_CUTOVER_S + changed / rate)
    assert written.duration_s == pytest.approx(2**30 / rate + written.cutover_s)
    assert (
        "written at 0.2 MiB/s (p95 of vCenter's statistics): the cutover copies up to "
        "150 MiB" in written.reason
    )
    capped = choose_import("auto", "vc", "poweredOn", 2**30, 2**20, 3600, 2 * 2**20)
    assert capped.cutover_s == pytest.approx(IMPORT_CUTOVER_S + 2**30 / 2**20)  # the disk
    assert "every precopy falls behind" in capped.reason


def test_the_cutover_time_counts_from_start_at_else_from_the_first_run() -> None:
    spec = parse_plan(PLAN, facts=no_facts)
    now = datetime(2026, 12, 6, 9, 0, tzinfo=datetime.now().astimezone().tzinfo)
    assert cutover_time(spec, None, 4000, now) == datetime.fromisoformat(START) + timedelta(
        seconds=4000
    )
    bare = spec.model_copy(update={"start_at": None})
    ran = "2026-12-06T11:00:00+00:00"
    assert cutover_time(bare, ran, 30, now) == datetime.fromisoformat(ran) + timedelta(seconds=30)
    assert cutover_time(bare, None, 30, now) == now + timedelta(seconds=30)
    assert cutover_time(spec, ran, None, now) is None


# -- plan create against the simulator ---------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    workdir = tmp_path_factory.mktemp("sim")
    with running_vcsim(workdir) as started:
        with admin(started) as instance:  # VM1 powered off: a cold import
            wait(find_vm(instance, "DC0_H0_VM1").PowerOffVM_Task())
        yield started


def register(store: Store, sim: Vcsim) -> None:
    add_source("vc", sim.vsphere_url(), lambda _s: sim.password, ca_file=str(sim.ca_file),
               store=store)  # fmt: skip


def test_plan_create_reads_the_source_and_schedules_the_cutover_in_the_window(
    sim: Vcsim, store: Store, tmp_path: Path
) -> None:
    register(store, sim)
    set_perf(sim, "DC0_H0_VM0", {"disk.write.average": [256] * 30})  # KBps, the last 10 min
    path = tmp_path / "plan.yaml"  # VM0's disks said to hold 2 GiB: the simulator's hold 1 MiB
    path.write_text(PLAN.replace("{name: DC0_H0_VM0, source: vc, destination: kvm1}",
                                 "{name: DC0_H0_VM0, source: vc, destination: kvm1, "
                                 "bytes: 2147483648}"))  # fmt: skip
    record = create_plan(path, store=store, password=lambda _s: sim.password)
    source = store_source(store)
    vms = {vm.name: vm for vm in inventory(source, sim.password)}
    spec = PlanSpec.model_validate(record.spec)
    for entry in spec.vms:  # filled in from the inventory, kept with the plan
        found = vms[entry.name]
        assert (entry.memory_mb, entry.vcpus) == (found.memory_mb, found.vcpus)
        # summary.storage.committed (the simulator gives none for its own VMs), else the
        # disks' capacities; the plan file's own value kept
        read = found.committed_bytes or sum(d.capacity_bytes for d in found.disks)
        assert entry.bytes == (2**31 if entry.name == "DC0_H0_VM0" else read)
        assert read
    items = {i.vm: i for i in record.items}
    warm, cold = items["DC0_H0_VM0"], items["DC0_H0_VM1"]
    assert (warm.strategy, cold.strategy) == ("warm", "cold")
    assert cold.destination == "kvm1" and cold.source == "vc"
    doc = warm.prediction["import"]
    assert doc["source"] == "vc" and doc["power_state"] == "poweredOn" and doc["start"]
    # its disk writes (vCenter's statistics) for one precopy interval (600 s), read at the
    # VM's share of kvm1's 1 Gbit/s link (4 slots: 250 Mbit/s)
    assert doc["disk_write_bytes_s"] == 256 * 1024
    changed = 256 * 1024 * 600
    assert doc["cutover_s"] == round(IMPORT_CUTOVER_S + changed / 31.25e6, 1)
    assert (
        "written at 0.2 MiB/s (p95 of vCenter's statistics): the cutover copies up to "
        "150 MiB" in warm.strategy_reason
    )
    assert doc["cutover_at_s"] == round(warm.predicted_end_s - IMPORT_CUTOVER_S - changed / 31.25e6)
    assert len(store.profile_samples("DC0_H0_VM0")) == 30  # kept as its profile
    assert warm.predicted_start_s >= 3600 and warm.predicted_end_s <= 7200
    assert cold.prediction["import"]["start"] is False
    assert cold.prediction["import"]["cutover_at_s"] is None
    spans = sorted((i.predicted_start_s, i.predicted_end_s) for i in record.items)
    assert spans[0][1] <= spans[1][0]  # the source reads one VM at a time (max_concurrent 1)
    assert import_sources(record.items) == ["vc"]


def store_source(store: Store) -> VsphereSource:
    from vmferry.service.vsphere_sources import get_source

    return get_source("vc", store)


def test_plan_create_names_a_vm_the_source_lacks_and_a_source_not_registered(
    sim: Vcsim, store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN)
    with pytest.raises(NotFoundError):
        create_plan(path, store=store, password=lambda _s: sim.password)
    register(store, sim)
    path.write_text(PLAN.replace("DC0_H0_VM1", "nope"))
    with pytest.raises(BadInputError) as caught:
        create_plan(path, store=store, password=lambda _s: sim.password)
    assert caught.value.message == "plan.yaml:14: vms[1].name: no VM 'nope' on vSphere source vc"
    assert store.list_plans() == []


# -- plan run ----------------------------------------------------------------------------


def fake_inventory(_source: VsphereSource, password: str) -> list[VsphereVm]:
    assert password == "pw"
    disk = (VsphereDisk("[ds] a/a.vmdk", 2**30),)
    return [VsphereVm("DC0_H0_VM0", "u0", "poweredOn", 1, 1024, None, disk, ()),
            VsphereVm("DC0_H0_VM1", "u1", "poweredOff", 1, 1024, None, disk, ())]  # fmt: skip


def made_plan(store: Store, tmp_path: Path, text: str = PLAN) -> str:
    add_source("vc", "vsphere://u@vc.example:443", lambda _s: "pw", insecure=True, store=store,
               probe=lambda _s, _p: None)  # fmt: skip
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return create_plan(path, store=store, password=lambda _s: "pw",
                       read_inventory=fake_inventory, profiles_of=no_profiles).id  # fmt: skip


def no_profiles(_source: str, _vms: object, _password: str, _store: Store) -> dict[str, ProfileRun]:
    return {}


def test_plan_run_imports_each_vm_and_cuts_a_warm_one_over_when_scheduled(
    store: Store, tmp_path: Path
) -> None:
    plan_id = made_plan(store, tmp_path)
    calls: list[tuple[str, str, datetime | None]] = []

    def fake_import(item: PlanItem, spec: PlanSpec, terms: ImportTerms,
                    note: object, _store: Store) -> ImportItemResult:  # fmt: skip
        calls.append((item.vm, terms.password, terms.cutover_at))
        assert terms.bandwidth_mib_s is None  # no fleet budget: no cap
        return ImportItemResult(f"job-{item.vm}", 1500, 300 if terms.cutover_at else None)

    record = run_plan(plan_id, store=store, password=lambda _s: "pw", import_fn=fake_import,
                      poll_s=0.01)  # fmt: skip
    assert record.status is PlanStatus.COMPLETED
    items = {i.vm: i for i in record.items}
    cutover_at = items["DC0_H0_VM0"].prediction["import"]["cutover_at_s"]
    assert sorted(calls, key=lambda c: c[0]) == [
        ("DC0_H0_VM0", "pw", datetime.fromisoformat(START) + timedelta(seconds=cutover_at)),
        ("DC0_H0_VM1", "pw", None),
    ]
    assert items["DC0_H0_VM0"].job_id == "job-DC0_H0_VM0"
    assert (items["DC0_H0_VM0"].actual_total_ms, items["DC0_H0_VM0"].actual_downtime_ms) == (
        1500,
        300,
    )


def test_plan_run_imports_a_live_import_item_at_once_with_its_strategy(
    store: Store, tmp_path: Path
) -> None:
    plan_id = made_plan(
        store,
        tmp_path,
        PLAN.replace("destination: kvm1}", "destination: kvm1, strategy: live-import}"),
    )
    calls: list[tuple[str, str, datetime | None]] = []

    def fake_import(item: PlanItem, _spec: PlanSpec, terms: ImportTerms,
                    _note: object, _store: Store) -> ImportItemResult:  # fmt: skip
        calls.append((item.vm, item.strategy, terms.cutover_at))
        return ImportItemResult(f"job-{item.vm}", 1500, 750)

    record = run_plan(plan_id, store=store, password=lambda _s: "pw", import_fn=fake_import,
                      poll_s=0.01)  # fmt: skip
    assert record.status is PlanStatus.COMPLETED
    assert sorted(calls) == [("DC0_H0_VM0", "live-import", None), ("DC0_H0_VM1", "cold", None)]
    live = next(i for i in record.items if i.vm == "DC0_H0_VM0")
    assert live.prediction["import"]["cutover_at_s"] is None and live.prediction["import"]["start"]
    assert live.actual_downtime_ms == 750


def test_under_a_fleet_budget_each_import_reads_at_the_bandwidth_its_schedule_gave(
    store: Store, tmp_path: Path
) -> None:
    """0.1 Gbit/s for the fleet: each import (one at a time from the source) is given
    100 Mbit/s by the planner, so it reads at most 11 MiB/s (whole MiB/s, rounded down)."""
    plan_id = made_plan(store, tmp_path, PLAN.replace(
        "vms:\n", "fleet: {bandwidth_budget_gbps: 0.1}\nvms:\n"))  # fmt: skip
    given: dict[str, int | None] = {}

    def fake_import(item: PlanItem, _spec: PlanSpec, terms: ImportTerms,
                    _note: object, _store: Store) -> ImportItemResult:  # fmt: skip
        given[item.vm] = terms.bandwidth_mib_s
        return ImportItemResult(f"job-{item.vm}", 10, None)

    record = run_plan(plan_id, store=store, password=lambda _s: "pw", import_fn=fake_import,
                      poll_s=0.01)  # fmt: skip
    assert record.status is PlanStatus.COMPLETED
    planned = {m["vm"]: m["bandwidth_mbps"] for m in record.schedule["migrations"]}
    assert planned == {"DC0_H0_VM0": 100, "DC0_H0_VM1": 100}
    assert given == {"DC0_H0_VM0": 11, "DC0_H0_VM1": 11}


def test_a_warm_import_cancelled_before_its_cutover_is_cancelled_in_the_plan(
    store: Store, tmp_path: Path
) -> None:
    plan_id = made_plan(store, tmp_path)

    def cancelled(item: PlanItem, *_args: object) -> ImportItemResult:
        if item.strategy == "warm":
            raise WarmCancelledError("job j was cancelled before its cutover")
        return ImportItemResult("job-cold", 10, None)

    record = run_plan(plan_id, store=store, password=lambda _s: "pw", import_fn=cancelled,
                      poll_s=0.01)  # fmt: skip
    assert record.status is PlanStatus.FAILED
    warm = next(i for i in record.items if i.strategy == "warm")
    assert warm.status is ItemStatus.CANCELLED
    assert warm.reason == "job j was cancelled before its cutover"


def test_an_imports_downtime_runs_from_the_vm_stopped_to_its_start_on_kvm() -> None:
    """The notes the import really gives (service.vsphere_warm, vsphere_import, import_vm)."""
    warm = [(1.0, "precopy 1: 0.4 MiB changed, copied"), (5.0, "cutover: stopping db 1"),
            (5.1, "shutting db 1 down through VMware Tools"), (9.0, "defining db 1 on kvm1"),
            (9.5, "starting db 1"), (40.0, "00:0c:29:00:00:01: addresses kept")]  # fmt: skip
    assert stop_to_start_ms(warm) == 4500
    forced = [(2.0, "powering db1 off (--force: its guest is not asked)"), (3.0, "starting db1")]
    assert stop_to_start_ms(forced) == 1000
    assert stop_to_start_ms([(2.0, "db1 is powered off: read as it is"),
                             (3.0, "starting db1")]) is None  # fmt: skip
    live = [(1.0, "shutting web down through VMware Tools"),
            (1.2, "defining web on kvm1 over the datastore's disks"),
            (1.75, "web runs on kvm1 (750 ms after the stop began); streaming its disks from "
                   "the datastore"),
            (30.0, "disk 0: streamed; it no longer reads the datastore")]  # fmt: skip
    assert stop_to_start_ms(live) == 750
