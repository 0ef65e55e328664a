"""VMX parsing: the pure key parser, the mapping to SourceVm, and whole VMs with real VMDKs."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from vmferry.errors import BadInputError
from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.model.source_vm import Firmware, ImageFormat, SourceFormat, SourceMedia
from vmferry.sources import open_source
from vmferry.sources.image import ImageFacts
from vmferry.sources.refusal import Refused
from vmferry.sources.vmx import build_vm, decode_vmx, parse_vmx_text

MakeImage = Callable[..., Path]
GiB = 1024**3


def test_keys_are_case_insensitive_quoted_and_escaped() -> None:
    vmx = parse_vmx_text(
        '# comment\n\nDisplayName = "a|22b|7Cc"\nMEMSIZE="512"\nnumvcpus = 2\nmemsize = "1024"\n'
    )
    assert vmx.entries == {"displayname": 'a"b|c', "memsize": "1024", "numvcpus": "2"}
    assert vmx.warnings == ("VMX key memsize is set twice; the last value ('1024') is used",)


def test_malformed_lines_are_refused() -> None:
    with pytest.raises(Refused, match="line 2 is not key = value"):
        parse_vmx_text('memsize = "1"\njunk\n')
    with pytest.raises(Refused, match="binary data"):
        decode_vmx(b'memsize = "1"\x00\n')
    assert decode_vmx('displayName = "caf\xe9"\n.encoding = "windows-1252"\n'.encode("cp1252"))


def _fake_disk(size: int = GiB) -> Callable[[str], ImageFacts]:
    def resolve(name: str) -> ImageFacts:
        path = Path("/vm") / name
        return ImageFacts(path, ImageFormat.VMDK, size, 4096, (path,), "monolithicSparse")

    return resolve


def test_build_vm_with_fake_disks_orders_and_warns() -> None:
    vmx = parse_vmx_text(
        'memsize = "1024"\nnumvcpus = "6"\ncpuid.coresPerSocket = "4"\n'
        'sata0.present = "TRUE"\nsata0:0.present = "TRUE"\nsata0:0.fileName = "b.vmdk"\n'
        'scsi0.present = "TRUE"\nscsi0.virtualDev = "buslogic"\n'
        'scsi0:3.present = "TRUE"\nscsi0:3.fileName = "a.vmdk"\n'
        'ide0:0.present = "TRUE"\nide0:0.fileName = "c.vmdk"\n'
        'scsi1.present = "FALSE"\nscsi1:0.present = "TRUE"\nscsi1:0.fileName = "x.vmdk"\n'
        'mystery.key = "42"\n'
    )
    vm = build_vm(
        vmx, default_name="fallback", resolve_disk=_fake_disk(), resolve_media=lambda _n: None
    )
    assert vm.name == "fallback"
    assert (vm.vcpus, vm.sockets, vm.cores) == (6, 6, 1)
    assert [(d.label, d.bus, d.boot_order) for d in vm.disks] == [
        ("scsi0:3", "buslogic", 1),
        ("sata0:0", "sata", 2),
        ("ide0:0", "ide", 3),
    ]
    assert any("not a multiple" in w for w in vm.warnings)
    assert any("scsi1:0 is on controller scsi1, which is not present" in w for w in vm.warnings)
    assert any("mystery.key" in w for w in vm.warnings)


def test_build_vm_refuses_non_vmdk_disk() -> None:
    vmx = parse_vmx_text('memsize = "1"\nide0:0.present = "TRUE"\nide0:0.fileName = "x.img"\n')

    def raw(name: str) -> ImageFacts:
        return ImageFacts(Path(name), ImageFormat.RAW, 1, 1, (Path(name),))

    with pytest.raises(Refused, match=r"ide0:0 disk x\.img is not a VMDK"):
        build_vm(vmx, default_name="x", resolve_disk=raw, resolve_media=lambda _n: None)


def _stage(import_data: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(import_data / "vmx" / name, target)
    return target


def test_debian_efi_vm(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    vmx = _stage(import_data, tmp_path, "debian12-efi.vmx")
    make_image(tmp_path / "web1.vmdk", "vmdk", "2G", "monolithicSparse")
    make_image(tmp_path / "web1_1.vmdk", "vmdk", "3G", "twoGbMaxExtentSparse")
    (tmp_path / "debian-12.iso").write_bytes(b"\x00" * 2048)
    vm = open_source(vmx, workdir=workdir)
    assert vm.source_format is SourceFormat.VMX
    assert vm.name == 'web1"prod"'
    assert (vm.vcpus, vm.sockets, vm.cores, vm.memory_mb) == (4, 2, 2, 4096)
    assert (vm.firmware, vm.secure_boot) == (Firmware.EFI, True)
    assert (vm.guest_os.family, vm.guest_os.distro, vm.guest_os.version) == (
        "linux",
        "debian",
        "12",
    )
    assert vm.uuid == "564d9c2b-5e4f-0e8b-1f1d-3b7e8a9e2f01"
    assert [(d.label, d.bus, d.unit, d.capacity_bytes, d.boot_order) for d in vm.disks] == [
        ("scsi0:0", "pvscsi", 0, 2 * GiB, 1),
        ("scsi0:1", "pvscsi", 1, 3 * GiB, 2),
    ]
    assert vm.disks[0].path == str(tmp_path / "web1.vmdk")
    assert all(d.format is ImageFormat.VMDK for d in vm.disks)
    assert [(n.mac, n.model, n.network, n.connected) for n in vm.nics] == [
        ("00:50:56:aa:bb:01", "vmxnet3", "VM Network", True),
        ("00:50:56:9a:01:02", "e1000e", "backup", False),
    ]
    assert vm.media == (SourceMedia("cdrom", str(tmp_path / "debian-12.iso"), "sata"),)
    assert vm.usb is True
    assert vm.serial_ports == 1
    assert vm.passthrough == ("pciPassthru0 0000:3b:00.0",)
    warned = " | ".join(vm.warnings)
    assert "sound.present" in warned
    assert "sched.cpu.latencysensitivity" not in warned  # a placement setting, not lost:
    assert vm.placement == PlacementSettings(
        latency_sensitivity=SourceSetting("sched.cpu.latencySensitivity", "high")
    )
    assert "scsi0:2" not in warned  # present = FALSE is a decision, not a loss
    assert "uuid.location" not in warned and "nvram" not in warned
    assert list(workdir.iterdir()) == []


def test_windows_bios_vm_boots_from_hdd_order(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    vmx = _stage(import_data, tmp_path, "win2019-bios.vmx")
    make_image(tmp_path / "dc01.vmdk", "vmdk", "3G", "twoGbMaxExtentSparse")
    make_image(tmp_path / "dc01_1.vmdk", "vmdk", "1G", "monolithicFlat")
    vm = open_source(vmx, workdir=workdir)
    assert (vm.name, vm.vcpus, vm.memory_mb, vm.firmware) == ("dc01", 2, 8192, Firmware.BIOS)
    assert (vm.guest_os.family, vm.guest_os.version) == ("windows", "2019")
    assert [(d.label, d.bus, d.boot_order, d.capacity_bytes) for d in vm.disks] == [
        ("scsi0:1", "lsisas1068", 1, GiB),
        ("scsi0:0", "lsisas1068", 2, 3 * GiB),
    ]
    assert vm.media == (SourceMedia("cdrom", None, "ide"),)
    assert [(n.mac, n.model, n.network) for n in vm.nics] == [
        ("00:0c:29:5e:4f:0e", "e1000e", "Servers")
    ]
    assert vm.warnings == ()


def test_workstation_nvme_vm(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    vmx = _stage(import_data, tmp_path, "workstation-nvme.vmx")
    make_image(tmp_path / "ws.vmdk", "vmdk", "1G", "streamOptimized")
    make_image(tmp_path / "ws-data.vmdk", "vmdk", "2G", "monolithicSparse")
    vm = open_source(vmx, workdir=workdir)
    assert vm.name == "workstation-nvme"
    assert (vm.vcpus, vm.sockets, vm.cores) == (3, 3, 1)
    assert [(d.bus, d.controller, d.unit, d.boot_order) for d in vm.disks] == [
        ("sata", 0, 1, 1),
        ("nvme", 0, 0, 2),
    ]
    assert [(n.model, n.network, n.mac) for n in vm.nics] == [
        ("vlance", "nat", "00:0c:29:12:34:56")
    ]
    assert vm.media == (SourceMedia("floppy", None, "fdc"),)
    assert vm.usb is True
    assert vm.passthrough == ("usb:vid:0781 pid:5583",)
    warned = " | ".join(vm.warnings)
    assert "not a multiple" in warned
    assert "sata0:2 has keys but no present = TRUE" in warned
    assert "parallel0.present" in warned
    assert "floppy0 image drivers.flp" in warned


def test_vmx_disk_absolute_path_is_allowed(
    tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    store = tmp_path / "datastore"
    store.mkdir()
    disk = make_image(store / "abs.vmdk", "vmdk", "1G", "monolithicSparse")
    vmx = tmp_path / "abs.vmx"
    vmx.write_text(f'memsize = "512"\nide0:0.present = "TRUE"\nide0:0.fileName = "{disk}"\n')
    vm = open_source(vmx, workdir=workdir)
    assert vm.disks[0].path == str(disk)
    assert vm.disks[0].bus == "ide"


def test_vmx_descriptor_size_limit(tmp_path: Path, workdir: Path) -> None:
    from vmferry.sources import Limits

    vmx = tmp_path / "big.vmx"
    vmx.write_text('memsize = "512"\n' + "# padding\n" * 200)
    with pytest.raises(BadInputError, match="above the 100-byte limit"):
        open_source(vmx, workdir=workdir, limits=Limits(max_descriptor_bytes=100))
