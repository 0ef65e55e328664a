"""Pre-flight rules for live migration (vmferry check) on hand-built facts: pure, no lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vmferry.assess.preflight import (
    MEMORY_MARGIN_BYTES,
    CpuCheck,
    CpuVerdict,
    DiskPlacement,
    DiskReach,
    NetworkFacts,
    PoolFacts,
    PreflightFacts,
    address_family,
    evaluate,
)
from vmferry.cli.check_cmd import report_json
from vmferry.drivers.libvirt_facts import _missing_features, cpu_xml_of, gather_preflight_facts
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.model import (
    Disk,
    DiskDevice,
    Finding,
    Host,
    HostDevice,
    HostInfo,
    Nic,
    Severity,
    VcpuPin,
    VmRecord,
    VmSpec,
    VmState,
    is_blocked,
)
from vmferry.model.jsonable import to_jsonable
from vmferry.service.check import CheckReport
from vmferry.store.db import open_store

MiB = 1024 * 1024
GiB = 1024 * MiB

DATA = Disk(
    target="vda",
    bus="virtio",
    format="qcow2",
    source="lab-shared/web1-data.qcow2",
    source_kind="volume",
    pool="lab-shared",
    capacity_bytes=16 * MiB,
    allocation_bytes=4 * MiB,
)
DATA_PATH = "/var/lib/vmferry-lab/shared/pool/web1-data.qcow2"
NIC = Nic(mac="52:54:00:12:02:64", kind="network", model="virtio", network="vmnet")


def host_info(name: str, **changes: Any) -> HostInfo:
    base = HostInfo(
        name=name,
        hostname=name,
        uri=f"qemu+tcp://{name}/system",
        hypervisor="QEMU",
        libvirt_version="9.0.0",
        cpu_model="Skylake-Client-IBRS",
        cpu_arch="x86_64",
        cpus=8,
        memory_bytes=32 * GiB,
        free_memory_bytes=16 * GiB,
    )
    return replace(base, **changes)


def spec(**changes: Any) -> VmSpec:
    base = VmSpec(
        name="web1",
        uuid="8f0c6d8e-1111-4c3b-9a5e-2b1f7d0a9c01",
        vcpus=2,
        memory_bytes=512 * MiB,
        cpu_mode="custom",
        cpu_model="qemu64",
        domain_type="qemu",
        machine="pc-i440fx-7.2",
        arch="x86_64",
        disks=(DATA,),
        nics=(NIC,),
    )
    return replace(base, **changes)


def facts(
    vm_spec: VmSpec | None = None, state: VmState = VmState.RUNNING, **changes: Any
) -> PreflightFacts:
    """Clean facts: a running VM on kvm1 that can move to kvm2 with nothing to note."""
    base = PreflightFacts(
        vm=VmRecord(host="kvm1", state=state, persistent=True, spec=vm_spec or spec()),
        source=host_info("kvm1"),
        destination=host_info("kvm2"),
        source_uri="qemu+tcp://198.18.0.11/system",
        destination_uri="qemu+tcp://198.18.0.12/system",
        source_host_uuid="6a6192af-464e-545f-aaab-becaeac9db59",
        destination_host_uuid="4d3b7202-d2ff-5415-8fe4-665ee6b6f992",
        source_migration_uri="tcp://198.18.1.11",
        destination_migration_uri="tcp://198.18.1.12",
        destination_vm_names=frozenset({"db1"}),
        destination_vm_uuids=frozenset({"00000000-0000-0000-0000-0000000000db"}),
        destination_running_vcpus=2,
        cpu=CpuCheck(CpuVerdict.SUPERSET),
        destination_networks=(
            NetworkFacts("vmnet", True, "vmbr0", ("default", "prod")),
            NetworkFacts("isolated", False, "virbr9"),
        ),
        destination_interfaces=("lo", "mgmt0", "mig0", "vmbr0", "br-storage"),
        disks=(DiskPlacement("vda", DATA_PATH, DiskReach.SHARED, "lab-shared", 16 * MiB),),
        destination_pools=(
            PoolFacts("default", True, "/var/lib/libvirt/images", 100 * GiB),
            PoolFacts("lab-shared", True, "/var/lib/vmferry-lab/shared/pool", 100 * GiB),
        ),
    )
    return replace(base, **changes)


def ids(findings: list[Finding]) -> list[str]:
    return [f.id for f in findings]


def only(findings: list[Finding], finding_id: str) -> Finding:
    matching = [f for f in findings if f.id == finding_id]
    assert len(matching) == 1, findings
    return matching[0]


# -- the clean case and the shape of a finding -------------------------------------------


def test_clean_facts_give_no_findings() -> None:
    assert evaluate(facts()) == []
    assert evaluate(facts(state=VmState.BLOCKED)) == []  # running, waiting on I/O
    assert not is_blocked(evaluate(facts()))


def test_every_finding_is_well_formed() -> None:
    messy = facts(
        spec(
            vcpus=16,
            host_devices=(HostDevice("pci", "0000:03:00.0"),),
            vcpu_pins=(VcpuPin(0, "2"),),
            nics=(NIC, Nic(mac="52:54:00:00:00:02", kind="bridge", bridge="br-gone")),
        ),
        state=VmState.SHUT_OFF,
        cpu=CpuCheck(CpuVerdict.INCOMPATIBLE, "x", ("avx512f",)),
        destination_vm_names=frozenset({"web1"}),
        disks=(),
    )
    findings = evaluate(messy)
    assert len(findings) >= 8
    for f in findings:
        assert isinstance(f.severity, Severity)
        assert f.id.count(".") == 1 and f.id == f.id.lower() and " " not in f.id
        assert f.message
        if f.severity is Severity.BLOCKER:
            assert f.remediation, f"blocker {f.id} says nothing about what to do"


# -- destination and VM state -----------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"destination_host_uuid": "6A6192AF-464E-545F-AAAB-BECAEAC9DB59"},
        {"destination_uri": "QEMU+TCP://198.18.0.11/system/", "destination_host_uuid": None},
        {
            "destination": host_info("kvm1"),
            "destination_host_uuid": None,
            "destination_uri": "qemu+ssh://kvm1/system",
        },
    ],
    ids=["same-host-uuid", "same-uri", "same-name"],
)
def test_destination_that_is_the_source_is_a_blocker(changes: dict[str, Any]) -> None:
    findings = evaluate(facts(destination_vm_names=frozenset({"web1"}), **changes))
    # only the same-host blocker: comparing a host with itself would just add noise
    assert ids(findings) == ["destination.same-host"]
    assert "choose another host" in findings[0].remediation


def test_same_host_still_reports_the_vm_state() -> None:
    findings = evaluate(
        facts(state=VmState.SHUT_OFF, destination_host_uuid="6a6192af-464e-545f-aaab-becaeac9db59")
    )
    assert ids(findings) == ["destination.same-host", "vm.not-running"]


def test_unknown_host_uuids_do_not_make_hosts_equal() -> None:
    assert evaluate(facts(source_host_uuid=None, destination_host_uuid=None)) == []


@pytest.mark.parametrize(
    "state",
    [VmState.SHUT_OFF, VmState.CRASHED, VmState.SUSPENDED, VmState.NO_STATE, VmState.SHUTTING_DOWN],
)
def test_vm_that_is_not_running_is_a_blocker(state: VmState) -> None:
    finding = only(evaluate(facts(state=state)), "vm.not-running")
    assert finding.severity is Severity.BLOCKER
    assert str(state) in finding.message
    assert "start it" in finding.remediation and "cold" in finding.remediation
    assert "virsh -c qemu+tcp://198.18.0.11/system start web1" in finding.remediation


def test_a_vm_libvirt_holds_for_a_migration_is_blocked_not_checked_without_devices() -> None:
    """Its devices could not be read (a post-copy running or broken off): one blocker, which
    says why, rather than the checks of a VM without disks."""
    base = facts()
    held = replace(base.vm, spec=replace(base.vm.spec, disks=(), nics=()), devices_read=False)
    finding = only(evaluate(replace(base, vm=held)), "vm.held")
    assert finding.severity is Severity.BLOCKER
    assert finding.message == (
        "libvirt holds VM 'web1' on kvm1 for a migration job, so its devices could not be read"
    )
    assert "virsh -c qemu+tcp://198.18.0.11/system domjobinfo web1" in finding.remediation
    assert "vm.held" not in ids(evaluate(base))


def test_paused_vm_can_move_live_with_a_note() -> None:
    findings = evaluate(facts(state=VmState.PAUSED))
    assert ids(findings) == ["vm.paused"] and findings[0].severity is Severity.INFO


def test_other_copies_and_unanswered_hosts_are_noted() -> None:
    findings = evaluate(facts(vm_also_defined_on=("kvm3",), unsearched_hosts=("kvm4",)))
    assert ids(findings) == ["vm.hosts-unsearched", "vm.defined-elsewhere"]
    assert findings[0].severity is Severity.WARNING and "kvm4" in findings[0].message
    assert findings[1].severity is Severity.INFO and "kvm3" in findings[1].message


def test_name_already_defined_on_destination_is_a_blocker() -> None:
    finding = only(evaluate(facts(destination_vm_names=frozenset({"db1", "web1"}))),
                   "destination.name-exists")  # fmt: skip
    assert finding.severity is Severity.BLOCKER and "kvm2" in finding.message
    assert "undefine web1" in finding.remediation
    assert "same UUID" not in finding.message


def test_name_and_uuid_on_destination_is_one_blocker() -> None:
    findings = evaluate(facts(destination_vm_names=frozenset({"web1"}),
                              destination_vm_uuids=frozenset({spec().uuid})))  # fmt: skip
    assert ids(findings) == ["destination.name-exists"]
    assert "same UUID" in findings[0].message


def test_uuid_already_defined_under_another_name_is_a_blocker() -> None:
    finding = only(evaluate(facts(destination_vm_uuids=frozenset({spec().uuid}))),
                   "destination.uuid-exists")  # fmt: skip
    assert finding.severity is Severity.BLOCKER and spec().uuid in finding.message


# -- CPU --------------------------------------------------------------------------------


@pytest.mark.parametrize("verdict", [CpuVerdict.IDENTICAL, CpuVerdict.SUPERSET])
def test_compatible_cpu_gives_nothing(verdict: CpuVerdict) -> None:
    assert evaluate(facts(cpu=CpuCheck(verdict))) == []


def test_incompatible_cpu_names_the_missing_features() -> None:
    cpu = CpuCheck(CpuVerdict.INCOMPATIBLE, "Host CPU does not provide required features: "
                   "avx512f, rtm", ("avx512f", "rtm"))  # fmt: skip
    finding = only(evaluate(facts(spec(cpu_model="Icelake-Server"), cpu=cpu)), "cpu.incompatible")
    assert finding.severity is Severity.BLOCKER
    assert "Icelake-Server" in finding.message and "kvm2 lacks: avx512f, rtm" in finding.message
    assert "hypervisor-cpu-baseline" in finding.remediation


# -- the hypervisor ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["7.2.22", "8.2.2", "5.2.0"])
def test_a_tcg_guest_on_qemu_before_9_cannot_move_live(version: str) -> None:
    found = evaluate(facts(source=host_info("kvm1", hypervisor_version=version)))
    lost = only(found, "migration.tcg-lost-writes")
    assert lost.severity is Severity.BLOCKER
    assert f"QEMU {version} on kvm1" in lost.message and "TCG" in lost.message
    assert "--strategy warm or cold" in (lost.remediation or "")
    assert is_blocked(found)


@pytest.mark.parametrize(
    ("domain_type", "version"),
    [("qemu", "9.0.0"), ("qemu", "10.0.2"), ("kvm", "7.2.22"), ("qemu", None), ("qemu", "x.y")],
)
def test_kvm_guests_new_qemu_and_unknown_versions_move_live(
    domain_type: str, version: str | None
) -> None:
    found = evaluate(facts(spec(domain_type=domain_type),
                           source=host_info("kvm1", hypervisor_version=version)))  # fmt: skip
    assert "migration.tcg-lost-writes" not in ids(found)


def test_incompatible_cpu_without_features_shows_libvirts_message() -> None:
    cpu = CpuCheck(CpuVerdict.INCOMPATIBLE, "the CPU is incompatible with host CPU")
    finding = only(evaluate(facts(cpu=cpu)), "cpu.incompatible")
    assert "the CPU is incompatible with host CPU" in finding.message


def test_cpu_that_could_not_be_compared_is_a_warning() -> None:
    cpu = CpuCheck(CpuVerdict.UNKNOWN, "unsupported machine type pc-q35-9.9")
    finding = only(evaluate(facts(cpu=cpu)), "cpu.unverified")
    assert finding.severity is Severity.WARNING and "pc-q35-9.9" in finding.message


@pytest.mark.parametrize("mode", ["host-passthrough", "maximum"])
def test_host_passthrough_is_a_warning_whatever_the_compare_said(mode: str) -> None:
    vm = spec(cpu_mode=mode, cpu_model=None)
    finding = only(
        evaluate(facts(vm, cpu=CpuCheck(CpuVerdict.NOT_COMPARED))), "cpu.host-passthrough"
    )
    assert finding.severity is Severity.WARNING
    assert "identical CPUs" in finding.message and mode in finding.message
    assert "most likely fail" not in finding.message  # same host CPU model on both


def test_host_passthrough_between_different_cpu_models_says_so() -> None:
    vm = spec(cpu_mode="host-passthrough", cpu_model=None)
    f = facts(vm, destination=host_info("kvm2", cpu_model="EPYC-Rome"))
    finding = only(evaluate(f), "cpu.host-passthrough")
    assert finding.severity is Severity.WARNING
    assert "Skylake-Client-IBRS vs EPYC-Rome" in finding.message


def test_vm_without_cpu_model_gets_a_note() -> None:
    vm = spec(cpu_mode=None, cpu_model=None)
    findings = evaluate(facts(vm, cpu=CpuCheck(CpuVerdict.NOT_COMPARED)))
    assert ids(findings) == ["cpu.default-model"] and findings[0].severity is Severity.INFO


# -- memory and vCPUs -------------------------------------------------------------------


def test_memory_needs_the_vm_plus_a_margin() -> None:
    exact = 512 * MiB + MEMORY_MARGIN_BYTES
    assert evaluate(facts(destination=host_info("kvm2", free_memory_bytes=exact))) == []
    short = host_info("kvm2", free_memory_bytes=exact - 1)
    finding = only(evaluate(facts(destination=short)), "capacity.memory")
    assert finding.severity is Severity.BLOCKER
    assert "512 MiB" in finding.message and "margin" in finding.message


def test_more_vcpus_than_destination_cpus_is_a_blocker() -> None:
    assert evaluate(facts(spec(vcpus=6))) == []  # 6 + 2 running = 8 CPUs: fits
    finding = only(evaluate(facts(spec(vcpus=9))), "capacity.vcpus")
    assert finding.severity is Severity.BLOCKER and "9 vCPUs" in finding.message
    assert "capacity.vcpu-overcommit" not in ids(evaluate(facts(spec(vcpus=9))))


def test_vcpu_overcommit_is_a_warning() -> None:
    finding = only(evaluate(facts(spec(vcpus=7))), "capacity.vcpu-overcommit")
    assert finding.severity is Severity.WARNING and "9:8" in finding.message


# -- storage ----------------------------------------------------------------------------

LOCAL = Disk(
    target="vdb",
    bus="virtio",
    format="qcow2",
    source="/var/lib/libvirt/images/web1-local.qcow2",
    capacity_bytes=10 * GiB,
    allocation_bytes=2 * GiB,
)
LOCAL_AT = DiskPlacement("vdb", LOCAL.source, DiskReach.LOCAL, "default")


def local_facts(**changes: Any) -> PreflightFacts:
    base = facts(spec(disks=(DATA, LOCAL)))
    return replace(base, disks=(*base.disks, LOCAL_AT), **changes)


def test_local_disk_without_copy_storage_is_a_blocker() -> None:
    finding = only(evaluate(local_facts()), "storage.not-shared")
    assert finding.severity is Severity.BLOCKER
    assert f"disk vdb ({LOCAL.source}) is on storage only kvm1 sees" in finding.message
    assert "--copy-storage" in finding.remediation


def test_disk_without_placement_is_taken_as_local() -> None:
    f = replace(facts(spec(disks=(DATA, LOCAL))))
    assert "storage.not-shared" in ids(evaluate(f))


def test_local_disk_with_copy_storage_is_copied_with_a_note() -> None:
    findings = evaluate(local_facts(copy_storage=True))
    assert ids(findings) == ["storage.copy"]
    assert "vdb" in findings[0].message and "'default'" in findings[0].message
    assert "vda" not in findings[0].message  # the shared disk is not copied


def test_copy_storage_needs_the_allocation_free_in_the_target_pool() -> None:
    pools = (PoolFacts("default", True, "/var/lib/libvirt/images", 1 * GiB),)
    findings = evaluate(local_facts(copy_storage=True, destination_pools=pools))
    finding = only(findings, "storage.copy-space")
    assert finding.severity is Severity.BLOCKER
    assert "1024 MiB free" in finding.message and "2048 MiB" in finding.message
    assert "storage.copy" not in ids(findings)


def test_copy_storage_into_a_pool_too_small_for_full_growth_is_a_warning() -> None:
    pools = (PoolFacts("default", True, "/var/lib/libvirt/images", 5 * GiB),)
    findings = evaluate(local_facts(copy_storage=True, destination_pools=pools))
    assert ids(findings) == ["storage.copy-space-thin", "storage.copy"]
    assert findings[0].severity is Severity.WARNING


def test_copy_storage_sums_the_disks_going_into_one_pool() -> None:
    other = replace(LOCAL, target="vdc", source="/var/lib/libvirt/images/web1-more.qcow2")
    base = facts(spec(disks=(DATA, LOCAL, other)))
    pools = (PoolFacts("default", True, "/var/lib/libvirt/images", 3 * GiB),)
    f = replace(base, disks=(*base.disks, LOCAL_AT, replace(LOCAL_AT, target="vdc")),
                copy_storage=True, destination_pools=pools)  # fmt: skip
    finding = only(evaluate(f), "storage.copy-space")
    assert "vdb, vdc" in finding.message and "4096 MiB" in finding.message


def test_copy_storage_without_a_target_pool_is_a_blocker() -> None:
    f = replace(
        local_facts(copy_storage=True), disks=(facts().disks[0], replace(LOCAL_AT, copy_pool=None))
    )
    finding = only(evaluate(f), "storage.copy-target-missing")
    assert finding.severity is Severity.BLOCKER
    assert "/var/lib/libvirt/images" in finding.message
    assert "pool-define-as" in finding.remediation


def test_copy_storage_of_a_volume_names_the_missing_pool() -> None:
    vol = replace(DATA, target="vdb", source="fast/web1-db.qcow2", pool="fast")
    base = facts(spec(disks=(DATA, vol)), copy_storage=True)
    f = replace(
        base, disks=(*base.disks, DiskPlacement("vdb", "/srv/fast/web1-db.qcow2", DiskReach.LOCAL))
    )
    finding = only(evaluate(f), "storage.copy-target-missing")
    assert "storage pool named 'fast'" in finding.message


def test_copy_storage_into_an_inactive_pool_is_a_blocker() -> None:
    pools = (PoolFacts("default", False, "/var/lib/libvirt/images", None),)
    finding = only(evaluate(local_facts(copy_storage=True, destination_pools=pools)),
                   "storage.copy-pool-inactive")  # fmt: skip
    assert "pool-start default" in finding.remediation


SHARED_POOL_DIR = "/var/lib/vmferry-lab/shared/pool"


def test_copy_storage_to_a_named_pool_goes_there() -> None:
    into = replace(
        LOCAL_AT, copy_pool="lab-shared", copy_path=f"{SHARED_POOL_DIR}/web1-local.qcow2"
    )
    f = replace(local_facts(copy_storage=True, copy_to_pool="lab-shared"),
                disks=(facts().disks[0], into))  # fmt: skip
    (finding,) = evaluate(f)
    assert finding.id == "storage.copy" and "into pool 'lab-shared'" in finding.message


def test_copy_storage_to_a_pool_the_destination_lacks_names_it() -> None:
    f = replace(local_facts(copy_storage=True, copy_to_pool="fast"),
                disks=(facts().disks[0], replace(LOCAL_AT, copy_pool=None)))  # fmt: skip
    finding = only(evaluate(f), "storage.copy-target-missing")
    assert "kvm2 has no storage pool named 'fast'" in finding.message
    assert "--to-pool" in finding.remediation and "pool-list" in finding.remediation


def test_copy_storage_onto_a_file_already_in_the_named_pool_is_a_blocker() -> None:
    path = f"{SHARED_POOL_DIR}/web1-local.qcow2"
    taken = replace(LOCAL_AT, copy_pool="lab-shared", copy_path=path, copy_path_taken=True)
    f = replace(local_facts(copy_storage=True, copy_to_pool="lab-shared"),
                disks=(facts().disks[0], taken))  # fmt: skip
    finding = only(evaluate(f), "storage.copy-name-taken")
    assert finding.severity is Severity.BLOCKER
    assert f"disk vdb would be copied to {path} on kvm2, where a file already is" == (
        finding.message)  # fmt: skip
    assert "storage.copy" not in ids(evaluate(f))


def test_copy_storage_of_a_disk_of_unknown_size_is_a_warning() -> None:
    unsized = replace(LOCAL, capacity_bytes=None, allocation_bytes=None)
    base = facts(spec(disks=(DATA, unsized)), copy_storage=True)
    f = replace(base, disks=(*base.disks, LOCAL_AT))
    assert ids(evaluate(f)) == ["storage.copy-space-unverified", "storage.copy"]


def test_shared_path_holding_a_different_file_is_a_blocker() -> None:
    f = facts(disks=(DiskPlacement("vda", DATA_PATH, DiskReach.SHARED, "lab-shared", 8 * MiB),))
    finding = only(evaluate(f), "storage.path-conflict")
    assert finding.severity is Severity.BLOCKER and DATA_PATH in finding.message


def test_network_disks_are_assumed_reachable() -> None:
    rbd = Disk(target="vdb", bus="virtio", source="rbd://ceph-mon/vms/web1", source_kind="network")
    base = facts(spec(disks=(DATA, rbd)))
    f = replace(base, disks=(*base.disks, DiskPlacement("vdb", rbd.source, DiskReach.NETWORK)))
    findings = evaluate(f)
    assert ids(findings) == ["storage.network-disk"] and findings[0].severity is Severity.INFO


# -- devices that block live migration --------------------------------------------------

ISO = Disk(target="hdc", bus="ide", device=DiskDevice.CDROM, format="raw",
           source="/var/lib/libvirt/images/tools.iso", readonly=True)  # fmt: skip


def test_empty_cdrom_is_fine() -> None:
    empty = replace(ISO, source=None, source_kind="none")
    assert evaluate(facts(spec(disks=(DATA, empty)))) == []


@pytest.mark.parametrize("device", [DiskDevice.CDROM, DiskDevice.FLOPPY])
def test_removable_media_only_the_source_sees_is_a_blocker(device: DiskDevice) -> None:
    media = replace(ISO, device=device, target="hdc" if device is DiskDevice.CDROM else "fda")
    base = facts(spec(disks=(DATA, media)))
    f = replace(
        base, disks=(*base.disks, DiskPlacement(media.target, media.source, DiskReach.LOCAL))
    )
    for copy_storage in (False, True):  # a copy does not take read-only media along
        findings = evaluate(replace(f, copy_storage=copy_storage))
        assert ids(findings) == ["devices.removable-media-local"]
        assert f"virsh change-media web1 {media.target} --eject" in findings[0].remediation
        assert str(device) in findings[0].message


def test_removable_media_on_shared_storage_is_fine() -> None:
    base = facts(spec(disks=(DATA, ISO)))
    f = replace(base, disks=(*base.disks, DiskPlacement("hdc", ISO.source, DiskReach.SHARED)))
    assert evaluate(f) == []


@pytest.mark.parametrize(
    ("kind", "address"),
    [("pci", "0000:03:00.0"), ("usb", "046d:c52b"), ("scsi", "scsi_host0:0:0:0"),
     ("mdev", "c2177883-f1bb-47f0-914d-32a22e3a8804")],
)  # fmt: skip
def test_host_devices_are_blockers(kind: str, address: str) -> None:
    finding = only(
        evaluate(facts(spec(host_devices=(HostDevice(kind, address),)))), "devices.hostdev"
    )
    assert finding.severity is Severity.BLOCKER
    assert kind.upper() in finding.message and address in finding.message
    assert "detach-device" in finding.remediation


def test_each_host_device_is_its_own_finding() -> None:
    devs = (HostDevice("pci", "0000:03:00.0"), HostDevice("usb", "046d:c52b"))
    assert ids(evaluate(facts(spec(host_devices=devs)))) == ["devices.hostdev"] * 2


def test_vcpu_pinning_is_a_blocker() -> None:
    pins = (VcpuPin(0, "2"), VcpuPin(1, "3"))
    finding = only(evaluate(facts(spec(vcpu_pins=pins))), "devices.vcpu-pinning")
    assert finding.severity is Severity.BLOCKER
    assert "vCPU 0->2, vCPU 1->3" in finding.message
    assert "drop the pinning" in finding.remediation and "0-7 --live" in finding.remediation


# -- networks ---------------------------------------------------------------------------


def test_missing_network_is_a_blocker() -> None:
    nic = replace(NIC, network="prodnet")
    finding = only(evaluate(facts(spec(nics=(nic,)))), "network.missing")
    assert finding.severity is Severity.BLOCKER and "'prodnet'" in finding.message
    assert "net-define" in finding.remediation


def test_inactive_network_is_a_blocker() -> None:
    nic = replace(NIC, network="isolated")
    finding = only(evaluate(facts(spec(nics=(nic,)))), "network.inactive")
    assert "virsh -c qemu+tcp://198.18.0.12/system net-start isolated" in finding.remediation


def test_portgroup_must_exist_in_the_destination_network() -> None:
    assert evaluate(facts(spec(nics=(replace(NIC, portgroup="prod"),)))) == []
    finding = only(evaluate(facts(spec(nics=(replace(NIC, portgroup="dmz"),)))),
                   "network.portgroup-missing")  # fmt: skip
    assert finding.severity is Severity.BLOCKER and "'dmz'" in finding.message


def test_live_xml_bridge_of_a_network_is_checked_as_the_network() -> None:
    # a running VM's live XML says type='bridge' with both network and bridge
    live = Nic(mac=NIC.mac, kind="bridge", network="vmnet", bridge="vmbr0")
    assert evaluate(facts(spec(nics=(live,)), destination_interfaces=None)) == []
    gone = replace(live, network="prodnet")
    assert ids(evaluate(facts(spec(nics=(gone,))))) == ["network.missing"]


def test_plain_bridge_is_checked_against_the_destinations_interfaces() -> None:
    nic = Nic(mac="52:54:00:00:00:02", kind="bridge", bridge="br-storage")
    assert evaluate(facts(spec(nics=(nic,)))) == []
    finding = only(evaluate(facts(spec(nics=(replace(nic, bridge="br-gone"),)))),
                   "network.bridge-missing")  # fmt: skip
    assert finding.severity is Severity.BLOCKER and "'br-gone'" in finding.message


def test_plain_bridge_that_cannot_be_verified_is_a_warning() -> None:
    nic = Nic(mac="52:54:00:00:00:02", kind="bridge", bridge="br-storage")
    finding = only(evaluate(facts(spec(nics=(nic,)), destination_interfaces=None)),
                   "network.bridge-unverified")  # fmt: skip
    assert finding.severity is Severity.WARNING and "could not be verified" in finding.message
    # a bridge some libvirt network uses is known even without the interface API
    assert (
        evaluate(facts(spec(nics=(replace(nic, bridge="virbr9"),)), destination_interfaces=None))
        == []
    )


def test_direct_nic_is_a_warning_and_user_nic_is_ignored() -> None:
    direct = Nic(mac="52:54:00:00:00:03", kind="direct")
    user = Nic(mac="52:54:00:00:00:04", kind="user")
    assert ids(evaluate(facts(spec(nics=(direct, user))))) == ["network.direct-unverified"]


def test_each_nic_gets_its_own_finding_in_nic_order() -> None:
    a = replace(NIC, mac="52:54:00:00:00:0a", network="nope")
    b = replace(NIC, mac="52:54:00:00:00:0b", network="isolated")
    findings = evaluate(facts(spec(nics=(a, b))))
    assert ids(findings) == ["network.missing", "network.inactive"]
    assert "00:0a" in findings[0].message and "00:0b" in findings[1].message


# -- migration address family -----------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "family"),
    [
        ("tcp://198.18.1.11", "IPv4"),
        ("tcp://198.18.1.11:49152", "IPv4"),
        ("tcp://[fd00::11]:49152", "IPv6"),
        ("tcp://[fe80::1%25mig0]", "IPv6"),
        ("qemu+ssh://root@[2001:db8::5]/system", "IPv6"),
        ("qemu+ssh://root@kvm1.example.com/system", None),
        ("qemu:///system", None),
        ("tcp://[not-closed", None),
    ],
)
def test_address_family(uri: str, family: str | None) -> None:
    assert address_family(uri) == family


def test_migration_address_families_must_match() -> None:
    finding = only(evaluate(facts(destination_migration_uri="tcp://[fd00::12]")),
                   "migration.address-family")  # fmt: skip
    assert finding.severity is Severity.BLOCKER
    assert "IPv4" in finding.message and "IPv6" in finding.message


def test_libvirt_uri_host_is_used_without_a_migration_uri() -> None:
    f = facts(source_migration_uri=None, destination_migration_uri=None,
              destination_uri="qemu+tcp://[fd00::12]/system")  # fmt: skip
    assert ids(evaluate(f)) == ["migration.address-family"]
    assert evaluate(replace(f, destination_uri="qemu+tcp://198.18.0.12/system")) == []


def test_host_names_leave_the_address_family_unverified() -> None:
    f = facts(source_migration_uri=None, source_uri="qemu+ssh://root@kvm1/system")
    finding = only(evaluate(f), "migration.address-family-unverified")
    assert finding.severity is Severity.INFO and "kvm1" in finding.message


# -- ordering ---------------------------------------------------------------------------


def test_findings_are_ordered_by_severity_then_rule_then_device() -> None:
    messy = facts(
        spec(
            vcpus=7,
            disks=(DATA, LOCAL, replace(ISO, target="hdd", source=None, source_kind="none")),
            host_devices=(HostDevice("usb", "046d:c52b"),),
            vcpu_pins=(VcpuPin(0, "1"),),
            nics=(replace(NIC, network="nope"), Nic(mac="52:54:00:00:00:03", kind="direct")),
        ),
        state=VmState.PAUSED,
        cpu=CpuCheck(CpuVerdict.UNKNOWN, "no reason"),
        destination_vm_names=frozenset({"web1"}),
        source_migration_uri="tcp://kvm1-mig",
    )
    messy = replace(messy, disks=(*messy.disks, LOCAL_AT))
    findings = evaluate(messy)
    assert ids(findings) == [
        "destination.name-exists",
        "storage.not-shared",
        "devices.hostdev",
        "devices.vcpu-pinning",
        "network.missing",
        "cpu.unverified",
        "capacity.vcpu-overcommit",
        "network.direct-unverified",
        "vm.paused",
        "migration.address-family-unverified",
    ]
    assert evaluate(messy) == findings  # deterministic
    assert is_blocked(findings)


# -- the JSON document ------------------------------------------------------------------


def test_findings_serialize_to_the_documented_shape() -> None:
    findings = evaluate(facts(state=VmState.SHUT_OFF))
    assert to_jsonable(findings) == [
        {
            "id": "vm.not-running",
            "severity": "blocker",
            "message": findings[0].message,
            "remediation": findings[0].remediation,
        }
    ]


def test_check_json_document_is_exactly_the_documented_keys() -> None:
    findings = tuple(evaluate(facts(state=VmState.SHUT_OFF, vm_also_defined_on=("kvm3",))))
    report = CheckReport("web1", "kvm1", "kvm2", findings, is_blocked(findings))
    doc = json.loads(json.dumps(report_json(report)))
    assert list(doc) == ["vm", "destination", "findings", "blocked"]
    assert doc["vm"] == "web1" and doc["destination"] == "kvm2" and doc["blocked"] is True
    assert [list(f) for f in doc["findings"]] == [["id", "severity", "message", "remediation"]] * 2
    assert [f["severity"] for f in doc["findings"]] == ["blocker", "info"]
    assert doc["findings"] == to_jsonable(list(findings))


# -- the driver and the command on libvirt's test driver (no lab) -------------------------


def test_cpu_xml_of_keeps_only_the_cpu_element() -> None:
    xml = (
        "<domain type='qemu'><name>x</name><cpu mode='custom' match='exact'>"
        "<model fallback='forbid'>qemu64</model><feature policy='require' name='lahf_lm'/>"
        "</cpu><devices/></domain>"
    )
    cpu = cpu_xml_of(xml)
    assert cpu is not None and cpu.startswith("<cpu ") and cpu.endswith("</cpu>")
    assert "qemu64" in cpu and "lahf_lm" in cpu and "devices" not in cpu
    assert cpu_xml_of("<domain><name>x</name></domain>") is None
    assert cpu_xml_of("<domain><cpu><topology sockets='1'/></cpu></domain>") is None
    assert cpu_xml_of("<domain><cpu mode='host-model'/></domain>") == '<cpu mode="host-model" />'


def test_missing_features_are_read_from_libvirts_message() -> None:
    message = (
        "the CPU is incompatible with host CPU: Host CPU does not provide required "
        "features: vme, pcid, avx512f"
    )
    assert _missing_features(message) == ("vme", "pcid", "avx512f")
    assert _missing_features("the CPU is incompatible with host CPU") == ()


def test_facts_from_the_test_driver() -> None:
    with (
        LibvirtHost.connect("t1", "test:///default") as a,
        LibvirtHost.connect("t2", "test:///default") as b,
    ):
        f = gather_preflight_facts(a, b, "test", source_migration_uri="tcp://10.0.0.1")
    assert f.vm.spec.name == "test" and f.vm.state is VmState.RUNNING
    assert (f.source.name, f.destination.name) == ("t1", "t2")
    assert f.source_migration_uri == "tcp://10.0.0.1" and f.destination_migration_uri is None
    assert "test" in f.destination_vm_names and f.vm.spec.uuid in f.destination_vm_uuids
    assert f.destination_running_vcpus >= 2
    assert [n.name for n in f.destination_networks] == ["default"]
    assert f.destination_networks[0].active and f.destination_networks[0].bridge == "virbr0"
    assert f.destination_interfaces is not None and "eth1" in f.destination_interfaces
    assert [p.name for p in f.destination_pools] == ["default-pool"]
    # /guest/diskimage1 is in no pool of the test driver: the destination cannot see it
    assert f.disks == (DiskPlacement("vda", "/guest/diskimage1", DiskReach.LOCAL),)
    assert f.cpu.verdict is CpuVerdict.NOT_COMPARED  # the test domain has no <cpu>
    assert ids(evaluate(f)) == ["destination.same-host"]  # both are test:///default


def test_check_command_on_the_test_driver(tmp_path: Path) -> None:
    env = {**os.environ, "VMFERRY_DB": f"sqlite:///{tmp_path / 'check.db'}"}

    def vmferry(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vmferry.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    assert vmferry("hosts", "add", "t1", "test:///default").returncode == 0
    done = vmferry("check", "test", "--to", "t1", "--json")
    assert done.returncode == 3, done.stderr
    doc = json.loads(done.stdout)  # printed in full before the exit
    assert list(doc) == ["vm", "destination", "findings", "blocked"]
    assert doc["blocked"] is True
    assert [f["id"] for f in doc["findings"]] == ["destination.same-host"]
    assert done.stderr.startswith("vmferry: VM 'test' cannot move live to t1: 1 blocker")

    table = vmferry("check", "test", "--to", "t1")
    assert table.returncode == 3 and "destination.same-host" in table.stdout
    assert "blocked" in table.stdout

    # registered while it answered, silent now: exit 2 like every unreachable host
    with open_store(env["VMFERRY_DB"]) as store:
        store.add_host(Host("ghost", "qemu+tcp://198.18.255.254/system"))
    for args, what in (
        (("check", "test", "--to", "ghost"), "198.18.255.254"),
        (("check", "test", "--to", "kvm9"), "no host named 'kvm9'"),
        (("check", "nope", "--to", "t1"), "no registered host has a VM named 'nope'"),
    ):
        bad = vmferry(*args)
        assert bad.returncode == 2, bad.stderr
        assert what in bad.stderr and "Traceback" not in bad.stderr and bad.stdout == ""
