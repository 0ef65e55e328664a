"""Judging the disks a live move copied (--copy-storage): verify/disk_copies.py, and the
command line's rule for --delete-source-disks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.cli import vmferry

from vmferry.model.vm import Disk
from vmferry.verify.disk_copies import judge_copies

MIB = 2**20
PATH = "/var/lib/libvirt/images/web1-data.qcow2"


def disk(target: str, capacity: int | None = 16 * MIB, fmt: str = "qcow2") -> Disk:
    return Disk(target, "virtio", format=fmt, source=f"default/{target}.qcow2",
                source_kind="volume", pool="default", capacity_bytes=capacity)  # fmt: skip


def judge(after: list[Disk] | None, paths: dict[str, str | None] | None = None,
          before: list[Disk] | None = None) -> list[tuple[str, bool, tuple[str, ...]]]:  # fmt: skip
    judged = judge_copies(["vda"], before or [disk("vda"), disk("vdb")], {"vda": PATH}, after,
                          {"vda": PATH} if paths is None else paths, source="kvm1",
                          destination="kvm2")  # fmt: skip
    return [(d.target, d.verified, d.checks) for d in judged]


def test_a_copy_of_the_same_capacity_and_format_is_verified() -> None:
    judged = judge_copies(["vda"], [disk("vda")], {"vda": PATH}, [disk("vda")], {"vda": PATH},
                          source="kvm1", destination="kvm2")  # fmt: skip
    assert [(d.target, d.source_path, d.destination_path, d.verified, d.source_removed)
            for d in judged] == [("vda", PATH, PATH, True, False)]  # fmt: skip
    assert judged[0].checks == (f"vda on kvm2: {PATH}", "capacity 16 MiB as on kvm1",
                                "format qcow2 as on kvm1")  # fmt: skip


def test_a_copy_of_another_size_or_format_is_not_verified() -> None:
    assert judge([disk("vda", 8 * MIB)]) == [("vda", False, (
        f"vda on kvm2: {PATH}", "capacity 8 MiB on kvm2, 16 MiB on kvm1",
        "format qcow2 as on kvm1"))]  # fmt: skip
    assert judge([disk("vda", fmt="raw")])[0][1:] == (
        False,
        (f"vda on kvm2: {PATH}", "capacity 16 MiB as on kvm1", "format raw on kvm2, qcow2 on kvm1"),
    )
    unknown = judge([disk("vda")], before=[disk("vda", None)])
    assert unknown[0][1] is False
    assert "the capacity of vda on kvm1 was not known before the move" in unknown[0][2]


def test_a_copy_that_is_no_volume_or_no_disk_or_no_vm_is_not_verified() -> None:
    assert judge([disk("vda")], paths={"vda": None})[0][1:] == (False, (
        "vda on kvm2: default/vda.qcow2 is no volume libvirt knows there",
        "capacity 16 MiB as on kvm1", "format qcow2 as on kvm1"))  # fmt: skip
    assert judge([disk("vdb")]) == [("vda", False, ("the VM on kvm2 has no disk vda",))]
    assert judge(None) == [("vda", False, ("the VM does not run on kvm2",))]


def test_delete_source_disks_needs_cold_or_copy_storage(tmp_path: Path) -> None:
    done: subprocess.CompletedProcess[str] = vmferry(
        "migrate", "web1", "--to", "kvm2", "--delete-source-disks", db=tmp_path / "x.db"
    )
    assert (done.returncode, done.stderr.strip()) == (
        2, "vmferry: --delete-source-disks do(es) not apply to --strategy live")  # fmt: skip
    with_copy = vmferry("migrate", "web1", "--to", "kvm2", "--copy-storage",
                        "--delete-source-disks", db=tmp_path / "x.db")  # fmt: skip
    assert with_copy.returncode == 2  # accepted: it fails later, on the unknown host
    assert "no host named 'kvm2'" in with_copy.stderr, with_copy.stderr
