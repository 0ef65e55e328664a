"""OVF descriptors (VMware OVF 1.0, DMTF OVF 2.0, VirtualBox) and OVA packages built here."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from vmferry.errors import BadInputError
from vmferry.model.placement_settings import PlacementSettings, SourceSetting
from vmferry.model.source_vm import Firmware, ImageFormat, SourceFormat, SourceMedia
from vmferry.sources import Limits, open_source
from vmferry.sources.ovf import parse_ovf

MakeImage = Callable[..., Path]
GiB = 1024**3
MiB = 1024**2


def _stage_ovf(import_data: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copyfile(import_data / "ovf" / name, target)
    return target


def test_vmware_ovf1(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    ovf = _stage_ovf(import_data, tmp_path, "vmware-ovf1.ovf")
    make_image(tmp_path / "app01-disk1.vmdk", "vmdk", "1G", "streamOptimized")
    make_image(tmp_path / "app01-disk2.vmdk", "vmdk", "512M", "streamOptimized")
    (tmp_path / "tools.iso").write_bytes(b"\x00" * 2048)
    vm = open_source(ovf, workdir=workdir)
    assert vm.source_format is SourceFormat.OVF
    assert (vm.name, vm.vcpus, vm.sockets, vm.cores, vm.memory_mb) == ("app01", 4, 1, 4, 6144)
    assert (vm.firmware, vm.secure_boot) == (Firmware.EFI, True)
    assert (vm.guest_os.family, vm.guest_os.distro, vm.guest_os.version) == (
        "linux",
        "debian",
        "12",
    )
    assert [(d.label, d.bus, d.unit, d.capacity_bytes, d.boot_order) for d in vm.disks] == [
        ("Hard Disk 1", "pvscsi", 0, GiB, 1),
        ("Hard Disk 2", "pvscsi", 1, 512 * MiB, 2),
    ]
    assert vm.disks[0].path == str(tmp_path / "app01-disk1.vmdk")
    assert vm.disks[0].format is ImageFormat.VMDK
    assert [(n.mac, n.model, n.network) for n in vm.nics] == [
        ("00:50:56:ab:00:01", "vmxnet3", "VM Network")
    ]
    assert vm.media == (SourceMedia("cdrom", str(tmp_path / "tools.iso"), "ide"),)
    assert (vm.usb, vm.serial_ports) == (True, 1)
    warned = " | ".join(vm.warnings)
    assert "sched.cpu.latencySensitivity" not in warned  # a placement setting, not lost:
    assert vm.placement == PlacementSettings(
        latency_sensitivity=SourceSetting("sched.cpu.latencySensitivity", "high")
    )
    assert "Sound Card (ResourceType 1 vmware.soundcard.hdaudio)" in warned
    assert "backing.writeThrough" in warned
    assert "VirtualVideoCard" not in warned and "cpuHotAddEnabled" not in warned


def test_dmtf_ovf2_storage_and_ethernet_port_items(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    ovf = _stage_ovf(import_data, tmp_path, "dmtf-ovf2.ovf")
    make_image(tmp_path / "rocky9-root.qcow2", "qcow2", "2G")
    vm = open_source(ovf, workdir=workdir)
    assert (vm.name, vm.vcpus, vm.memory_mb) == ("rocky9", 8, 16 * 1024)  # default config
    assert vm.uuid == "0a6f7c3e-2b1d-4c5e-9f80-1234567890ab"
    assert (vm.guest_os.family, vm.guest_os.distro, vm.guest_os.version) == ("linux", "rhel", "9")
    assert [(d.bus, d.unit, d.format, d.capacity_bytes) for d in vm.disks] == [
        ("sata", 2, ImageFormat.QCOW2, 2 * GiB)
    ]
    assert [(n.mac, n.model, n.network) for n in vm.nics] == [
        ("52:54:00:12:34:56", "virtio", "tenant-a")
    ]
    assert vm.warnings == ("OVF item Parallel port (ResourceType 22) is not imported",)


def test_virtualbox_ovf(import_data: Path) -> None:
    desc = parse_ovf((import_data / "ovf" / "virtualbox.ovf").read_bytes())
    assert (desc.name, desc.vcpus, desc.memory_mb, desc.firmware) == (
        "devbox",
        2,
        3072,
        Firmware.EFI,
    )
    assert (desc.guest_os.family, desc.guest_os.distro, desc.guest_os.bits) == (
        "linux",
        "debian",
        64,
    )
    assert [(s.href, s.bus, s.declared_capacity) for s in desc.disks] == [
        ("devbox-disk001.vmdk", "sata", GiB)
    ]
    assert [(n.model, n.network, n.mac) for n in desc.nics] == [("e1000", "NAT", None)]
    assert desc.media == (SourceMedia("cdrom", None, "ide"),)
    assert desc.usb is True
    assert desc.warnings == ()


def test_ovf_capacity_mismatch_is_a_warning(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    ovf = _stage_ovf(import_data, tmp_path, "virtualbox.ovf")
    make_image(tmp_path / "devbox-disk001.vmdk", "vmdk", "2G", "streamOptimized")
    vm = open_source(ovf, workdir=workdir)
    assert vm.disks[0].capacity_bytes == 2 * GiB
    assert any("declares 1073741824 bytes" in w for w in vm.warnings)


def test_ovf_directory_manifest(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    ovf = _stage_ovf(import_data, tmp_path, "dmtf-ovf2.ovf")
    disk = make_image(tmp_path / "rocky9-root.qcow2", "qcow2", "2G")
    lines = [
        f"SHA256({p.name})= {hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in (ovf, disk)
    ]
    mf = tmp_path / "dmtf-ovf2.mf"
    mf.write_text("".join(lines))
    assert open_source(ovf, workdir=workdir).disks[0].capacity_bytes == 2 * GiB
    mf.write_text(lines[0].replace(lines[0][-9:-1], "00000000") + lines[1])
    with pytest.raises(BadInputError, match=r"manifest mismatch for dmtf-ovf2\.ovf"):
        open_source(ovf, workdir=workdir)


# -- OVA ---------------------------------------------------------------------------------------


def _build_ova(path: Path, files: dict[str, bytes], algorithm: str | None = "sha256") -> Path:
    members = dict(files)
    if algorithm is not None:
        members[path.stem + ".mf"] = "".join(
            f"{algorithm.upper()}({name})= {hashlib.new(algorithm, data).hexdigest()}\n"
            for name, data in files.items()
        ).encode()
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _package(import_data: Path, tmp_path: Path, make_image: MakeImage) -> dict[str, bytes]:
    src = tmp_path / "src"
    src.mkdir()
    make_image(src / "app01-disk1.vmdk", "vmdk", "1G", "streamOptimized")
    make_image(src / "app01-disk2.vmdk", "vmdk", "512M", "streamOptimized")
    return {
        "app01.ovf": (import_data / "ovf" / "vmware-ovf1.ovf").read_bytes(),
        "app01-disk1.vmdk": (src / "app01-disk1.vmdk").read_bytes(),
        "app01-disk2.vmdk": (src / "app01-disk2.vmdk").read_bytes(),
        "tools.iso": b"\x00" * 2048,
    }


@pytest.mark.parametrize("algorithm", ["sha256", "sha1"])
def test_ova_with_manifest(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage, algorithm: str
) -> None:
    ova = _build_ova(tmp_path / "app01.ova", _package(import_data, tmp_path, make_image), algorithm)
    vm = open_source(ova, workdir=workdir)
    assert vm.source_format is SourceFormat.OVA
    assert [(Path(d.path).parent, Path(d.path).name, d.capacity_bytes) for d in vm.disks] == [
        (workdir, "app01-disk1.vmdk", GiB),
        (workdir, "app01-disk2.vmdk", 512 * MiB),
    ]
    assert sorted(p.name for p in workdir.iterdir()) == ["app01-disk1.vmdk", "app01-disk2.vmdk"]
    assert vm.media == (SourceMedia("cdrom", None, "ide"),)  # the ISO is not extracted
    assert any("cdrom image tools.iso is not kept" in w for w in vm.warnings)
    assert not any("no manifest" in w for w in vm.warnings)


def test_ova_without_manifest_warns(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    ova = _build_ova(tmp_path / "app01.ova", _package(import_data, tmp_path, make_image), None)
    vm = open_source(ova, workdir=workdir)
    assert len(vm.disks) == 2
    assert any("no manifest" in w for w in vm.warnings)


def test_ova_disk_tampered_after_manifest_leaves_workdir_empty(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    files = _package(import_data, tmp_path, make_image)
    ova = _build_ova(tmp_path / "app01.ova", files)
    data = bytearray(ova.read_bytes())
    offset = data.index(files["app01-disk2.vmdk"][:512]) + 600  # inside disk2's contents
    data[offset] ^= 0xFF
    ova.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"manifest mismatch for app01-disk2\.vmdk"):
        open_source(ova, workdir=workdir)
    assert list(workdir.iterdir()) == []


def test_ova_size_limit(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    ova = _build_ova(tmp_path / "app01.ova", _package(import_data, tmp_path, make_image))
    with pytest.raises(BadInputError, match="add up to more than 1000 bytes"):
        open_source(ova, workdir=workdir, limits=Limits(max_ova_bytes=1000))
    assert list(workdir.iterdir()) == []


def test_ova_never_overwrites_a_file_in_workdir(
    import_data: Path, tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    ova = _build_ova(tmp_path / "app01.ova", _package(import_data, tmp_path, make_image))
    (workdir / "app01-disk2.vmdk").symlink_to(tmp_path / "victim")
    with pytest.raises(BadInputError, match="cannot create"):
        open_source(ova, workdir=workdir)
    assert not (tmp_path / "victim").exists()
    assert [p.name for p in workdir.iterdir()] == ["app01-disk2.vmdk"]  # ours are gone
