"""`vmferry move-storage`'s plan: assess/storage_move.py (pure)."""

from __future__ import annotations

import pytest

from vmferry.assess.preflight import PoolFacts
from vmferry.assess.storage_move import StorageMove, StorageMoveRefused, plan_storage_move
from vmferry.model.vm import Disk, DiskDevice

MIB = 2**20
SHARED = "/srv/shared/pool"
POOLS = [PoolFacts("lab-shared", True, SHARED, 10_000 * MIB),
         PoolFacts("default", True, "/var/lib/libvirt/images", 100 * MIB),
         PoolFacts("off", False, "/srv/off", None)]  # fmt: skip
DISKS = [
    Disk("vda", "virtio", format="qcow2", source="lab-shared/web1.qcow2", source_kind="volume",
         pool="lab-shared", capacity_bytes=200 * MIB, allocation_bytes=60 * MIB),
    Disk("hdc", "ide", DiskDevice.CDROM, format="raw", source=None, source_kind="none"),
]  # fmt: skip


def plan(target: str = "vda", to_pool: str = "default", fmt: str | None = None,
         existing: tuple[str, ...] = (), path: str | None = f"{SHARED}/web1.qcow2",
         pools: list[PoolFacts] = POOLS) -> StorageMove:  # fmt: skip
    return plan_storage_move("web1", DISKS, path, target, pools, to_pool, fmt, existing)


def refused(**kwargs: object) -> StorageMoveRefused:
    with pytest.raises(StorageMoveRefused) as caught:
        plan(**kwargs)  # type: ignore[arg-type]
    return caught.value


def test_a_qcow2_disk_moves_into_another_pool_as_itself() -> None:
    assert plan() == StorageMove("vda", f"{SHARED}/web1.qcow2", "lab-shared", "default",
                                 "web1.qcow2", "qcow2", 200 * MIB, 60 * MIB)  # fmt: skip


def test_raw_needs_the_whole_capacity_and_a_taken_name_gets_another() -> None:
    renamed = plan(to_pool="lab-shared", path="/var/lib/libvirt/images/web1.qcow2", fmt="raw")
    assert renamed.volume == "web1.raw"  # named for its new format
    moved = plan(to_pool="lab-shared", path="/var/lib/libvirt/images/web1.qcow2", fmt="raw",
                 existing=("web1.raw",))  # fmt: skip
    assert (moved.volume, moved.fmt, moved.needed_bytes, moved.source_pool) == (
        "web1-vda.raw", "raw", 200 * MIB, "default")  # fmt: skip
    full = refused(to_pool="lab-shared", path="/var/lib/libvirt/images/web1.qcow2",
                   existing=("web1.qcow2", "web1-vda.qcow2"))  # fmt: skip
    assert full.blocked and "holds web1.qcow2 and web1-vda.qcow2" in full.message


def test_a_pool_too_small_blocks() -> None:
    small = refused(fmt="raw")  # 200 MiB raw into 100 MiB free
    assert small.blocked
    assert small.message == "pool default has 100 MiB free; the copy of vda needs 200 MiB"
    assert plan().needed_bytes == 60 * MIB  # qcow2: what the disk uses fits


@pytest.mark.parametrize(("kwargs", "message", "blocked"), [
    ({"target": "vdz"}, "web1 has no disk 'vdz' (its disks: vda)", False),
    ({"target": "hdc"}, "disk hdc of web1 is a cdrom of kind none: only file and volume "
                        "disks move", False),
    ({"to_pool": "nfs"}, "the host of web1 has no storage pool 'nfs' (it has: default, "
                         "lab-shared, off)", False),
    ({"to_pool": "lab-shared"}, "disk vda of web1 is in pool lab-shared already", False),
    ({"to_pool": "off"}, "storage pool off is not active; `virsh pool-start off` on the host "
                         "first", True),
    ({"fmt": "vmdk"}, "--format must be one of qcow2, raw (got 'vmdk')", False),
    ({"path": None}, "disk vda of web1 is no volume its host's libvirt knows (refresh the "
                     "pool that holds it)", True),
])  # fmt: skip
def test_what_cannot_move_says_why(kwargs: dict[str, object], message: str,
                                   blocked: bool) -> None:  # fmt: skip
    why = refused(**kwargs)
    assert (why.message, why.blocked) == (message, blocked)
