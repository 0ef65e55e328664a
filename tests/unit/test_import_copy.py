"""`vmferry import`'s disk step on real small images: the copy is proved by its read-back, and
a copy that changed between its write and its read-back is refused in one line."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from vmferry.drivers import verified_copy
from vmferry.errors import VmferryError
from vmferry.imports.mapping import PlannedDisk
from vmferry.service import import_vm

MIB = 2**20


def _disk(tmp_path: Path) -> PlannedDisk:
    raw = tmp_path / "web1.raw"
    with open(raw, "wb") as f:
        f.truncate(32 * MIB)
        f.seek(MIB)
        f.write(b"vmferry!" * (MIB // 8))
    vmdk = tmp_path / "web1.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(vmdk)],
                   check=True, capture_output=True)  # fmt: skip
    return PlannedDisk(0, str(vmdk), "vmdk", 32 * MIB, None, "vda", "virtio", "web1-disk0.qcow2",
                       1)  # fmt: skip


def _copy(tmp_path: Path, disk: PlannedDisk) -> tuple[import_vm.DiskOutcome, dict[str, int]]:
    clock = import_vm._Clock()
    request = import_vm.ImportRequest(Path(disk.source_path), "kvm1")
    part = tmp_path / ("web1-disk0.qcow2" + import_vm.PART_SUFFIX)
    notes: list[str] = []
    outcome = import_vm._copy_disk(request, disk, part, False, clock, notes.append,
                                   lambda i, p: None, import_vm._file_copier(request))  # fmt: skip
    return outcome, clock.phases


def test_a_copy_is_proved_and_its_phases_recorded(tmp_path: Path) -> None:
    outcome, phases = _copy(tmp_path, _disk(tmp_path))
    assert outcome.checksum_match is True
    assert outcome.bytes_written <= MIB + 8 * 65536  # sparse: 1 MiB of data and metadata
    assert set(phases) == {"copy", "verify"}


def test_a_copy_that_changed_before_its_read_back_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = verified_copy.copy_with_digest

    def then_corrupt(source: Path, fmt: str, target: Path, **kw: object) -> object:
        result = real(source, fmt, target, **kw)  # type: ignore[arg-type]
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 1M 4k", str(target)],
                       check=True, capture_output=True)  # fmt: skip
        return result

    monkeypatch.setattr(verified_copy, "copy_with_digest", then_corrupt)
    with pytest.raises(VmferryError) as failed:
        _copy(tmp_path, _disk(tmp_path))
    assert failed.value.message == (
        "disk 0: the copy of web1.vmdk differs from it in the GiB at offset 0; nothing was defined"
    )
    assert "\n" not in failed.value.message


@pytest.mark.parametrize("written_here", [False, True])
def test_the_users_disk_is_read_past_the_page_cache_and_a_file_the_import_wrote_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written_here: bool
) -> None:
    disk = _disk(tmp_path)
    disk = replace(disk, source_data_file=disk.source_path, source_written_here=written_here)
    asked: list[object] = []
    real = verified_copy.copy_with_digest

    def copy(source: Path, fmt: str, target: Path, **kw: object) -> object:
        asked.append(kw["direct"])
        return real(source, fmt, target, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(verified_copy, "copy_with_digest", copy)
    outcome, _phases = _copy(tmp_path, disk)
    assert outcome.checksum_match is True
    assert asked == [not written_here]
