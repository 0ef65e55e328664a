"""The pure parts of `vmferry import vsphere://SOURCE/VM`, on hand-made input: a vSphere VM
as the SourceVm a VMX gives, the disks it cannot import, datastore paths and URLs, the
power-off decision and a datastore VMDK's shape."""

from __future__ import annotations

import pytest

from vmferry.errors import BadInputError
from vmferry.imports.vsphere_power import PowerAction, decide_power_off
from vmferry.model.finding import Severity
from vmferry.model.source_vm import Firmware, ImageFormat, SourceFormat, SourceVm
from vmferry.model.vsphere import RawAllocation, RawDisk, RawNic, RawVm
from vmferry.sources.vsphere_disk import remote_vmdk
from vmferry.sources.vsphere_inventory import vm_from_raw
from vmferry.sources.vsphere_vm import (
    datastore_url,
    disk_blockers,
    parse_datastore_path,
    parse_vsphere_vm_ref,
    source_vm_from_vsphere,
)

GIB = 2**30


def raw(disks: list[RawDisk] | None = None) -> RawVm:
    props = {"name": "web1", "config.uuid": "4216a1b2-0000-0000-0000-00000000abcd",
             "runtime.powerState": "poweredOn", "config.hardware.numCPU": 4,
             "config.hardware.numCoresPerSocket": 2, "config.hardware.memoryMB": 4096,
             "config.guestId": "debian12_64Guest", "config.firmware": "efi",
             "config.cpuAllocation": RawAllocation(reservation=1000)}  # fmt: skip
    disks = disks or [
        RawDisk("[ds1] web1/data.vmdk", 2 * GIB, None, bus="lsilogic", bus_number=1, unit=0),
        RawDisk("[ds1] web1/web1.vmdk", 20 * GIB, None, bus="pvscsi", bus_number=0, unit=0),
    ]
    nics = [
        RawNic("00:50:56:AB:CD:EF", portgroup_key="dvportgroup-13", model="vmxnet3"),
        RawNic("00:50:56:00:00:02", network="network-7", model="e1000e", connected=False),
    ]
    return RawVm(props, disks, nics)


def source_vm(r: RawVm) -> SourceVm:
    vm = vm_from_raw(r, {"dvportgroup-13": "prod-pg", "network-7": "VM Network"})
    assert vm is not None
    return source_vm_from_vsphere(r, vm)


def test_a_vsphere_vm_becomes_the_source_vm_a_vmx_gives() -> None:
    vm = source_vm(raw())
    assert (vm.name, vm.source_format, vm.vcpus, vm.sockets, vm.cores, vm.memory_mb) == (
        "web1", SourceFormat.VSPHERE, 4, 2, 2, 4096)  # fmt: skip
    assert vm.firmware is Firmware.EFI
    assert (vm.guest_os.family, vm.guest_os.distro, vm.guest_os.version) == (
        "linux",
        "debian",
        "12",
    )
    assert vm.uuid == "4216a1b2-0000-0000-0000-00000000abcd"
    # SCSI controller 0 first, as a VMX's scsi0:0 boots before scsi1:0
    assert [(d.path, d.bus, d.controller, d.boot_order) for d in vm.disks] == [
        ("[ds1] web1/web1.vmdk", "pvscsi", 0, 1),
        ("[ds1] web1/data.vmdk", "lsilogic", 1, 2),
    ]
    assert {d.format for d in vm.disks} == {ImageFormat.VMDK}
    assert [d.capacity_bytes for d in vm.disks] == [20 * GIB, 2 * GIB]
    assert [(n.mac, n.model, n.network, n.connected) for n in vm.nics] == [
        ("00:50:56:ab:cd:ef", "vmxnet3", "prod-pg", True),
        ("00:50:56:00:00:02", "e1000e", "VM Network", False)]  # fmt: skip
    assert vm.placement.cpu_reservation is not None  # -> the same findings as a VMX's
    assert vm.placement.cpu_reservation.key == "config.cpuAllocation.reservation"


def test_odd_topologies_and_a_missing_guest_id() -> None:
    r = raw()
    props = {**r.properties, "config.hardware.numCoresPerSocket": 3, "config.guestId": None}
    vm = source_vm(RawVm(props, r.disks, r.nics))
    assert (vm.sockets, vm.cores) == (4, 1)  # 3 does not divide 4: one core per socket
    assert vm.guest_os.family == "unknown"
    assert vm.warnings == ("web1: vSphere gives no guest OS (config.guestId)",)


@pytest.mark.parametrize(("disk", "finding"), [
    (RawDisk("[ds1] a/rdm.vmdk", GIB, None, backing="rdm"), "import.vsphere.disk_rdm"),
    (RawDisk("[ds1] a/i.vmdk", GIB, None, disk_mode="independent_persistent"),
     "import.vsphere.disk_independent"),
    (RawDisk("[ds1] a/n.vmdk", GIB, None, disk_mode="independent_nonpersistent"),
     "import.vsphere.disk_independent"),
    (RawDisk("[ds1] a/s-000001.vmdk", GIB, None, has_parent=True), "import.vsphere.disk_snapshot"),
    (RawDisk("[ds1] a/v.vmdk", GIB, None, backing="VirtualDiskVFlashCacheBackingInfo"),
     "import.vsphere.disk_backing"),
])  # fmt: skip
def test_disks_vmferry_cannot_read_are_blockers(disk: RawDisk, finding: str) -> None:
    found = disk_blockers("web1", [disk, RawDisk("[ds1] a/ok.vmdk", GIB, None)])
    assert [(f.id, f.severity) for f in found] == [(finding, Severity.BLOCKER)]
    assert found[0].message.startswith(f"web1: disk {disk.file_name} ")
    assert "\n" not in found[0].message


def test_supported_disks_give_no_finding() -> None:
    assert disk_blockers("web1", raw().disks) == []
    assert disk_blockers("web1", [RawDisk("[ds1] a/s.vmdk", 1, None, backing="sparse")]) == []


def test_datastore_paths_and_urls() -> None:
    path = parse_datastore_path("[Local DS] my vm/my vm.vmdk")
    assert (path.datastore, path.path) == ("Local DS", "my vm/my vm.vmdk")
    assert str(path.sibling("my vm-flat.vmdk")) == "[Local DS] my vm/my vm-flat.vmdk"
    assert datastore_url("vc1.example.org", 443, path, "DC 1") == (
        "https://vc1.example.org:443/folder/my%20vm/my%20vm.vmdk?dcPath=DC+1&dsName=Local+DS"
    )
    assert datastore_url("::1", 8443, path, "DC0").startswith("https://[::1]:8443/folder/")
    for bad in ("ds1/a.vmdk", "[ds1]", "[] a.vmdk", "[ds1] ../etc/passwd", "[ds1] /abs"):
        with pytest.raises(BadInputError, match="is not a datastore path"):
            parse_datastore_path(bad)


def test_vm_references() -> None:
    assert parse_vsphere_vm_ref("vsphere://vc1/web1") == ("vc1", "web1")
    assert parse_vsphere_vm_ref("vsphere://vc1/a%2Fb") == ("vc1", "a/b")
    for bad in ("vsphere://vc1", "vsphere:///web1", "vc1/web1", "vsphere://u@vc1/web1"):
        with pytest.raises(BadInputError, match="vsphere://SOURCE/VM"):
            parse_vsphere_vm_ref(bad)


@pytest.mark.parametrize(("state", "tools", "force", "action"), [
    ("poweredOff", None, False, PowerAction.NONE),
    ("poweredOff", "guestToolsRunning", True, PowerAction.NONE),
    ("poweredOn", "guestToolsRunning", False, PowerAction.SHUTDOWN_GUEST),
    ("poweredOn", "guestToolsRunning", True, PowerAction.SHUTDOWN_GUEST),
    ("poweredOn", "guestToolsNotRunning", True, PowerAction.POWER_OFF),
    ("suspended", None, True, PowerAction.POWER_OFF),
])  # fmt: skip
def test_power_off_decisions(
    state: str, tools: str | None, force: bool, action: PowerAction
) -> None:
    assert decide_power_off("web1", state, tools, force).action is action


@pytest.mark.parametrize(("state", "tools", "reason"), [
    ("poweredOn", "guestToolsNotRunning", "web1 is powered on and VMware Tools do not run in it"),
    ("poweredOn", None, "web1 is powered on and VMware Tools do not run in it (no status)"),
    ("suspended", None, "web1 is suspended"),
])  # fmt: skip
def test_power_off_refusals_say_what_to_do(state: str, tools: str | None, reason: str) -> None:
    decision = decide_power_off("web1", state, tools, force=False)
    assert decision.action is None and decision.refusal is not None
    assert decision.refusal.startswith(reason) and "--force" in decision.refusal
    assert decision.refusal.endswith("nothing was changed")


DESCRIPTOR = b"""# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="vmfs"
RW 41943040 VMFS "web1-flat.vmdk"
ddb.virtualHWVersion = "14"
"""


def test_a_datastore_vmdk_shape_from_its_first_bytes() -> None:
    assert remote_vmdk("[ds] a.vmdk", b"KDMV" + bytes(508), 10**9).kind == "sparse"
    flat = remote_vmdk("[ds] web1.vmdk", DESCRIPTOR, len(DESCRIPTOR))
    assert (flat.kind, flat.extent, flat.capacity_bytes) == ("flat", "web1-flat.vmdk", 20 * GIB)
    refusals = {
        b"\x00" * 512: "neither a sparse VMDK nor a VMDK descriptor",
        DESCRIPTOR.replace(b"ffffffff", b"12345678"): "delta disk with a parent",
        DESCRIPTOR.replace(b'"web1-flat.vmdk"', b'"../x-flat.vmdk"'): "outside the descriptor",
        DESCRIPTOR + b'RW 8 VMFS "two-flat.vmdk"\n': "one flat extent at offset 0",
        DESCRIPTOR.replace(b"vmfs", b"vmfsRawDeviceMap"): "maps a host device",
    }
    for data, reason in refusals.items():
        with pytest.raises(BadInputError, match=reason):
            remote_vmdk("[ds] web1.vmdk", data, len(data))
