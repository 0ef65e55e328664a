from __future__ import annotations

import os
import subprocess
from pathlib import Path

from vmferry.drivers.domain_xml import parse_domain_xml
from vmferry.lab.guest_xml import LabGuestSpec, kernel_cmdline, lab_guest_xml

GOLDEN = Path(__file__).parent.parent / "data" / "golden" / "lab_guest.xml"
SPEC = LabGuestSpec(
    name="demo-vm",
    memory_mb=512,
    working_set_mb=256,
    dirty_mb_s=12,
    address="198.18.2.100",
    mac="52:54:00:12:02:64",
    kernel="/var/cache/vmferry/guest/vmlinuz",
    initrd="/var/cache/vmferry/guest/initrd.gz",
    console_log="/var/lib/vmferry-lab/shared/consoles/demo-vm.log",
    data_volume="demo-vm-data.qcow2",
)


def test_lab_guest_xml_matches_golden_file() -> None:
    xml = lab_guest_xml(SPEC)
    if os.environ.get("VMFERRY_UPDATE_GOLDEN"):
        GOLDEN.write_text(xml)
    assert xml == GOLDEN.read_text()


def test_lab_guest_xml_reads_back_as_the_spec() -> None:
    spec = parse_domain_xml(lab_guest_xml(SPEC))
    assert spec.name == "demo-vm"
    assert spec.domain_type == "qemu"  # TCG: LAB-NOTES
    assert spec.memory_bytes == 512 * 2**20
    assert spec.cpu_model == "qemu64"
    assert [(n.mac, n.network, n.model) for n in spec.nics] == [
        ("52:54:00:12:02:64", "vmnet", "virtio")
    ]
    assert [(d.target, d.bus, d.format) for d in spec.disks] == [("vda", "virtio", "qcow2")]


def test_cmdline_carries_the_workload() -> None:
    line = kernel_cmdline(SPEC)
    assert "vmferry.ip=198.18.2.100/24" in line
    assert "vmferry.ws_mb=256" in line and "vmferry.rate_mb_s=12" in line


def test_lab_guest_xml_is_valid_for_libvirt(tmp_path: Path) -> None:
    path = tmp_path / "guest.xml"
    path.write_text(lab_guest_xml(SPEC))
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
