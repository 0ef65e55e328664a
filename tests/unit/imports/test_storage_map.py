"""--storage-map: a vSphere VM's disks to pools by datastore, checked before anything moves
(an unmapped datastore blocks; each pool is checked with the disks it takes)."""

from __future__ import annotations

from dataclasses import replace

import defusedxml.ElementTree as SafeET

from vmferry.imports.domain_xml import render_domain_xml
from vmferry.imports.findings import evaluate
from vmferry.imports.mapping import ImportOptions, datastore_of, plan_import
from vmferry.model.import_target import DestinationFacts, PoolFacts
from vmferry.model.source_vm import GuestOs, ImageFormat, SourceDisk, SourceFormat, SourceVm

GIB = 2**30


def vm() -> SourceVm:
    return SourceVm(
        name="db1", source_format=SourceFormat.VSPHERE, vcpus=2, memory_mb=2048,
        guest_os=GuestOs("linux", "debian10_64Guest", ""),
        disks=(SourceDisk("[ssd-01] db1/db1.vmdk", ImageFormat.VMDK, 16 * GIB, "pvscsi", 0, 0),
               SourceDisk("[sata-02] db1/db1_1.vmdk", ImageFormat.VMDK, 64 * GIB, "pvscsi",
                          0, 1)),
    )  # fmt: skip


def dest(**pools: int) -> DestinationFacts:
    return DestinationFacts(
        "kvm1", frozenset({"vmnet"}),
        {name: PoolFacts(name, f"/pools/{name}", free * GIB, reachable=True)
         for name, free in pools.items()},
        frozenset(),
    )  # fmt: skip


def ids(found: list[object]) -> list[str]:
    return [f.id for f in found]  # type: ignore[attr-defined]


def test_each_datastore_goes_to_its_pool_and_the_xml_says_so() -> None:
    options = ImportOptions(storage_map={"ssd-01": "fast", "sata-02": "bulk"})
    plan = plan_import(vm(), options, dest(fast=100, bulk=500))
    assert [(d.source_datastore, d.pool) for d in plan.disks] == [("ssd-01", "fast"),
                                                                   ("sata-02", "bulk")]  # fmt: skip
    found = evaluate(vm(), plan, dest(fast=100, bulk=500))
    assert not [i for i in ids(found) if i.startswith(("import.pool", "import.storage"))]
    sources = [e.attrib for e in SafeET.fromstring(render_domain_xml(plan)).iter("source")
               if "volume" in e.attrib]  # fmt: skip
    assert [(s["pool"], s["volume"]) for s in sources] == [("fast", "db1-disk0.qcow2"),
                                                           ("bulk", "db1-disk1.qcow2")]  # fmt: skip


def test_a_datastore_the_map_does_not_name_blocks_and_star_catches_the_rest() -> None:
    options = ImportOptions(storage_map={"ssd-01": "fast"})
    plan = plan_import(vm(), options, dest(fast=100))
    assert plan.disks[1].pool is None
    found = evaluate(vm(), plan, dest(fast=100))
    (unmapped,) = [f for f in found if f.id == "import.storage.unmapped"]
    assert "datastore 'sata-02', which --storage-map does not name" in unmapped.message
    assert "--storage-map 'sata-02=POOL'" in unmapped.remediation
    star = plan_import(vm(), replace(options, storage_map={"ssd-01": "fast", "*": "bulk"}),
                       dest(fast=100, bulk=500))  # fmt: skip
    assert [d.pool for d in star.disks] == ["fast", "bulk"]


def test_each_pool_is_checked_with_its_own_disks() -> None:
    options = ImportOptions(storage_map={"ssd-01": "fast", "sata-02": "bulk"})
    small = dest(fast=100, bulk=10)  # 64 GiB do not fit in bulk; 16 GiB fit in fast
    found = evaluate(vm(), plan_import(vm(), options, small), small)
    space = [f for f in found if f.id in ("import.disk.space", "import.disk.overcommit")]
    assert [f.message for f in space] == [
        "the disks hold 64.0 GiB but pool 'bulk' has 10.0 GiB free"]  # fmt: skip
    missing = dest(fast=100)
    assert "import.pool.missing" in ids(evaluate(vm(), plan_import(vm(), options, missing),
                                                 missing))  # fmt: skip


def test_without_a_map_every_disk_goes_to_the_storage_pool() -> None:
    plan = plan_import(vm(), ImportOptions(storage_pool="default"), dest(default=500))
    assert [d.pool for d in plan.disks] == ["default", "default"]
    assert datastore_of("/src/disk.vmdk") is None and datastore_of("[a b] x/y.vmdk") == "a b"
