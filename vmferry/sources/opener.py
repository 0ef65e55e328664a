"""``open_source``: pick the parser for a path (extension checked against content), parse,
and inspect every disk it hands over."""

from __future__ import annotations

from pathlib import Path

from vmferry.model.source_vm import ImageFormat, SourceFormat, SourceVm
from vmferry.sources.bare import ImageOverrides, bare_image_vm
from vmferry.sources.image import FORMAT_NAMES, detect_format, inspect_image
from vmferry.sources.limits import DEFAULT_LIMITS, Limits
from vmferry.sources.ova import read_ova
from vmferry.sources.ovf import read_ovf
from vmferry.sources.refusal import bad_input
from vmferry.sources.vmx import read_vmx

# Extension -> the formats its content may have (the magic decides which).
IMAGE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    ".qcow2": (ImageFormat.QCOW2.value,),
    ".vmdk": (ImageFormat.VMDK.value, "vmdk-descriptor"),
    ".vhdx": (ImageFormat.VHDX.value,),
    ".vhd": (ImageFormat.VPC.value,),
    ".img": (ImageFormat.RAW.value,),
    ".raw": (ImageFormat.RAW.value,),
}
SUFFIX_FOR = {
    ImageFormat.QCOW2.value: ".qcow2",
    ImageFormat.VMDK.value: ".vmdk",
    "vmdk-descriptor": ".vmdk",
    ImageFormat.VHDX.value: ".vhdx",
    ImageFormat.VPC.value: ".vhd",
}


def open_source(
    path: Path,
    *,
    workdir: Path,
    limits: Limits = DEFAULT_LIMITS,
    overrides: ImageOverrides | None = None,
) -> SourceVm:
    """The VM that ``path`` (a .vmx, .ovf, .ova or a bare disk image) describes.

    Every ``SourceDisk.path`` of the result has passed ``inspect_image``: it is safe to give
    to ``qemu-img convert -f <format>``. Only an OVA writes, and only into ``workdir`` (which
    the caller creates, private); a refused OVA leaves nothing there. Anything refused
    raises ``BadInputError`` with one line naming the file and the reason.
    """
    suffix = path.suffix.lower()
    if suffix == ".vmx":
        return read_vmx(path, limits)
    if suffix == ".ovf":
        return read_ovf(path, limits)
    if suffix == ".ova":
        return read_ova(path, workdir=workdir, limits=limits)
    if suffix not in IMAGE_EXTENSIONS:
        raise bad_input(
            path,
            "unknown source type; expected .vmx, .ovf, .ova or a disk image "
            "(.vmdk, .vhdx, .vhd, .qcow2, .img, .raw)",
        )
    found = detect_format(path)
    if found not in IMAGE_EXTENSIONS[suffix]:
        real = FORMAT_NAMES.get(found, found)
        hint = f"; rename it to {SUFFIX_FOR[found]}" if found in SUFFIX_FOR else ""
        raise bad_input(path, f"file named {suffix} holds a {real} image{hint}")
    facts = inspect_image(path, limits)
    source_format = SourceFormat.VHDX if suffix in (".vhdx", ".vhd") else SourceFormat.IMAGE
    return bare_image_vm(facts, overrides or ImageOverrides(), source_format)
