"""OVA (a tar of an OVF package) read in place: members checked, manifest verified, disks
copied into a private work directory.

Nothing is extracted with ``tarfile``'s extract functions. Every member must be a regular
file with a plain name (no absolute path, ``..``, subdirectory, link, device node or fifo);
their count and total size are limited. The OVF member is read into memory. Only the disk
files the OVF uses are copied, to ``workdir/<name>`` created exclusively, while their
digests are computed; when a ``.mf`` manifest is present every file it lists must exist and
match, and every disk must be listed. On any refusal the files written so far are removed.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO

from vmferry.model.source_vm import SourceFormat, SourceVm
from vmferry.sources import manifest
from vmferry.sources.image import ImageFacts, check_image
from vmferry.sources.limits import Limits
from vmferry.sources.ovf import OvfDiskSlot, build_vm, check_href, parse_ovf
from vmferry.sources.refusal import Refused, bad_input, printable, regular_file_size

_CHUNK = 1024 * 1024


def check_member(member: tarfile.TarInfo) -> str:
    """The member's plain name; refuses paths and types that must not come out of an OVA."""
    raw = member.name
    shown = printable(raw)
    if raw.startswith("/"):
        raise Refused(f"OVA member {shown} has an absolute path; refused")
    parts = PurePosixPath(raw).parts
    if ".." in parts:
        raise Refused(f"OVA member {shown} points outside the archive (..); refused")
    if member.issym():
        raise Refused(f"OVA member {shown} is a symlink (to {printable(member.linkname)}); refused")
    if member.islnk():
        raise Refused(
            f"OVA member {shown} is a hard link (to {printable(member.linkname)}); refused"
        )
    if member.ischr() or member.isblk():
        raise Refused(f"OVA member {shown} is a device node; refused")
    if member.isfifo():
        raise Refused(f"OVA member {shown} is a fifo; refused")
    if member.isdir():
        raise Refused(f"OVA member {shown} is a directory; an OVA holds only files")
    if not member.isreg() or member.issparse():
        raise Refused(f"OVA member {shown} is not a plain regular file; refused")
    name = "/".join(p for p in parts if p != ".")
    if "/" in name:
        raise Refused(f"OVA member {shown} is in a subdirectory; an OVA holds only files")
    check_href(name)
    return name


def _list_members(tar: tarfile.TarFile, limits: Limits) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    total = 0
    while (member := tar.next()) is not None:
        if len(members) >= limits.max_ova_members:
            raise Refused(f"OVA has more than {limits.max_ova_members} members; refused")
        name = check_member(member)
        if name in members:
            raise Refused(f"OVA member {printable(name)} appears twice; refused")
        total += member.size
        if total > limits.max_ova_bytes:
            raise Refused(f"OVA members add up to more than {limits.max_ova_bytes} bytes")
        members[name] = member
    if not members:
        raise Refused("OVA holds no files")
    return members


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, what: str) -> bytes:
    if member.size > limit:
        raise Refused(f"OVA {what} {printable(member.name)} is above the {limit}-byte limit")
    stream = tar.extractfile(member)
    if stream is None:
        raise Refused(f"OVA member {printable(member.name)} cannot be read")
    data = stream.read(limit + 1)
    if len(data) != member.size:
        raise Refused(f"OVA member {printable(member.name)} is truncated")
    return data


def _pick(members: dict[str, tarfile.TarInfo], suffix: str, what: str) -> str | None:
    found = [n for n in members if n.lower().endswith(suffix)]
    if len(found) > 1:
        raise Refused(f"OVA holds {len(found)} {what} files; expected one")
    return found[0] if found else None


def _copy(
    stream: IO[bytes],
    target: Path,
    expected: int,
    digest: manifest.Hasher | None,
    written: list[Path],
) -> None:
    """Copy ``expected`` bytes to a new ``target`` (never an existing file or a link)."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise Refused(f"cannot create {printable(str(target))} ({exc.strerror})") from None
    written.append(target)
    copied = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(_CHUNK):
            copied += len(chunk)
            if copied > expected:
                break
            if digest is not None:
                digest.update(chunk)
            out.write(chunk)
    if copied != expected:
        raise Refused(f"OVA member {printable(target.name)} is truncated or longer than declared")


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo, digest: manifest.Hasher) -> None:
    stream = tar.extractfile(member)
    if stream is None:
        raise Refused(f"OVA member {printable(member.name)} cannot be read")
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)


def read_ova(path: Path, *, workdir: Path, limits: Limits) -> SourceVm:
    """The VM an OVA describes; its disks are copied into ``workdir`` and inspected there."""
    written: list[Path] = []
    try:
        return _read_ova(path, workdir, limits, written)
    except Refused as exc:
        raise bad_input(path, exc.reason) from None
    finally:
        # On success ``written`` is cleared by ``_read_ova``; otherwise undo every copy.
        for target in written:
            target.unlink(missing_ok=True)


def _read_ova(path: Path, workdir: Path, limits: Limits, written: list[Path]) -> SourceVm:
    if regular_file_size(path) == 0:
        raise Refused("file is empty; not an OVA")
    if not workdir.is_dir() or workdir.is_symlink():
        raise Refused(f"work directory {printable(str(workdir))} is not a directory")
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise Refused(f"not an uncompressed tar archive ({printable(str(exc), 60)})") from None
    with tar:
        try:
            members = _list_members(tar, limits)
        except tarfile.TarError as exc:
            raise Refused(f"OVA tar is damaged ({printable(str(exc), 60)})") from None
        ovf_name = _pick(members, ".ovf", "OVF")
        if ovf_name is None:
            raise Refused("OVA holds no .ovf descriptor")
        ovf_data = _read_small(tar, members[ovf_name], limits.max_descriptor_bytes, "descriptor")
        try:
            desc = parse_ovf(ovf_data)
        except Refused as exc:
            raise Refused(f"{printable(ovf_name)}: {exc.reason}") from None
        mf_name = _pick(members, ".mf", "manifest")
        entries: dict[str, manifest.ManifestEntry] = {}
        if mf_name is not None:
            mf_data = _read_small(tar, members[mf_name], limits.max_descriptor_bytes, "manifest")
            entries = manifest.parse_manifest(mf_data.decode("utf-8", "replace"))
        warnings = _check_listing(desc.disks, members, entries, ovf_name, mf_name)
        if ovf_name in entries:
            digest = manifest.new_hash(entries[ovf_name])
            digest.update(ovf_data)
            manifest.check_digest(entries[ovf_name], digest.hexdigest())
        disk_names = sorted({slot.href for slot in desc.disks})
        for name, entry in entries.items():
            if name not in disk_names and name != ovf_name:
                digest = manifest.new_hash(entry)
                _hash_member(tar, members[name], digest)
                manifest.check_digest(entry, digest.hexdigest())
        facts: dict[str, ImageFacts] = {}
        for name in disk_names:
            stream = tar.extractfile(members[name])
            if stream is None:
                raise Refused(f"OVA member {printable(name)} cannot be read")
            target = workdir / name
            disk_entry = entries.get(name)
            disk_digest = manifest.new_hash(disk_entry) if disk_entry is not None else None
            _copy(stream, target, members[name].size, disk_digest, written)
            if disk_entry is not None and disk_digest is not None:
                manifest.check_digest(disk_entry, disk_digest.hexdigest())
        for name in disk_names:
            try:
                facts[name] = check_image(workdir / name, limits)
            except Refused as exc:
                raise Refused(f"disk {printable(name)}: {exc.reason}") from None
    vm = build_vm(
        desc,
        source_format=SourceFormat.OVA,
        default_name=path.stem,
        disk_facts=facts,
        media_path=lambda _href: None,
    )
    written.clear()
    if warnings:
        return _with_warnings(vm, warnings)
    return vm


def _check_listing(
    slots: tuple[OvfDiskSlot, ...],
    members: dict[str, tarfile.TarInfo],
    entries: dict[str, manifest.ManifestEntry],
    ovf_name: str,
    mf_name: str | None,
) -> list[str]:
    warnings: list[str] = []
    hrefs = [s.href for s in slots]
    for href in hrefs:
        if href not in members:
            raise Refused(f"OVA lacks the disk file {printable(href)} its OVF names")
    for name in entries:
        if name not in members:
            raise Refused(f"manifest names {printable(name)}, which is not in the OVA")
    if mf_name is not None:
        for href in [ovf_name, *hrefs]:
            if href not in entries:
                raise Refused(f"manifest {printable(mf_name)} does not list {printable(href)}")
    else:
        warnings.append("OVA has no manifest (.mf); its files are not checked against digests")
    for name in members:
        if name.lower().endswith(".cert"):
            warnings.append(f"OVA signature {printable(name)} is not checked")
    return warnings


def _with_warnings(vm: SourceVm, extra: list[str]) -> SourceVm:
    return dataclasses.replace(vm, warnings=(*vm.warnings, *extra))
