"""parse_domain_xml against realistic domain documents in tests/data/domains/."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmferry.drivers.domain_xml import memory_to_bytes, parse_domain_xml
from vmferry.errors import BadInputError
from vmferry.model import CpuTopology, Disk, DiskDevice, HostDevice, Nic, VcpuPin, VmSpec

DOMAINS = Path(__file__).resolve().parent.parent / "data" / "domains"
GiB = 1024**3
MiB = 1024**2


def parse(name: str) -> VmSpec:
    return parse_domain_xml((DOMAINS / name).read_text(encoding="utf-8"))


def test_kvm_server_with_virtio_disks_and_nics_on_a_portgroup() -> None:
    spec = parse("kvm-server-virtio.xml")

    assert spec.name == "web01"
    assert spec.uuid == "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
    assert spec.domain_type == "kvm"
    assert spec.vcpus == 4
    assert spec.topology == CpuTopology(sockets=1, cores=2, threads=2)
    assert spec.memory_bytes == 8 * GiB
    assert (spec.cpu_mode, spec.cpu_model) == ("host-model", None)
    assert (spec.machine, spec.arch, spec.firmware) == ("pc-q35-7.2", "x86_64", "bios")
    assert spec.disks == (
        Disk(
            target="vda",
            bus="virtio",
            device=DiskDevice.DISK,
            format="qcow2",
            source="/var/lib/libvirt/images/web01-root.qcow2",
            source_kind="file",
        ),
        Disk(
            target="vdb",
            bus="virtio",
            format="raw",
            source="/dev/vg0/web01-data",
            source_kind="block",
            shareable=True,
        ),
    )
    assert spec.nics == (
        Nic(
            mac="52:54:00:aa:01:01",
            kind="network",
            model="virtio",
            network="prod",
            bridge="virbr1",
            portgroup="web",
            target_dev="vnet3",
        ),
        Nic(
            mac="52:54:00:aa:01:02",
            kind="network",
            model="virtio",
            network="backup",
            target_dev="vnet4",
        ),
    )
    assert spec.host_devices == ()
    assert spec.vcpu_pins == ()
    assert spec.removable_media == ()


def test_efi_desktop_with_sata_iso_cdrom_and_empty_floppy() -> None:
    spec = parse("efi-desktop-cdrom.xml")

    assert spec.name == "win-desk"
    assert spec.firmware == "efi"
    assert spec.memory_bytes == 4096 * MiB
    assert spec.vcpus == 2
    assert spec.topology == CpuTopology(sockets=2, cores=1, threads=1)
    assert (spec.cpu_mode, spec.cpu_model) == ("custom", "Skylake-Client-IBRS")
    disk, cdrom, floppy = spec.disks
    assert disk == Disk(
        target="sda",
        bus="sata",
        format="qcow2",
        source="/var/lib/libvirt/images/win-desk.qcow2",
    )
    assert cdrom == Disk(
        target="sdb",
        bus="sata",
        device=DiskDevice.CDROM,
        format="raw",
        source="/srv/iso/Win11_23H2_English_x64.iso",
        source_kind="file",
        readonly=True,
    )
    assert floppy == Disk(
        target="fda",
        bus="fdc",  # no bus attribute: inferred from the target like libvirt does
        device=DiskDevice.FLOPPY,
        format="raw",
        source=None,
        source_kind="none",
    )
    assert spec.removable_media == (cdrom, floppy)
    assert spec.nics == (
        Nic(mac="52:54:00:3e:77:10", kind="network", model="e1000e", network="default"),
    )


def test_passthrough_vm_with_pci_usb_hostdevs_and_vcpu_pins() -> None:
    spec = parse("passthrough-pinned.xml")

    assert spec.memory_bytes == 16 * GiB
    assert spec.vcpus == 8
    assert spec.topology == CpuTopology(sockets=1, cores=4, threads=2)
    assert (spec.cpu_mode, spec.cpu_model) == ("host-passthrough", None)
    assert spec.firmware == "efi"  # pflash loader without <os firmware='efi'>
    assert spec.machine == "q35"
    assert spec.vcpu_pins == (
        VcpuPin(vcpu=0, cpuset="2"),
        VcpuPin(vcpu=1, cpuset="3"),
        VcpuPin(vcpu=2, cpuset="4-5,^5"),
    )
    assert spec.host_devices == (
        HostDevice(kind="pci", address="0000:3b:10.2"),  # SR-IOV VF via <interface>
        HostDevice(kind="pci", address="0000:01:00.0"),
        HostDevice(kind="pci", address="0000:01:00.1"),
        HostDevice(kind="usb", address="046d:c52b"),
        HostDevice(kind="usb", address="bus=3,device=7"),
    )
    root, scratch = spec.disks
    assert (root.bus, root.source_kind) == ("virtio", "file")
    assert scratch == Disk(
        target="vdb",
        bus="virtio",
        format="raw",
        source="rbd://ceph-mon1.example.net:6789/vms/gpu-worker-scratch",
        source_kind="network",
    )
    direct, vf = spec.nics
    assert direct == Nic(mac="52:54:00:12:34:56", kind="direct", model="virtio")
    assert vf == Nic(mac="52:54:00:6d:90:02", kind="hostdev")


def test_bridge_nic_and_qcow2_pool_volume() -> None:
    spec = parse("bridge-pool-volume.xml")

    assert spec.vcpus == 2  # current, not the maximum of 4
    assert spec.topology == CpuTopology(sockets=4, cores=1, threads=1)  # libvirt: max vCPUs
    assert spec.memory_bytes == 3072 * MiB  # <memory>, not <currentMemory>
    assert spec.cpu_mode is None
    assert spec.disks == (
        Disk(
            target="vda",
            bus="virtio",
            format="qcow2",
            source="fast-ssd/db02-root.qcow2",
            source_kind="volume",
            pool="fast-ssd",
        ),
        Disk(
            target="hda",
            bus="ide",
            format="raw",
            source="/var/lib/libvirt/images/db02-wal.img",
        ),
    )
    assert spec.nics == (
        Nic(
            mac="52:54:00:c0:ff:ee",
            kind="bridge",
            model="virtio",
            bridge="br-lan",
            target_dev="vnet12",
        ),
    )


def test_minimal_domain_gets_libvirt_defaults() -> None:
    spec = parse_domain_xml("<domain type='qemu'><name>tiny</name><memory>65536</memory></domain>")
    assert spec == VmSpec(
        name="tiny",
        uuid="",
        vcpus=1,
        memory_bytes=64 * MiB,
        topology=CpuTopology(sockets=1, cores=1, threads=1),
        domain_type="qemu",
    )


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("1024", None, 1024 * 1024),
        ("1024", "KiB", 1024 * 1024),
        ("1024", "k", 1024 * 1024),
        ("1000", "KB", 1000 * 1000),
        ("512", "MiB", 512 * MiB),
        ("512", "M", 512 * MiB),
        ("2", "GiB", 2 * GiB),
        ("2", "GB", 2 * 1000**3),
        ("1", "TiB", 1024**4),
        ("4096", "b", 4096),
        ("4096", "bytes", 4096),
    ],
)
def test_memory_units(value: str, unit: str | None, expected: int) -> None:
    assert memory_to_bytes(value, unit) == expected


def test_xml_declaration_with_encoding_is_accepted() -> None:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<domain><name>é</name><memory>1</memory></domain>'
    )
    assert parse_domain_xml(xml).name == "é"


def test_memory_unit_attribute_is_honoured_in_documents() -> None:
    xml = "<domain type='kvm'><name>m</name><memory unit='b'>1073741824</memory></domain>"
    assert parse_domain_xml(xml).memory_bytes == GiB


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
]>
<domain type='kvm'><name>&lol2;</name><memory>1</memory></domain>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<domain type='kvm'><name>&xxe;</name><memory>1</memory></domain>
"""

DTD_ONLY = """<?xml version="1.0"?>
<!DOCTYPE domain SYSTEM "http://example.invalid/domain.dtd">
<domain type='kvm'><name>x</name><memory>1</memory></domain>
"""


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        pytest.param(BILLION_LAUGHS, "DTD, entity", id="entity-expansion"),
        pytest.param(EXTERNAL_ENTITY, "DTD, entity", id="external-entity"),
        pytest.param(DTD_ONLY, "DTD, entity", id="dtd"),
        pytest.param("<domain><name>x</name>", "not well-formed", id="unclosed"),
        pytest.param("not xml at all", "not well-formed", id="text"),
        pytest.param("", "empty", id="empty"),
        pytest.param(
            "<domain><name>x</name><memory>1</memory>" + " " * 5_000_000 + "</domain>",
            "more than",
            id="too-big",
        ),
        pytest.param("<network><name>x</name></network>", "<domain>", id="wrong-root"),
        pytest.param("<domain><memory>1</memory></domain>", "no <name>", id="no-name"),
        pytest.param("<domain><name>x</name></domain>", "no <memory>", id="no-memory"),
        pytest.param(
            "<domain><name>x</name><memory unit='parsecs'>1</memory></domain>",
            "unknown memory unit",
            id="bad-unit",
        ),
        pytest.param(
            "<domain><name>x</name><memory>lots</memory></domain>",
            "not an integer",
            id="bad-number",
        ),
        pytest.param(
            "<domain><name>x</name><memory>1</memory><vcpu current='9'>4</vcpu></domain>",
            "invalid vCPU count",
            id="current-above-max",
        ),
        pytest.param(
            "<domain><name>x</name><memory>1</memory>"
            "<devices><disk type='file'><source file='/a'/></disk></devices></domain>",
            "no <target",
            id="disk-without-target",
        ),
        pytest.param(
            "<domain><name>x</name><memory>1</memory><devices>"
            "<disk type='file' device='tape'><target dev='vda'/></disk></devices></domain>",
            "unknown device kind",
            id="unknown-disk-device",
        ),
    ],
)
def test_malformed_or_dangerous_xml_is_refused(xml: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as excinfo:
        parse_domain_xml(xml)
    assert excinfo.value.exit_code == 2
