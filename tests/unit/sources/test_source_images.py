"""inspect_image and bare-image open_source over real qemu-img images and crafted headers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from vmferry.errors import BadInputError
from vmferry.model.source_vm import Firmware, ImageFormat, SourceFormat
from vmferry.sources import ImageOverrides, Limits, inspect_image, open_source
from vmferry.sources.vmdk import parse_descriptor
from vmferry.sources.vsphere_disk import remote_vmdk

MakeImage = Callable[..., Path]
GiB = 1024**3
LIMITS = Limits()


@pytest.mark.parametrize(
    ("subformat", "files"),
    [
        ("monolithicSparse", 1),
        ("streamOptimized", 1),
        ("monolithicFlat", 1),
        ("twoGbMaxExtentSparse", 3),
        ("twoGbMaxExtentFlat", 3),
    ],
)
def test_vmdk_subformats(tmp_path: Path, make_image: MakeImage, subformat: str, files: int) -> None:
    path = make_image(tmp_path / "d.vmdk", "vmdk", "5G", subformat)
    facts = inspect_image(path, LIMITS)
    assert facts.format is ImageFormat.VMDK
    assert facts.virtual_bytes == 5 * GiB
    assert facts.subformat == subformat
    assert len(facts.extents) == files
    assert all(p.parent == tmp_path for p in facts.extents)
    assert facts.allocated_bytes > 0
    # the one file holding the data: the image itself, or a descriptor's only extent
    assert facts.data_file == (str(facts.extents[0]) if files == 1 else None)
    if subformat == "monolithicFlat":
        assert facts.data_file == str(tmp_path / "d-flat.vmdk")


@pytest.mark.parametrize(
    ("fmt", "suffix", "expected", "source_format"),
    [
        ("qcow2", ".qcow2", ImageFormat.QCOW2, SourceFormat.IMAGE),
        ("vhdx", ".vhdx", ImageFormat.VHDX, SourceFormat.VHDX),
        ("raw", ".img", ImageFormat.RAW, SourceFormat.IMAGE),
        ("raw", ".raw", ImageFormat.RAW, SourceFormat.IMAGE),
    ],
)
def test_single_file_formats(
    tmp_path: Path,
    workdir: Path,
    make_image: MakeImage,
    fmt: str,
    suffix: str,
    expected: ImageFormat,
    source_format: SourceFormat,
) -> None:
    path = make_image(tmp_path / f"disk{suffix}", fmt, "3G")
    facts = inspect_image(path, LIMITS)
    assert (facts.format, facts.virtual_bytes, facts.extents) == (expected, 3 * GiB, (path,))
    vm = open_source(path, workdir=workdir)
    assert vm.source_format is source_format
    assert vm.disks[0].format is expected
    assert vm.disks[0].capacity_bytes == 3 * GiB
    assert vm.disks[0].data_file == str(path)
    assert list(workdir.iterdir()) == []


def test_vhd_dynamic_and_fixed(tmp_path: Path, make_image: MakeImage) -> None:
    dynamic = make_image(tmp_path / "dyn.vhd", "vpc", "1G")
    fixed = make_image(tmp_path / "fix.vhd", "vpc", "10M", "fixed")
    dyn_facts = inspect_image(dynamic, LIMITS)
    fix_facts = inspect_image(fixed, LIMITS)
    assert (dyn_facts.format, dyn_facts.subformat) == (ImageFormat.VPC, "dynamic")
    # qemu rounds a dynamic VHD up to its CHS geometry
    assert GiB <= dyn_facts.virtual_bytes < GiB + 1024 * 1024
    assert (fix_facts.format, fix_facts.subformat) == (ImageFormat.VPC, "fixed")
    assert 10 * 1024 * 1024 <= fix_facts.virtual_bytes < 11 * 1024 * 1024


def test_qcow2_with_backing_file_from_qemu_img(tmp_path: Path, make_image: MakeImage) -> None:
    base = make_image(tmp_path / "base.qcow2", "qcow2", "1G")
    child = tmp_path / "child.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(child)],
        check=True,
    )
    with pytest.raises(BadInputError, match=r"child.qcow2: qcow2 image has a backing file \(/"):
        inspect_image(child, LIMITS)


def test_qcow2_with_data_file_from_qemu_img(tmp_path: Path) -> None:
    path = tmp_path / "c.qcow2"
    data_file = f"data_file={tmp_path / 'ext.raw'}"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", data_file, str(path), "1G"], check=True
    )
    with pytest.raises(BadInputError, match="external data file"):
        inspect_image(path, LIMITS)


def test_virtual_size_limit_is_configurable(tmp_path: Path, make_image: MakeImage) -> None:
    path = make_image(tmp_path / "d.qcow2", "qcow2", "2G")
    with pytest.raises(BadInputError, match="above the limit of 1073741824 bytes"):
        inspect_image(path, Limits(max_virtual_bytes=GiB))
    assert inspect_image(path, Limits(max_virtual_bytes=2 * GiB)).virtual_bytes == 2 * GiB


def test_extent_symlink_out_of_directory_is_refused(tmp_path: Path, make_image: MakeImage) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    inside = tmp_path / "vm"
    inside.mkdir()
    desc = make_image(inside / "d.vmdk", "vmdk", "64M", "monolithicFlat")
    flat = inside / "d-flat.vmdk"
    flat.rename(outside / "d-flat.vmdk")
    flat.symlink_to(outside / "d-flat.vmdk")
    with pytest.raises(BadInputError, match="resolves outside the descriptor's directory"):
        inspect_image(desc, LIMITS)


def test_extent_symlink_to_device_is_refused(tmp_path: Path, make_image: MakeImage) -> None:
    desc = make_image(tmp_path / "d.vmdk", "vmdk", "64M", "monolithicFlat")
    flat = tmp_path / "d-flat.vmdk"
    flat.unlink()
    flat.symlink_to("/dev/zero")
    with pytest.raises(BadInputError, match="resolves outside"):
        inspect_image(desc, LIMITS)


def test_extent_fifo_is_refused(tmp_path: Path, make_image: MakeImage) -> None:
    desc = make_image(tmp_path / "d.vmdk", "vmdk", "64M", "monolithicFlat")
    flat = tmp_path / "d-flat.vmdk"
    flat.unlink()
    os.mkfifo(flat)
    with pytest.raises(BadInputError, match=r"d-flat.vmdk is not a regular file \(fifo\)"):
        inspect_image(desc, LIMITS)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_extent_device_node_in_directory_is_refused(tmp_path: Path, make_image: MakeImage) -> None:
    desc = make_image(tmp_path / "d.vmdk", "vmdk", "64M", "monolithicFlat")
    flat = tmp_path / "d-flat.vmdk"
    flat.unlink()
    os.mknod(flat, 0o600 | 0o020000, os.makedev(1, 5))  # a character device like /dev/zero
    with pytest.raises(BadInputError, match="not a regular file \\(character device\\)"):
        inspect_image(desc, LIMITS)


def test_split_sparse_extent_alone_is_refused(tmp_path: Path, make_image: MakeImage) -> None:
    make_image(tmp_path / "d.vmdk", "vmdk", "3G", "twoGbMaxExtentSparse")
    with pytest.raises(BadInputError, match="open its descriptor"):
        inspect_image(tmp_path / "d-s001.vmdk", LIMITS)


def test_image_source_is_a_symlink_to_device(tmp_path: Path, workdir: Path) -> None:
    link = tmp_path / "disk.img"
    link.symlink_to("/dev/null")
    with pytest.raises(BadInputError, match="not a regular file"):
        open_source(link, workdir=workdir)


def test_descriptor_parse_keys_and_extents() -> None:
    desc = parse_descriptor(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="twoGbMaxExtentFlat"\n'
        'RW 4192256 FLAT "a-f001.vmdk" 0\nRDONLY 2048 FLAT "a-f002.vmdk" 512\nRW 100 ZERO\n'
        'ddb.adapterType = "lsilogic"\nddb.geometry.cylinders = "522"\n'
    )
    assert desc.create_type == "twoGbMaxExtentFlat"
    assert [(e.access, e.sectors, e.kind, e.filename, e.offset) for e in desc.extents] == [
        ("RW", 4192256, "FLAT", "a-f001.vmdk", 0),
        ("RDONLY", 2048, "FLAT", "a-f002.vmdk", 512),
        ("RW", 100, "ZERO", None, 0),
    ]
    assert desc.capacity_bytes == (4192256 + 2048 + 100) * 512
    assert desc.ddb["ddb.adapterType"] == "lsilogic"
    assert desc.parent_hint is None


def test_a_descriptor_qemu_img_rewrote_with_a_shorter_cid_is_read_as_qemu_reads_it(
    tmp_path: Path, import_data: Path
) -> None:
    """tests/data/import/vmdk/short-cid.vmdk is a descriptor as `qemu-img convert -O vmdk -o
    subformat=monolithicFlat` left it (8 of 1,200 conversions of a 1 MiB raw did): its CID,
    rewritten on the first write without leading zeros, is two digits shorter, so the
    sector it wrote back holds the old text's last byte after the NUL. QEMU reads it; so
    do the file import and the vSphere import (they refused it: "binary data")."""
    data = (import_data / "vmdk" / "short-cid.vmdk").read_bytes()
    text = data.rstrip(b"\x00")
    assert b"CID=f08c80\n" in text and text.endswith(b'"2147483647"\n\x00\n')  # the shape
    descriptor = tmp_path / "x.vmdk"
    descriptor.write_bytes(data)
    with (tmp_path / "x-flat.vmdk").open("wb") as flat:
        flat.truncate(2**20)
    info = subprocess.run(["qemu-img", "info", "--output=json", str(descriptor)],
                          check=True, capture_output=True, text=True)  # fmt: skip
    assert '"virtual-size": 1048576' in info.stdout
    facts = inspect_image(descriptor, LIMITS)
    assert (facts.virtual_bytes, facts.subformat) == (2**20, "monolithicFlat")
    assert facts.data_file == str(tmp_path / "x-flat.vmdk")
    remote = remote_vmdk("[ds] x/x.vmdk", data, len(data))
    assert (remote.kind, remote.extent, remote.capacity_bytes) == ("flat", "x-flat.vmdk", 2**20)


def test_bare_image_defaults_and_overrides(
    tmp_path: Path, workdir: Path, make_image: MakeImage
) -> None:
    path = make_image(tmp_path / "app.qcow2", "qcow2", "1G")
    vm = open_source(path, workdir=workdir)
    assert (vm.name, vm.vcpus, vm.memory_mb, vm.firmware, vm.nics) == (
        "app",
        2,
        2048,
        Firmware.BIOS,
        (),
    )
    assert vm.disks[0].boot_order == 1
    assert vm.disks[0].path == str(path)
    overrides = ImageOverrides(
        name="app1",
        vcpus=4,
        cores=2,
        memory_mb=4096,
        firmware=Firmware.EFI,
        secure_boot=True,
        guest_family="linux",
        guest_distro="debian",
        guest_version="12",
        nic_macs=("52-54-00-AA-BB-CC",),
        nic_networks=("default", "storage"),
    )
    vm = open_source(path, workdir=workdir, overrides=overrides)
    assert (vm.name, vm.vcpus, vm.sockets, vm.cores, vm.memory_mb) == ("app1", 4, 2, 2, 4096)
    assert (vm.firmware, vm.secure_boot) == (Firmware.EFI, True)
    assert (vm.guest_os.family, vm.guest_os.distro, vm.guest_os.version) == (
        "linux",
        "debian",
        "12",
    )
    assert [(n.mac, n.network, n.model) for n in vm.nics] == [
        ("52:54:00:aa:bb:cc", "default", "virtio"),
        (None, "storage", "virtio"),
    ]


def test_bare_image_bad_overrides(tmp_path: Path, workdir: Path, make_image: MakeImage) -> None:
    path = make_image(tmp_path / "app.raw", "raw", "1M")
    with pytest.raises(BadInputError, match="not a MAC"):
        open_source(path, workdir=workdir, overrides=ImageOverrides(nic_macs=("nope",)))
    with pytest.raises(BadInputError, match="secure boot needs EFI"):
        open_source(path, workdir=workdir, overrides=ImageOverrides(secure_boot=True))
