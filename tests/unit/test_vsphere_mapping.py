"""The pure parts of vSphere sources, with hand-made input: the URL `sources add` takes,
and a VM's properties -> :class:`VsphereVm` -> the `inventory --source --json` schema."""

from __future__ import annotations

import dataclasses

import pytest

from vmferry.errors import BadInputError
from vmferry.imports.placement_settings import placement_findings
from vmferry.model.finding import Severity
from vmferry.model.jsonable import to_jsonable
from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.model.vsphere import (
    RawAllocation,
    RawDisk,
    RawNic,
    RawVm,
    VsphereDisk,
    VsphereNic,
    VsphereSource,
)
from vmferry.sources.vsphere_inventory import placement_from_raw, vm_from_raw, vms_from_raw
from vmferry.sources.vsphere_url import VsphereAddress, parse_vsphere_url

NETWORKS = {"network-7": "VM Network", "dvportgroup-13": "prod-pg"}


def raw(name: str = "web1", uuid: str | None = "4210-aa", **props: object) -> RawVm:
    base: dict[str, object] = {
        "name": name, "config.uuid": uuid, "runtime.powerState": "poweredOff",
        "config.hardware.numCPU": 4, "config.hardware.memoryMB": 8192,
        "config.guestFullName": "Debian GNU/Linux 12 (64-bit)",
        "config.guestId": "debian12_64Guest",
        "config.firmware": "efi", "config.changeTrackingEnabled": True,
        "guest.toolsRunningStatus": "guestToolsRunning",
        "summary.storage.committed": 5368709120,
    }  # fmt: skip
    base.update(props)
    return RawVm(base, [RawDisk("[ds1] web1/web1.vmdk", 21474836480, 20971520)],
                 [RawNic("00:50:56:AB:CD:EF", portgroup_key="dvportgroup-13")])  # fmt: skip


def test_a_vm_maps_to_the_contract_in_order() -> None:
    vm = vm_from_raw(raw(), NETWORKS)
    assert vm is not None
    assert to_jsonable(vm) == {
        "name": "web1", "uuid": "4210-aa", "power_state": "poweredOff", "vcpus": 4,
        "memory_mb": 8192, "guest_os": "Debian GNU/Linux 12 (64-bit)",
        "disks": [{"path": "[ds1] web1/web1.vmdk", "capacity_bytes": 21474836480}],
        "nics": [{"mac": "00:50:56:ab:cd:ef", "network": "prod-pg"}],
        "guest_id": "debian12_64Guest", "firmware": "efi", "cbt_enabled": True,
        "tools_state": "guestToolsRunning",
        "placement": {f.name: None for f in dataclasses.fields(PlacementSettings)},
        "placement_findings": [],
        "guest_addresses": [], "guest_gateway": None, "guest_dns": [],
        "committed_bytes": 5368709120,
    }  # fmt: skip
    assert list(to_jsonable(vm))[:8] == ["name", "uuid", "power_state", "vcpus", "memory_mb",
                                         "guest_os", "disks", "nics"]  # fmt: skip


def test_a_disk_size_only_in_kib_is_counted_in_bytes() -> None:
    only_kb = RawVm(raw().properties, [RawDisk("[ds1] a.vmdk", None, 1024)], [])
    vm = vm_from_raw(only_kb, {})
    assert vm is not None and vm.disks == (VsphereDisk("[ds1] a.vmdk", 1048576),)


@pytest.mark.parametrize(
    ("nic", "network"),
    [
        (RawNic("00:50:56:00:00:01", network="network-7", device_name="VM Network"), "VM Network"),
        (RawNic("00:50:56:00:00:01", portgroup_key="dvportgroup-13"), "prod-pg"),
        (RawNic("00:50:56:00:00:01", device_name="nsx-segment"), "nsx-segment"),
        (RawNic("00:50:56:00:00:01", portgroup_key="dvportgroup-99"), "dvportgroup-99"),
        (RawNic("00:50:56:00:00:01"), None),
    ],
)
def test_a_nic_names_its_network(nic: RawNic, network: str | None) -> None:
    vm = vm_from_raw(RawVm(raw().properties, [], [nic]), NETWORKS)
    assert vm is not None and vm.nics == (VsphereNic("00:50:56:00:00:01", network),)


def test_a_vm_without_configuration_is_left_out_and_the_rest_sorted() -> None:
    found = vms_from_raw([raw("db1", "2"), raw("being-created", None), raw("app1", "1")], {})
    assert [vm.name for vm in found] == ["app1", "db1"]


def test_missing_or_odd_properties_have_plain_defaults() -> None:
    bare = RawVm({"config.uuid": "u1", "config.hardware.numCPU": True,
                  "config.changeTrackingEnabled": "yes"}, [], [])  # fmt: skip
    vm = vm_from_raw(bare, {})
    assert vm is not None
    assert (vm.name, vm.power_state, vm.vcpus, vm.memory_mb, vm.guest_os) == (
        "u1", "unknown", 0, 0, None)  # fmt: skip
    assert vm.cbt_enabled is False and vm.tools_state is None


# Each placement property as the driver hands it over -> the setting it records.
PLACEMENT_CASES = [
    ({"config.cpuAffinity": (0, 1)}, "cpu_affinity",
     SourceSetting("config.cpuAffinity.affinitySet", "0,1")),
    ({"config.memoryAffinity": (1,)}, "numa_node_affinity",
     SourceSetting("config.memoryAffinity.affinitySet", "1")),
    ({"config.cpuAllocation": RawAllocation(reservation=1500)}, "cpu_reservation",
     SourceSetting("config.cpuAllocation.reservation", "1500")),
    ({"config.cpuAllocation": RawAllocation(limit=3000)}, "cpu_limit",
     SourceSetting("config.cpuAllocation.limit", "3000")),
    ({"config.cpuAllocation": RawAllocation(shares_level="high", shares=8000)}, "cpu_shares",
     SourceSetting("config.cpuAllocation.shares", "high")),
    ({"config.memoryAllocation": RawAllocation(reservation=2048)}, "memory_reservation",
     SourceSetting("config.memoryAllocation.reservation", "2048")),
    ({"config.memoryAllocation": RawAllocation(limit=1024)}, "memory_limit",
     SourceSetting("config.memoryAllocation.limit", "1024")),
    ({"config.memoryAllocation": RawAllocation(shares_level="custom", shares=500)},
     "memory_shares", SourceSetting("config.memoryAllocation.shares", "custom (500)")),
    ({"config.memoryReservationLockedToMax": True}, "memory_pinned",
     SourceSetting("config.memoryReservationLockedToMax", "true")),
    ({"config.latencySensitivity": "high"}, "latency_sensitivity",
     SourceSetting("config.latencySensitivity.level", "high")),
    ({"config.cpuHotAddEnabled": True}, "cpu_hot_add",
     SourceSetting("config.cpuHotAddEnabled", "true")),
    ({"config.memoryHotAddEnabled": True}, "memory_hot_add",
     SourceSetting("config.memoryHotAddEnabled", "true")),
]  # fmt: skip


@pytest.mark.parametrize(("props", "field", "setting"), PLACEMENT_CASES,
                         ids=[c[1] for c in PLACEMENT_CASES])  # fmt: skip
def test_each_vsphere_placement_property_is_recorded(
    props: dict[str, object], field: str, setting: SourceSetting
) -> None:
    vm = vm_from_raw(raw(**props), NETWORKS)
    assert vm is not None and vm.placement == PlacementSettings(**{field: setting})


def test_vsphere_placement_covers_every_setting_but_the_guest_numa_layout() -> None:
    fields = {f.name for f in dataclasses.fields(PlacementSettings)}
    assert {field for _p, field, _s in PLACEMENT_CASES} == fields - {"numa_vcpus_per_node"}


def test_vsphere_defaults_record_nothing() -> None:
    defaults = {
        "config.cpuAffinity": (), "config.memoryAffinity": (),
        "config.cpuAllocation": RawAllocation(0, -1, "normal", 4000),
        "config.memoryAllocation": RawAllocation(0, -1, "normal", 81920),
        "config.memoryReservationLockedToMax": False, "config.latencySensitivity": "normal",
        "config.cpuHotAddEnabled": False, "config.memoryHotAddEnabled": False,
    }  # fmt: skip
    assert placement_from_raw(raw(**defaults).properties) == PlacementSettings()
    memory_sized_limit = {"config.memoryAllocation": RawAllocation(0, 8192, "normal", 81920)}
    vm = vm_from_raw(raw(**memory_sized_limit), NETWORKS)  # 8192 MB: a limit of all of it
    assert vm is not None and vm.placement == PlacementSettings()


def test_vsphere_cpu_affinity_gives_the_vmx_finding_naming_the_property() -> None:
    """The same pure function as a file import's: the same id, severity and remediation."""
    vm = vm_from_raw(raw(**{"config.cpuAffinity": (0, 1)}), NETWORKS)
    assert vm is not None
    [found] = placement_findings(vm.placement)
    assert (found.id, found.severity) == ("import.placement.cpu_affinity", Severity.WARNING)
    assert found.message.startswith("config.cpuAffinity.affinitySet = 0,1 is not carried over")
    assert "virsh vcpupin" in found.remediation


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("vsphere://root@esx1", VsphereAddress("root", "esx1", 443)),
        ("vsphere://admin@vc.example.org:8443", VsphereAddress("admin", "vc.example.org", 8443)),
        ("vsphere://administrator@vsphere.local@vc1:443",
         VsphereAddress("administrator@vsphere.local", "vc1", 443)),
        ("vsphere://administrator%40vsphere.local@vc1/",
         VsphereAddress("administrator@vsphere.local", "vc1", 443)),
        ("vsphere://u@[fd00::5]:9443", VsphereAddress("u", "fd00::5", 9443)),
    ],
)  # fmt: skip
def test_vsphere_urls(url: str, address: VsphereAddress) -> None:
    assert parse_vsphere_url(url) == address


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://root@esx1", "is not a vSphere URL"),
        ("vsphere://esx1", "needs a user and a host"),
        ("vsphere://root@", "needs a user and a host"),
        ("vsphere://root:secret@esx1", "holds a password"),
        ("vsphere://root@esx1/sdk", "more than a user, host and port"),
        ("vsphere://root@esx1?dc=x", "more than a user, host and port"),
        ("vsphere://root@esx1:99999", "is not a vSphere URL"),
        ("vsphere://root@esx1:0", "port 0"),
    ],
)
def test_bad_vsphere_urls_are_refused(url: str, says: str) -> None:
    with pytest.raises(BadInputError, match=says):
        parse_vsphere_url(url)


def test_a_source_url_round_trips() -> None:
    for source in (VsphereSource("a", "vc1", 443, "administrator@vsphere.local"),
                   VsphereSource("b", "fd00::5", 9443, "u")):  # fmt: skip
        address = parse_vsphere_url(source.url)
        assert (address.user, address.host, address.port) == (source.user, source.host,
                                                              source.port)  # fmt: skip
