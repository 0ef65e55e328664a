"""The pure import decisions: names, buses, NIC models, networks, findings, domain XML."""

from __future__ import annotations

from dataclasses import replace

import defusedxml.ElementTree as SafeET
import pytest

from vmferry.imports.domain_xml import render_domain_xml
from vmferry.imports.findings import evaluate
from vmferry.imports.mapping import (
    Choice,
    ImportOptions,
    parse_network_map,
    plan_import,
    sanitized_name,
    topology,
)
from vmferry.model.finding import Severity
from vmferry.model.import_target import DestinationFacts, PoolFacts
from vmferry.model.source_vm import (
    Firmware,
    GuestOs,
    ImageFormat,
    SourceDisk,
    SourceFormat,
    SourceMedia,
    SourceNic,
    SourceVm,
)

GIB = 2**30


def _vm(**kw: object) -> SourceVm:
    base = SourceVm(
        name="web 01",
        source_format=SourceFormat.VMX,
        vcpus=4,
        memory_mb=4096,
        sockets=2,
        cores=2,
        guest_os=GuestOs("linux", "debian12-64", "12"),
        disks=(
            SourceDisk(
                "/src/data.vmdk", ImageFormat.VMDK, 8 * GIB, "pvscsi", 0, 1, allocated_bytes=GIB
            ),
            SourceDisk(
                "/src/boot.vmdk",
                ImageFormat.VMDK,
                16 * GIB,
                "pvscsi",
                0,
                0,
                allocated_bytes=2 * GIB,
                data_file="/src/boot-flat.vmdk",
            ),
        ),
        nics=(SourceNic("00:50:56:01:02:03", "vmxnet3", "VM Network"),),
        uuid="56 4d 12 34 56 78 9a bc-de f0 12 34 56 78 9a bc",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _dest(**kw: object) -> DestinationFacts:
    base = DestinationFacts(
        host="kvm2",
        networks=frozenset({"vmnet", "default"}),
        pools={
            "default": PoolFacts("default", "/var/lib/libvirt/images", 100 * GIB, reachable=True)
        },
        domain_names=frozenset({"db1"}),
        domain_type="qemu",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def _ids(findings: list[object]) -> set[str]:
    return {f.id for f in findings}  # type: ignore[attr-defined]


def test_linux_guest_gets_virtio_and_boot_disk_first() -> None:
    plan = plan_import(_vm(), ImportOptions(network_map={"VM Network": "vmnet"}), _dest())
    assert plan.name == "web-01"
    assert [d.source_path for d in plan.disks] == ["/src/boot.vmdk", "/src/data.vmdk"]
    # where each disk's data is read in place (None: the data file is not known: qemu-nbd)
    assert [d.source_data_file for d in plan.disks] == ["/src/boot-flat.vmdk", None]
    assert [(d.target_dev, d.bus, d.boot_order) for d in plan.disks] == [
        ("vda", "virtio", 1), ("vdb", "virtio", None)]  # fmt: skip
    assert plan.nics[0].model == "virtio" and plan.nics[0].network == "vmnet"
    assert plan.nics[0].mac == "00:50:56:01:02:03"
    assert plan.uuid == "564d1234-5678-9abc-def0-123456789abc"
    assert not plan.convert_guest


def test_unknown_guest_boots_on_sata_and_e1000e() -> None:
    plan = plan_import(_vm(guest_os=GuestOs("other", "freebsd-64")), ImportOptions(), _dest())
    assert {d.bus for d in plan.disks} == {"sata"}
    assert [d.target_dev for d in plan.disks] == ["sda", "sdb"]
    assert plan.nics[0].model == "e1000e"


def test_windows_is_converted_in_auto_and_not_with_never() -> None:
    win = _vm(guest_os=GuestOs("windows", "windows2019srv-64"))
    assert plan_import(win, ImportOptions(), _dest()).convert_guest
    kept = plan_import(win, ImportOptions(convert_guest=Choice.NEVER), _dest())
    assert not kept.convert_guest and kept.disks[0].bus == "sata"


def test_explicit_bus_and_model_win() -> None:
    plan = plan_import(_vm(), ImportOptions(disk_bus="sata", nic_model="e1000e"), _dest())
    assert plan.disks[0].bus == "sata" and plan.nics[0].model == "e1000e"


def test_network_of_same_name_maps_itself_and_star_maps_all() -> None:
    vm = _vm(nics=(SourceNic("00:50:56:00:00:01", "e1000", "vmnet"),
                   SourceNic("00:50:56:00:00:02", "e1000", "DMZ")))  # fmt: skip
    plan = plan_import(vm, ImportOptions(), _dest())
    assert [n.network for n in plan.nics] == ["vmnet", None]
    star = plan_import(vm, ImportOptions(network_map={"*": "default"}), _dest())
    assert [n.network for n in star.nics] == ["default", "default"]


@pytest.mark.parametrize(
    ("vcpus", "sockets", "cores", "expected"),
    [(4, 2, 2, (2, 2)), (4, 1, 2, (2, 2)), (6, 1, 4, (6, 1)), (1, 1, 1, (1, 1))],
)
def test_topology_multiplies_to_vcpus(
    vcpus: int, sockets: int, cores: int, expected: tuple[int, int]
) -> None:
    assert topology(vcpus, sockets, cores) == expected


def test_network_map_parsing() -> None:
    assert parse_network_map(["VM Network=vmnet", " a = b "]) == {"VM Network": "vmnet", "a": "b"}
    with pytest.raises(ValueError, match="SOURCE=DESTINATION"):
        parse_network_map(["novalue"])


def test_sanitized_name() -> None:
    assert sanitized_name("My VM (prod)") == "My-VM-prod"
    assert sanitized_name("///") == "imported-vm"


def test_findings_block_unmapped_network_existing_name_and_space() -> None:
    vm = _vm(name="db1")
    dest = _dest(pools={"default": PoolFacts("default", "/p", GIB, reachable=True)})
    findings = evaluate(vm, plan_import(vm, ImportOptions(), dest), dest)
    blockers = {f.id for f in findings if f.severity is Severity.BLOCKER}
    assert blockers == {"import.network.unmapped", "import.name.exists", "import.disk.space"}
    assert findings[0].severity is Severity.BLOCKER  # blockers first
    unmapped = next(f for f in findings if f.id == "import.network.unmapped")
    assert "--network-map 'VM Network=<network>'" in unmapped.remediation


def test_findings_for_a_clean_linux_import_do_not_block() -> None:
    plan = plan_import(_vm(), ImportOptions(network_map={"VM Network": "vmnet"}), _dest())
    findings = evaluate(_vm(), plan, _dest())
    assert not [f for f in findings if f.severity is Severity.BLOCKER]
    assert "import.disk.bus" in _ids(findings)  # pvscsi -> virtio is said


def test_findings_pool_missing_unreachable_and_mapped_network_missing() -> None:
    dest = _dest(pools={"default": PoolFacts("default", "/p", 100 * GIB, reachable=False)})
    opts = ImportOptions(network_map={"VM Network": "nope"})
    ids = _ids(evaluate(_vm(), plan_import(_vm(), opts, dest), dest))
    assert {"import.pool.unreachable", "import.network.missing"} <= ids
    opts = ImportOptions(storage_pool="fast", network_map={"VM Network": "vmnet"})
    ids = _ids(evaluate(_vm(), plan_import(_vm(), opts, dest), dest))
    assert "import.pool.missing" in ids


def test_findings_efi_secure_boot_devices_media_and_v2v() -> None:
    vm = _vm(firmware=Firmware.EFI, secure_boot=True, passthrough=("pciPassthru0",),
             media=(SourceMedia("cdrom", "/iso/setup.iso"),), serial_ports=1,
             guest_os=GuestOs("windows", "windows2019srv-64"))  # fmt: skip
    dest = _dest(efi_loader=True, secure_boot_loader=False)
    opts = ImportOptions(network_map={"VM Network": "vmnet"})
    findings = evaluate(vm, plan_import(vm, opts, dest), dest, v2v_missing="no virt-v2v")
    ids = _ids(findings)
    assert {"import.firmware.efi", "import.firmware.secure_boot_missing",
            "import.device.passthrough", "import.media.not_copied", "import.device.serial",
            "import.convert.unavailable"} <= ids  # fmt: skip


def test_source_warnings_become_findings() -> None:
    vm = _vm(warnings=("vmx key 'sched.cpu.shares' is not mapped",))
    plan = plan_import(vm, ImportOptions(network_map={"VM Network": "vmnet"}), _dest())
    msgs = [f.message for f in evaluate(vm, plan, _dest()) if f.id == "import.source.unmapped"]
    assert msgs == ["vmx key 'sched.cpu.shares' is not mapped"]


def test_domain_xml_has_topology_volumes_macs_and_boot_order() -> None:
    plan = plan_import(_vm(), ImportOptions(network_map={"VM Network": "vmnet"},
                                            console_log="/var/log/web.log"), _dest())  # fmt: skip
    root = SafeET.fromstring(render_domain_xml(plan))
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "web-01"
    assert root.findtext("memory") == "4096" and root.findtext("vcpu") == "4"
    topo = root.find("cpu/topology")
    assert topo is not None and (topo.get("sockets"), topo.get("cores")) == ("2", "2")
    disks = root.findall("devices/disk[@device='disk']")
    volumes = [(d.find("source").get("volume"), d.find("target").get("dev"))  # type: ignore[union-attr]
               for d in disks]  # fmt: skip
    assert volumes == [("web-01-disk0.qcow2", "vda"), ("web-01-disk1.qcow2", "vdb")]
    assert disks[0].find("boot") is not None and disks[1].find("boot") is None
    iface = root.find("devices/interface")
    assert iface is not None
    assert iface.find("mac").get("address") == "00:50:56:01:02:03"  # type: ignore[union-attr]
    assert iface.find("source").get("network") == "vmnet"  # type: ignore[union-attr]
    serial = root.find("devices/serial/source")
    assert serial is not None and serial.get("path") == "/var/log/web.log"


def test_domain_xml_efi_secure_boot() -> None:
    vm = _vm(firmware=Firmware.EFI, secure_boot=True)
    root = SafeET.fromstring(render_domain_xml(plan_import(vm, ImportOptions(), _dest())))
    os_el = root.find("os")
    assert os_el is not None and os_el.get("firmware") == "efi"
    assert root.find("features/smm") is not None
    features = {f.get("name"): f.get("enabled") for f in root.findall("os/firmware/feature")}
    assert features == {"secure-boot": "yes", "enrolled-keys": "yes"}
