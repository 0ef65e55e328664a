"""The simulator harness's changed block tracking (tests/support/vcsim/main.go), which the
warm import relies on: a guest's writes into a monolithicFlat disk land in its flat file
and are logged, a snapshot of a VM with CBT on fixes a change id per disk, and
QueryChangedDiskAreas answers, through pyvmomi, with exactly the areas written between two
change ids ("*": the areas that hold data), or with the faults vSphere raises."""

from __future__ import annotations

import re
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim, vmodl
from support.vcsim import Vcsim, running_vcsim, write_disk
from support.vcsim_disks import DATASTORE, MIB, admin, find_vm, place_disk, wait

KIB = 1024
CAPACITY = 24 * MIB  # place_disk's disks
VM = "DC0_H0_VM0"  # the story below
REMOVED = "DC0_C0_RP0_VM0"  # RemoveSnapshot_Task
UNTRACKED = "DC0_H0_VM1"  # CBT off

# Two writes between snapshots 1 and 2 (one not 64 KiB-aligned), two touching ones after.
W1 = (4 * MIB + 100, b"\xa5" * 5000)
W2 = (6 * MIB, b"\x5a" * (128 * KIB))
W3 = (12 * MIB, b"\x33" * 1000)
W4 = (12 * MIB + 1000, b"\x44" * 24)


def disk_path(vm: str) -> str:
    return f"[{DATASTORE}] {vm}/{vm}-monolithicFlat.vmdk"


def change_id(key: int, seq: int) -> str:
    return f"52 76 cbt-vcsim {key}/{seq}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    with running_vcsim(tmp_path_factory.mktemp("vcsim")) as started:
        yield started


@pytest.fixture
def instance(sim: Vcsim) -> Iterator[Any]:
    with admin(sim) as logged_in:
        yield logged_in


def first_disk(managed: Any) -> Any:
    """The first VirtualDisk in a VM's or a snapshot's config."""
    return next(d for d in managed.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualDisk))  # fmt: skip


def snapshot(vm: Any, name: str) -> Any:
    wait(vm.CreateSnapshot_Task(name, "", False, False))
    return vm.snapshot.currentSnapshot


def enable_cbt(vm: Any) -> None:
    wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))


def areas(vm: Any, snap: Any, key: int, change: str, start: int = 0) -> list[tuple[int, int]]:
    info = vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=start,
                                    changeId=change)  # fmt: skip
    assert (info.startOffset, info.length) == (start, CAPACITY - start)
    return [(area.start, area.length) for area in info.changedArea]


def flat_file(instance: Any, vm: str) -> Path:
    """Where the simulator keeps ``vm``'s disk's raw extent on this machine."""
    datacenter = instance.content.rootFolder.childEntity[0]
    datastore = next(ds for ds in datacenter.datastore if ds.name == DATASTORE)
    return Path(datastore.summary.url) / vm / f"{vm}-monolithicFlat-flat.vmdk"


@dataclass(frozen=True)
class Story:
    """VM with CBT on: snapshot 1, W1 and W2, snapshot 2, W3 and W4, snapshot 3."""

    key: int
    snaps: tuple[Any, Any, Any]
    ids: tuple[str, str, str]  # each snapshot's change id for the disk, read right after it
    seqs: tuple[int, int, int, int]  # of W1..W4


@pytest.fixture(scope="module")
def story(sim: Vcsim, tmp_path_factory: pytest.TempPathFactory) -> Story:
    place_disk(sim, tmp_path_factory.mktemp("disks"), VM, "monolithicFlat")
    with admin(sim) as instance:
        vm = find_vm(instance, VM)
        enable_cbt(vm)
        key = first_disk(vm).key
        snaps: list[Any] = []
        ids: list[str] = []
        seqs: list[int] = []
        for writes in ((), (W1, W2), (W3, W4)):
            seqs += [write_disk(sim, disk_path(VM), offset, data) for offset, data in writes]
            snaps.append(snapshot(vm, f"s{len(snaps) + 1}"))
            ids.append(first_disk(snaps[-1]).backing.changeId)
        return Story(key, (snaps[0], snaps[1], snaps[2]), (ids[0], ids[1], ids[2]),
                     (seqs[0], seqs[1], seqs[2], seqs[3]))  # fmt: skip


def test_snapshots_fix_change_ids_naming_the_last_write(instance: Any, story: Story) -> None:
    assert story.seqs == tuple(range(story.seqs[0], story.seqs[0] + 4))
    assert story.ids == (change_id(story.key, story.seqs[0] - 1),
                         change_id(story.key, story.seqs[1]),
                         change_id(story.key, story.seqs[3]))  # fmt: skip
    vm = find_vm(instance, VM)
    by_name = {tree.name: tree.snapshot for tree in walk(vm.snapshot.rootSnapshotList)}
    later = [first_disk(by_name[f"s{n}"]).backing.changeId for n in (1, 2, 3)]
    assert tuple(later) == story.ids  # a later snapshot changed no earlier one's
    assert first_disk(vm).backing.changeId == story.ids[2]  # the VM shows the latest
    assert first_disk(vm).backing.fileName == disk_path(VM)  # no delta disk, no parent
    assert first_disk(vm).backing.parent is None


def walk(trees: list[Any]) -> Iterator[Any]:
    for tree in trees:
        yield tree
        yield from walk(tree.childSnapshotList)


def test_changes_between_two_snapshots_are_exactly_the_writes_between(
    instance: Any, story: Story
) -> None:
    vm = find_vm(instance, VM)
    one, two, three = story.snaps
    first, second, _ = story.ids
    written = [(W1[0], len(W1[1])), (W2[0], len(W2[1]))]
    assert areas(vm, two, story.key, first) == written  # W3, W4 came after snapshot 2
    assert areas(vm, three, story.key, second) == [(W3[0], len(W3[1]) + len(W4[1]))]  # touch
    assert areas(vm, three, story.key, first) == [*written, (W3[0], 1024)]
    assert areas(vm, two, story.key, second) == []
    assert areas(vm, one, story.key, first) == []
    start = W1[0] + 2000  # from startOffset on
    assert areas(vm, two, story.key, first, start) == [(start, 3000), written[1]]


def test_star_gives_the_64k_blocks_that_hold_data(instance: Any, story: Story) -> None:
    vm = find_vm(instance, VM)
    block = 64 * KIB
    data = [(0, MIB),  # place_disk's content: 1 MiB, 1 MiB at 9 MiB + 4 KiB, the last sector
            (W1[0] - 100, block), (W2[0], len(W2[1])),
            (9 * MIB, MIB + block), (W3[0], block),
            (CAPACITY - block, block)]  # fmt: skip
    assert areas(vm, story.snaps[1], story.key, "*") == data  # the flat file as it is now
    assert areas(vm, story.snaps[1], story.key, "*", W1[0]) == [(W1[0], block - 100), *data[2:]]


def test_writes_land_in_the_flat_file(instance: Any, story: Story) -> None:
    with flat_file(instance, VM).open("rb") as flat:
        for offset, data in (W1, W2, W3, W4):
            flat.seek(offset)
            assert flat.read(len(data)) == data


def test_a_write_to_no_disk_or_past_its_end_is_refused(sim: Vcsim, story: Story) -> None:
    for disk in (f"[{DATASTORE}] {VM}/nothing.vmdk", f"[NoSuchDS] {VM}/{VM}-monolithicFlat.vmdk"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            write_disk(sim, disk, 0, b"x")
        assert refused.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as refused:
        write_disk(sim, disk_path(VM), CAPACITY - 1, b"xy")
    assert refused.value.code == 400


def test_faults(instance: Any, story: Story) -> None:
    vm = find_vm(instance, VM)
    one, two, _ = story.snaps
    first, second, _ = story.ids
    wrong = {
        "changeId": [dict(changeId="52 76 cbt-vcsim nonsense"), dict(changeId="*x"),
                     dict(changeId=change_id(story.key + 1, 0)),  # another disk's
                     dict(snapshot=one, changeId=second)],  # newer than the snapshot
        "deviceKey": [dict(deviceKey=story.key + 1)],
        "snapshot": [dict(snapshot=None)],
        "startOffset": [dict(startOffset=CAPACITY + 1)],
    }  # fmt: skip
    for invalid, calls in wrong.items():
        for call in calls:
            arguments = {"snapshot": two, "deviceKey": story.key, "startOffset": 0,
                         "changeId": first, **call}  # fmt: skip
            with pytest.raises(vmodl.fault.InvalidArgument) as fault:
                vm.QueryChangedDiskAreas(**arguments)
            assert fault.value.invalidProperty == invalid, call


def test_cbt_off_leaves_change_ids_empty_and_the_query_fails(
    sim: Vcsim, instance: Any, tmp_path: Path
) -> None:
    place_disk(sim, tmp_path, UNTRACKED, "monolithicFlat")
    vm = find_vm(instance, UNTRACKED)
    assert not vm.config.changeTrackingEnabled
    snap = snapshot(vm, "untracked")
    key = first_disk(vm).key
    assert not first_disk(snap).backing.changeId
    assert not first_disk(vm).backing.changeId
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=0, changeId="*")
    enable_cbt(vm)  # on now, but that snapshot has no change id
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=0,
                                 changeId=change_id(key, 0))  # fmt: skip


def test_removing_the_older_snapshot_keeps_the_newer_answering(
    sim: Vcsim, instance: Any, tmp_path: Path
) -> None:
    place_disk(sim, tmp_path, REMOVED, "monolithicFlat")
    vm = find_vm(instance, REMOVED)
    enable_cbt(vm)
    key = first_disk(vm).key
    one = snapshot(vm, "one")
    first = first_disk(one).backing.changeId
    assert re.fullmatch(rf"52 76 cbt-vcsim {key}/\d+", first)
    write_disk(sim, disk_path(REMOVED), 2 * MIB, b"\x01" * 512)
    two = snapshot(vm, "two")
    second = first_disk(two).backing.changeId
    task = one.RemoveSnapshot_Task(removeChildren=False)
    wait(task)
    assert task.info.entity == vm  # the VM, as vSphere says (the simulator: the snapshot)
    assert [tree.name for tree in walk(vm.snapshot.rootSnapshotList)] == ["two"]
    assert areas(vm, two, key, first) == [(2 * MIB, 512)]
    assert first_disk(two).backing.changeId == second
    assert first_disk(vm).backing.fileName == disk_path(REMOVED)


def test_a_vm_without_snapshots_has_none(instance: Any) -> None:
    vm = find_vm(instance, "DC0_C0_RP0_VM1")  # the simulator's Fetch of it panicked
    assert vm.snapshot is None
    assert vm.name == "DC0_C0_RP0_VM1"
