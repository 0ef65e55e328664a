"""A warm import's copy against the simulator (its harness answers QueryChangedDiskAreas
from the writes the test makes between snapshots): the disk read whole while the VM runs,
then only what changed, at the cutover the VM stopped and the last changes copied; the copy
equals the source's last state byte for byte and its digest is the one the leaves give.
Cancelled or failed before the cutover: no partial copy, no snapshot, the VM still on."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from support.vcsim import Vcsim, control, running_vcsim, write_disk
from support.vcsim_disks import (
    DATASTORE,
    MIB,
    admin,
    attach,
    find_vm,
    make_disk,
    sha256_of,
    upload,
    virtual_sha256,
)

from vmferry.drivers import verified_copy
from vmferry.drivers.vsphere import VsphereVmHandle, vsphere_session
from vmferry.errors import ToolError, VmferryError
from vmferry.imports.mapping import ImportPlan, PlannedDisk
from vmferry.model.vsphere import VsphereSource
from vmferry.service.vsphere_disks import DatastoreAccess
from vmferry.service.vsphere_warm import SNAPSHOT_PREFIX, WarmCopy, WarmSettings

VM = "DC0_H0_VM0"  # powered on
DISK = f"{VM}/warm.vmdk"
DISK_PATH = f"[{DATASTORE}] {DISK}"
SIZE = 24 * MIB


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Vcsim]:
    workdir = tmp_path / "sim"
    workdir.mkdir()
    with running_vcsim(workdir) as started:
        yield started


@pytest.fixture
def raw(sim: Vcsim, tmp_path: Path) -> Path:
    """VM0's first disk: ESXi's shape (descriptor + flat) with known content; the raw
    image beside it is the test's own copy of what the disk holds."""
    vmdk, _digest = make_disk(tmp_path, "warm", "monolithicFlat", size_mib=SIZE // MIB)
    with admin(sim) as instance:
        upload(sim, instance, vmdk, DISK)
        upload(sim, instance, tmp_path / "warm-flat.vmdk", f"{VM}/warm-flat.vmdk")
        attach(instance, VM, DISK, SIZE)
    return tmp_path / "warm.raw"


def write(sim: Vcsim, raw: Path, offset: int, data: bytes) -> None:
    """A guest write: on the datastore (logged by the harness for CBT) and in ``raw``."""
    write_disk(sim, DISK_PATH, offset, data)
    with raw.open("r+b") as f:
        f.seek(offset)
        f.write(data)


class Script:
    """The warm import's clock: each sleep runs the next scripted step (guest writes, the
    cutover asked for) and moves time past the interval: one sleep, one round."""

    def __init__(self, steps: list[Callable[[], None]]) -> None:
        self.steps, self.time, self.cutover = steps, 0.0, False

    def now(self) -> float:
        return self.time

    def sleep(self, _seconds: float) -> None:
        if self.steps:
            self.steps.pop(0)()
        self.time += 1000

    def due(self) -> bool:
        return self.cutover


def source(sim: Vcsim) -> VsphereSource:
    return VsphereSource("vc1", sim.host, sim.port, sim.user, ca_file=str(sim.ca_file))


def plan(pool: Path) -> ImportPlan:
    disk = PlannedDisk(0, DISK_PATH, "vmdk", SIZE, None, "vda", "virtio", "warm-vda.qcow2", 1)
    return cast(ImportPlan, SimpleNamespace(disks=(disk,)))


Ran = tuple[WarmCopy, verified_copy.CopyResult | None, list[str], VsphereVmHandle]


def run_warm(
    sim: Vcsim,
    pool: Path,
    script: Script,
    *,
    stop: Callable[[VsphereVmHandle], None],
    leftovers_removable: bool = False,
) -> Ran:
    notes: list[str] = []
    result = None
    with vsphere_session(source(sim), sim.password) as session:
        handle = session.find_vm(VM)
        context = ssl.create_default_context(cafile=str(sim.ca_file))
        access = DatastoreAccess(source(sim), handle.datacenter, session.session_cookie,
                                 context, 2)  # fmt: skip
        settings = WarmSettings(300.0, script.due, ".part", 120.0, now=script.now,
                                sleep=script.sleep,
                                leftovers_removable=lambda: leftovers_removable)  # fmt: skip
        warm = WarmCopy(handle, access, settings, lambda: stop(handle), notes.append)
        the_plan = plan(pool)
        try:
            warm.run(the_plan, lambda disk: pool / (disk.volume + ".part"))
            disk = the_plan.disks[0]
            result = warm.copy(disk, pool / "warm-vda.qcow2.part", lambda _pct: None)
        finally:
            left = [s.name for s in handle.snapshots_named(SNAPSHOT_PREFIX)]
            notes.append(f"snapshots left: {left}")
    return warm, result, notes, handle


def power(sim: Vcsim) -> str:
    with admin(sim) as instance:
        return str(find_vm(instance, VM).runtime.powerState)


def test_changes_between_precopies_and_at_the_cutover_arrive_byte_for_byte(
    sim: Vcsim, raw: Path, tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    script = Script([])

    def round_1() -> None:  # after the first copy: two writes, one not leaf-aligned
        write(sim, raw, 3 * MIB + 100, b"A" * 5000)
        write(sim, raw, 20 * MIB, bytes(range(256)) * 512)

    def round_2() -> None:  # after precopy 1: a write, a zeroed MiB, then the cutover
        write(sim, raw, 9 * MIB + 4096, b"B" * 70000)
        write(sim, raw, 0, bytes(MIB))
        script.cutover = True

    script.steps = [round_1, round_2]
    stopped: list[str] = []

    def stop(handle: VsphereVmHandle) -> None:  # the cutover: a last write, then off
        write(sim, raw, SIZE - 4096, b"C" * 4096)
        handle.power_off(60)
        stopped.append(handle.power_state())

    control(sim, "reset")
    warm, result, notes, _handle = run_warm(sim, pool, script, stop=stop)
    part = pool / "warm-vda.qcow2.part"
    ranges = cast(list[str], control(sim, "stats")["ranges"])
    fetched = sum(int(b) - int(a) + 1 for a, b in (r[6:].split("-") for r in ranges if r))
    # the first copy reads only the 2.1 MiB CBT's "*" says hold data (of 24 MiB), the
    # rounds their changed leaves: never the zeros
    assert 3 * MIB < fetched < 4 * MIB, ranges
    assert "disk 0: 2.1 MiB of 24 MiB hold data" in notes
    assert result is not None and warm.cut_over and stopped == ["poweredOff"]
    assert warm.rounds == 2, notes  # precopy 1 and the cutover's
    assert virtual_sha256(part, "qcow2", tmp_path) == sha256_of(raw)
    assert verified_copy.digest_image(part, "qcow2") == result.digest
    assert notes[-1] == "snapshots left: []", notes
    changed = [n for n in notes if n.startswith(("precopy", "cutover:"))]
    assert changed[0].startswith("precopy 1: 0.2 MiB changed"), notes  # 3 leaves of 64 KiB
    print("\n".join(notes))


def test_a_cancel_before_the_cutover_leaves_no_copy_no_snapshot_and_the_vm_on(
    sim: Vcsim, raw: Path, tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()

    def cancel() -> None:
        write(sim, raw, MIB, b"x" * 100)
        raise VmferryError("cancelled by the test")

    script = Script([cancel])
    with pytest.raises(VmferryError, match="cancelled by the test"):
        run_warm(sim, pool, script, stop=lambda _h: pytest.fail("stopped"))
    assert list(pool.iterdir()) == []
    assert power(sim) == "poweredOn"
    with vsphere_session(source(sim), sim.password) as session:
        assert session.find_vm(VM).snapshots_named(SNAPSHOT_PREFIX) == []


def test_a_download_that_keeps_breaking_fails_and_leaves_nothing(
    sim: Vcsim, raw: Path, tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    pool.mkdir()
    control(sim, "fault", cut_after=65536, count=1000)
    with pytest.raises(ToolError):
        run_warm(sim, pool, Script([]), stop=lambda _h: pytest.fail("stopped"))
    control(sim, "fault", cut_after=0, count=0)
    assert list(pool.iterdir()) == []
    assert power(sim) == "poweredOn"
    with vsphere_session(source(sim), sim.password) as session:
        assert session.find_vm(VM).snapshots_named(SNAPSHOT_PREFIX) == []


@pytest.mark.parametrize("removable", [True, False])
def test_snapshots_a_killed_warm_import_left_are_removed_unless_another_import_runs(
    sim: Vcsim, raw: Path, tmp_path: Path, removable: bool
) -> None:
    """A warm import killed before its clean-up left its snapshot on the VM: the next warm
    import removes it first, unless the store knows another import of the VM still runs
    (its snapshots are then its own): named and left alone."""
    with vsphere_session(source(sim), sim.password) as session:
        session.find_vm(VM).create_snapshot("vmferry-warm-1700000000-1", "left", 60)
    pool = tmp_path / "pool"
    pool.mkdir()
    script = Script([])
    script.cutover = True
    _warm, result, notes, _handle = run_warm(
        sim, pool, script, stop=lambda h: h.power_off(60), leftovers_removable=removable
    )
    assert result is not None
    if removable:
        assert (
            f"removing the snapshots an earlier warm import of {VM} left: vmferry-warm-1700000000-1"
        ) in notes, notes
        assert notes[-1] == "snapshots left: []", notes
    else:
        assert any(n.endswith("left as they are: vmferry-warm-1700000000-1") for n in notes)
        assert notes[-1] == "snapshots left: ['vmferry-warm-1700000000-1']", notes
