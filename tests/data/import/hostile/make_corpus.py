"""Writes the hostile import corpus into this directory, and its index ``cases.json``.

Run: ``python tests/data/import/hostile/make_corpus.py``. Every file is small (< 64 KiB)
and deterministic; the output is committed. Cases too large to commit (a VHDX needs its
region table at 192 KiB) are listed with ``"generated": true`` and built by the test with
``build_generated(name, directory)``. Every case must be refused by ``open_source`` with
``BadInputError`` whose message contains ``refused_because``, and nothing written.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
TiB = 1024**4

# -- binary images ---------------------------------------------------------------------------


def qcow2(
    *,
    size: int = 1 << 30,
    backing: bytes = b"",
    incompatible: int = 0,
    crypt: int = 0,
    version: int = 3,
) -> bytes:
    header_length = 104
    backing_offset = header_length if backing else 0
    head = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb",
        version,
        backing_offset,
        len(backing),
        16,  # cluster_bits
        size,
        crypt,
        0,  # l1_size
        0x30000,  # l1_table_offset
        0x10000,  # refcount_table_offset
        1,  # refcount_table_clusters
        0,  # nb_snapshots
        0,  # snapshots_offset
        incompatible,
        0,  # compatible
        0,  # autoclear
        4,  # refcount_order
        header_length,
    )
    return (head + backing).ljust(4096, b"\x00")


def vmdk_sparse(capacity_sectors: int, descriptor: str, *, embedded: bool = True) -> bytes:
    header = struct.pack(
        "<4sIIQQQQIQQQ",
        b"KDMV",
        1,
        3,
        capacity_sectors,
        128,  # grain
        1 if embedded else 0,  # descriptor offset (sectors)
        20 if embedded else 0,  # descriptor size (sectors)
        512,
        0,
        21,
        128,
    ).ljust(512, b"\x00")
    return header + descriptor.encode().ljust(20 * 512, b"\x00")


def sparse_descriptor(extra: str = "", sectors: int = 2048) -> str:
    return (
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        f'createType="monolithicSparse"\n{extra}\nRW {sectors} SPARSE "disk.vmdk"\n'
    )


def vhd_footer(disk_type: int, size: int = 1 << 30) -> bytes:
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    struct.pack_into(">II", footer, 8, 2, 0x00010000)
    struct.pack_into(">Q", footer, 16, 512 if disk_type != 2 else 0xFFFFFFFFFFFFFFFF)
    struct.pack_into(">QQ", footer, 40, size, size)
    struct.pack_into(">I", footer, 60, disk_type)
    return bytes(footer)


def vhdx(*, parent_locator: bool, has_parent: bool, size: int = 1 << 30) -> bytes:
    """A VHDX skeleton: identifier, region table at 192 KiB, metadata at 256 KiB."""
    meta_off, meta_len = 256 * 1024, 64 * 1024
    image = bytearray(meta_off + meta_len)
    image[0:8] = b"vhdxfile"
    table = bytearray(b"regi" + struct.pack("<III", 0, 1, 0))
    table += uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E").bytes_le
    table += struct.pack("<QII", meta_off, meta_len, 1)
    image[192 * 1024 : 192 * 1024 + len(table)] = table
    items = [
        (
            "CAA16737-FA36-4D43-B3B6-33F0AA44E76B",
            struct.pack("<II", 1 << 25, 2 if has_parent else 0),
        ),
        ("2FA54224-CD1B-4876-B211-5DBED83BF4B8", struct.pack("<Q", size)),
    ]
    if parent_locator:
        items.append(("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", b"\x00" * 20))
    meta = bytearray(b"metadata" + struct.pack("<HH", 0, len(items)) + b"\x00" * 20)
    data_at = 64 * 1024 // 2
    payload = bytearray()
    for guid, value in items:
        meta += uuid.UUID(guid).bytes_le + struct.pack(
            "<IIII", data_at + len(payload), len(value), 4, 0
        )
        payload += value
    image[meta_off : meta_off + len(meta)] = meta
    image[meta_off + data_at : meta_off + data_at + len(payload)] = payload
    return bytes(image)


# -- text descriptors ------------------------------------------------------------------------


def vmdk_descriptor(extent: str, create_type: str = "monolithicFlat", extra: str = "") -> str:
    return (
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        f'createType="{create_type}"\n{extra}\n# Extent description\n{extent}\n'
    )


OVF_TEMPLATE = """<?xml version="1.0" encoding="UTF-8"?>
{doctype}<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:id="file1" ovf:href="{href}"{file_attrs}/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="4096"/></DiskSection>
  {systems}
</Envelope>
"""
SYSTEM = """<VirtualSystem ovf:id="{name}"><Info>vm</Info><Name>{name}{entity}</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
      <Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType></Item>
      <Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:Parent>3</rasd:Parent><rasd:AddressOnParent>0</rasd:AddressOnParent></Item>
    </VirtualHardwareSection></VirtualSystem>"""


def ovf(
    href: str = "disk1.img",
    *,
    doctype: str = "",
    entity: str = "",
    file_attrs: str = "",
    systems: int = 1,
) -> bytes:
    body = "\n  ".join(SYSTEM.format(name=f"vm{i}", entity=entity) for i in range(1, systems + 1))
    return OVF_TEMPLATE.format(
        doctype=doctype, href=href, file_attrs=file_attrs, systems=body
    ).encode()


BILLION_LAUGHS = (
    '<!DOCTYPE Envelope [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
)

# -- OVA archives ----------------------------------------------------------------------------

Member = tuple[str, bytes | None, Callable[[tarfile.TarInfo], None] | None]


def ova(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data, adjust in members:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.mode = 0o644
            info.size = len(data) if data is not None else 0
            if adjust is not None:
                adjust(info)
            tar.addfile(info, io.BytesIO(data) if data is not None and info.isreg() else None)
    return buffer.getvalue()


def _kind(kind: bytes, linkname: str = "") -> Callable[[tarfile.TarInfo], None]:
    def adjust(info: tarfile.TarInfo) -> None:
        info.type = kind
        info.linkname = linkname
        info.size = 0
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 8, 0

    return adjust


DISK = b"\x00" * 4096


def manifest(files: dict[str, bytes], override: dict[str, str] | None = None) -> bytes:
    lines = []
    for name, data in files.items():
        digest = (override or {}).get(name) or hashlib.sha256(data).hexdigest()
        lines.append(f"SHA256({name})= {digest}\n")
    return "".join(lines).encode()


def good_ova_members(disk: bytes = DISK, *, mf: bytes | None = None) -> list[Member]:
    descriptor = ovf("disk1.img")
    files = {"vm.ovf": descriptor, "disk1.img": disk}
    return [
        ("vm.ovf", descriptor, None),
        ("disk1.img", disk, None),
        ("vm.mf", mf if mf is not None else manifest(files), None),
    ]


# -- the cases -------------------------------------------------------------------------------


def cases() -> list[tuple[str, bytes, str]]:
    """(file name, content, substring of the refusal)."""
    desc_ok = sparse_descriptor()
    ovf_members = good_ova_members()
    return [
        # qcow2
        ("qcow2-backing.qcow2", qcow2(backing=b"base.img"), "backing file (base.img)"),
        ("qcow2-data-file.qcow2", qcow2(incompatible=1 << 2), "external data file"),
        ("qcow2-1eib.qcow2", qcow2(size=1 << 60), "above the limit"),
        ("qcow2-encrypted.qcow2", qcow2(crypt=1), "encrypted"),
        ("qcow2-unknown-feature.qcow2", qcow2(incompatible=1 << 20), "unknown incompatible"),
        ("qcow2-v1.qcow2", qcow2(version=1), "qcow version 1"),
        ("qcow2-truncated.qcow2", b"QFI\xfb\x00\x00\x00\x03" + b"\x00" * 12, "truncated qcow2"),
        ("empty.qcow2", b"", "empty"),
        # VMDK sparse
        ("vmdk-sparse-32tib.vmdk", vmdk_sparse(32 * TiB // 512, desc_ok), "above the limit"),
        (
            "vmdk-sparse-delta.vmdk",
            vmdk_sparse(2048, sparse_descriptor('parentFileNameHint="base.vmdk"')),
            "delta disk with a parent (base.vmdk)",
        ),
        (
            "vmdk-sparse-fulldevice.vmdk",
            vmdk_sparse(2048, vmdk_descriptor('RW 2048 FLAT "/dev/sda" 0', "fullDevice")),
            "maps a host device",
        ),
        ("vmdk-sparse-truncated.vmdk", b"KDMV\x01\x00\x00\x00" + b"\x00" * 40, "truncated VMDK"),
        (
            "vmdk-sparse-no-descriptor.vmdk",
            vmdk_sparse(2048, "", embedded=False)[:512],
            "split disk",
        ),
        # VMDK descriptors
        ("vmdk-extent-dotdot.vmdk", vmdk_descriptor('RW 2048 FLAT "../x" 0').encode(), "outside"),
        (
            "vmdk-extent-etc-passwd.vmdk",
            vmdk_descriptor('RW 2048 FLAT "/etc/passwd" 0').encode(),
            "absolute path",
        ),
        (
            "vmdk-extent-dev-sda.vmdk",
            vmdk_descriptor('RW 2048 FLAT "/dev/sda" 0').encode(),
            "names a device",
        ),
        (
            "vmdk-fulldevice.vmdk",
            vmdk_descriptor('RW 2048 FLAT "/dev/sda" 0', "fullDevice").encode(),
            "createType fullDevice maps a host device",
        ),
        (
            "vmdk-partitioneddevice.vmdk",
            vmdk_descriptor('RW 2048 FLAT "disk-pt.vmdk" 0', "partitionedDevice").encode(),
            "maps a host device",
        ),
        (
            "vmdk-rdm.vmdk",
            vmdk_descriptor('RW 2048 VMFSRDM "disk-rdm.vmdk"', "vmfsRawDeviceMap").encode(),
            "maps a host device",
        ),
        (
            "vmdk-extent-vmfsraw.vmdk",
            vmdk_descriptor('RW 2048 VMFSRAW "disk-raw.vmdk"', "vmfs").encode(),
            "maps a host device",
        ),
        (
            "vmdk-delta.vmdk",
            vmdk_descriptor(
                'RW 2048 SPARSE "delta-s001.vmdk"',
                "vmfsSparse",
                'parentFileNameHint="/vmfs/volumes/ds1/base.vmdk"',
            )
            .replace("parentCID=ffffffff", "parentCID=1234abcd")
            .encode(),
            "delta disk with a parent",
        ),
        (
            "vmdk-over-limit.vmdk",
            vmdk_descriptor(f'RW {32 * TiB // 512} FLAT "big-flat.vmdk" 0').encode(),
            "above the limit",
        ),
        (
            "vmdk-missing-extent.vmdk",
            vmdk_descriptor('RW 2048 FLAT "gone-flat.vmdk" 0').encode(),
            "is missing",
        ),
        (
            "vmdk-no-createtype.vmdk",
            b'# Disk DescriptorFile\nversion=1\nRW 2048 FLAT "x" 0\n',
            "no createType",
        ),
        ("empty.vmdk", b"", "empty"),
        # VHD / VHDX
        ("vhd-differencing.vhd", vhd_footer(4) + b"\x00" * 1024 + vhd_footer(4), "differencing"),
        ("vhd-truncated.vhd", b"conectix" + b"\x00" * 100, "truncated VHD"),
        ("vhd-32tib.vhd", vhd_footer(2, 32 * TiB), "above the limit"),
        ("vhdx-truncated.vhdx", b"vhdxfile" + b"\x00" * 1024, "truncated VHDX"),
        # raw files that are something else
        ("disk-qcow2-magic.raw", qcow2(), "holds a qcow2 image; rename it to .qcow2"),
        ("disk-vmdk-magic.img", vmdk_sparse(2048, desc_ok), "holds a VMDK image"),
        ("disk-vhdx-magic.img", b"vhdxfile" + b"\x00" * 1024, "holds a VHDX image"),
        ("disk-qed-magic.img", b"QED\x00" + b"\x00" * 1020, "holds a QED image"),
        ("image-is-qcow2.vmdk", qcow2(), "holds a qcow2 image"),
        ("empty.raw", b"", "empty"),
        # OVF
        ("ovf-dtd.ovf", ovf(doctype="<!DOCTYPE Envelope>\n"), "DTD"),
        (
            "ovf-external-entity.ovf",
            ovf(
                doctype='<!DOCTYPE Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n',
                entity="&xxe;",
            ),
            "DTD",
        ),
        ("ovf-billion-laughs.ovf", ovf(doctype=BILLION_LAUGHS, entity="&lol9;"), "DTD"),
        ("ovf-dotdot-href.ovf", ovf("../disk.vmdk"), "not a plain file name"),
        ("ovf-absolute-href.ovf", ovf("/etc/passwd"), "not a plain file name"),
        ("ovf-url-href.ovf", ovf("http://evil.example/disk.vmdk"), "not a plain file name"),
        ("ovf-missing-disk.ovf", ovf("absent.vmdk"), "missing from the package"),
        ("ovf-gzip.ovf", ovf(file_attrs=' ovf:compression="gzip"'), "compressed"),
        ("ovf-two-systems.ovf", ovf(systems=2), "2 virtual systems"),
        ("ovf-not-xml.ovf", b"<Envelope><unclosed></Envelope>", "not well-formed"),
        ("ovf-not-ovf.ovf", b"<html><body/></html>", "not an OVF"),
        ("empty.ovf", b"", "empty"),
        # OVA
        ("ova-dotdot.ova", ova([("../evil", b"x", None), *ovf_members]), "outside the archive"),
        ("ova-absolute.ova", ova([("/etc/evil", b"x", None), *ovf_members]), "absolute path"),
        (
            "ova-symlink.ova",
            ova([*ovf_members, ("link.vmdk", None, _kind(tarfile.SYMTYPE, "/etc/shadow"))]),
            "is a symlink",
        ),
        (
            "ova-hardlink.ova",
            ova([*ovf_members, ("hard.vmdk", None, _kind(tarfile.LNKTYPE, "vm.ovf"))]),
            "is a hard link",
        ),
        (
            "ova-chardev.ova",
            ova([*ovf_members, ("tty.vmdk", None, _kind(tarfile.CHRTYPE))]),
            "device node",
        ),
        (
            "ova-blockdev.ova",
            ova([*ovf_members, ("sda.vmdk", None, _kind(tarfile.BLKTYPE))]),
            "device node",
        ),
        ("ova-fifo.ova", ova([*ovf_members, ("pipe", None, _kind(tarfile.FIFOTYPE))]), "fifo"),
        (
            "ova-directory.ova",
            ova([*ovf_members, ("sub", None, _kind(tarfile.DIRTYPE))]),
            "directory",
        ),
        (
            "ova-subdir-member.ova",
            ova([*ovf_members, ("sub/disk.vmdk", b"x", None)]),
            "subdirectory",
        ),
        (
            "ova-manifest-mismatch.ova",
            ova(
                good_ova_members(
                    mf=manifest(
                        {"vm.ovf": ovf("disk1.img"), "disk1.img": DISK},
                        {"disk1.img": "0" * 64},
                    )
                )
            ),
            "manifest mismatch for disk1.img",
        ),
        (
            "ova-manifest-missing-file.ova",
            ova(
                good_ova_members(
                    mf=manifest({"vm.ovf": ovf("disk1.img"), "disk1.img": DISK})
                    + b"SHA1(ghost.vmdk)= "
                    + b"0" * 40
                    + b"\n"
                )
            ),
            "manifest names ghost.vmdk, which is not in the OVA",
        ),
        (
            "ova-manifest-garbage.ova",
            ova(good_ova_members(mf=b"this is not a manifest\n")),
            "manifest line 1",
        ),
        (
            "ova-too-many-members.ova",
            ova([*ovf_members, *((f"f{i:03}.txt", b"", None) for i in range(70))]),
            "more than 64 members",
        ),
        ("ova-duplicate.ova", ova([*ovf_members, ("disk1.img", DISK, None)]), "appears twice"),
        ("ova-no-ovf.ova", ova([("disk1.img", DISK, None)]), "no .ovf"),
        ("ova-missing-disk.ova", ova([("vm.ovf", ovf("disk1.img"), None)]), "lacks the disk file"),
        (
            "ova-backing-disk.ova",
            ova(
                [
                    ("vm.ovf", ovf("disk1.img"), None),
                    ("disk1.img", qcow2(backing=b"/etc/base.qcow2"), None),
                ]
            ),
            "backing file (/etc/base.qcow2)",
        ),
        (
            "ova-ovf-dtd.ova",
            ova([("vm.ovf", ovf(doctype=BILLION_LAUGHS, entity="&lol9;"), None)]),
            "DTD",
        ),
        ("ova-not-a-tar.ova", b"this is no tar archive\n" * 40, "not an uncompressed tar"),
        ("empty.ova", b"", "empty"),
        # VMX
        ("garbage.vmx", bytes(range(256)) * 8, "binary data"),
        ("garbage-text.vmx", b"this is not a vmx file\njust text\n", "not key = value"),
        ("vmx-no-memsize.vmx", b'.encoding = "UTF-8"\ndisplayName = "x"\n', "no memsize"),
        ("vmx-disk-dev.vmx", vmx_with_disk("/dev/null"), "not a regular file"),
        ("vmx-disk-passwd.vmx", vmx_with_disk("/etc/passwd"), "is not a VMDK"),
        ("vmx-disk-missing.vmx", vmx_with_disk("nothere.vmdk"), "file not found"),
        ("vmx-disk-hostile.vmx", vmx_with_disk("vmdk-extent-dotdot.vmdk"), "outside"),
        ("vmx-unterminated.vmx", b'memsize = "1024\n', "unterminated"),
        ("empty.vmx", b"", "empty"),
        ("unknown.iso", b"\x00" * 64, "unknown source type"),
    ]


def vmx_with_disk(file_name: str) -> bytes:
    return (
        '.encoding = "UTF-8"\nconfig.version = "8"\nvirtualHW.version = "19"\n'
        'memsize = "1024"\nnumvcpus = "1"\nscsi0.present = "TRUE"\n'
        'scsi0.virtualDev = "pvscsi"\nscsi0:0.present = "TRUE"\n'
        f'scsi0:0.fileName = "{file_name}"\n'
    ).encode()


GENERATED: dict[str, tuple[Callable[[], bytes], str]] = {
    "vhdx-differencing.vhdx": (
        lambda: vhdx(parent_locator=True, has_parent=True),
        "differencing disk (it has a parent locator)",
    ),
    "vhdx-has-parent.vhdx": (lambda: vhdx(parent_locator=False, has_parent=True), "HasParent"),
    "vhdx-32tib.vhdx": (
        lambda: vhdx(parent_locator=False, has_parent=False, size=32 * TiB),
        "above the limit",
    ),
}


def build_generated(name: str, directory: Path) -> Path:
    """Write the generated case ``name`` into ``directory``; returns its path."""
    target = directory / name
    target.write_bytes(GENERATED[name][0]())
    return target


def main() -> int:
    index = []
    for name, data, reason in cases():
        assert len(data) < 64 * 1024, f"{name} is {len(data)} bytes"
        (HERE / name).write_bytes(data)
        index.append({"file": name, "refused_because": reason})
    for name, (_, reason) in GENERATED.items():
        index.append({"file": name, "refused_because": reason, "generated": True})
    (HERE / "cases.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"wrote {len(index)} cases to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
