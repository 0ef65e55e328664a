"""A warm import from vSphere: the disks copied while the VM runs, then only what changed.

Changed block tracking (CBT) tells which areas of a disk changed since a change id; a
snapshot freezes the disk's base file (the running VM writes into a delta), so the base can
be read over the datastore's HTTPS while the VM runs. The rounds:

1. CBT is enabled when it is off (``ReconfigVM_Task``); snapshot 1 (no memory, not
   quiesced) gives each disk a change id; every disk's base file (its flat extent) is read
   into ``VOLUME.vmferry-part`` in the pool, digested leaf by leaf
   (:class:`vmferry.model.disk_digest.LeafDigests`): only the areas that hold data
   (``QueryChangedDiskAreas`` with ``*``), the rest is zeros by CBT's word.
2. Every ``interval_s`` until the cutover is due: snapshot n+1, snapshot n removed (its delta
   is consolidated into the base, which then holds snapshot n+1's content), the areas
   changed between the two change ids (``QueryChangedDiskAreas``) read again from the base,
   whole leaves, and written into the copy through a writable ``qemu-nbd``; their leaf
   digests replaced.
3. The cutover: the VM is stopped (VMware Tools, ``--force`` as a cold import), a last
   snapshot, the one before removed, the last changes copied, the last snapshot removed.

The import then reads each copy back through QEMU and compares it with the digest of the
leaves as read from the source: the same proof a cold import gives, though the source was
read once plus its changes. Every snapshot this import made is removed whatever happens
(a failure, Ctrl-C), and on a failure before the cutover the partial copies are removed
and the VM is left running as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmferry.drivers import qemu_nbd, verified_copy
from vmferry.drivers.vsphere import Snapshot, VsphereVmHandle
from vmferry.errors import BadInputError, ToolError, VmferryError
from vmferry.imports.mapping import ImportPlan, PlannedDisk
from vmferry.model.disk_digest import LeafDigests, Run, changed_runs
from vmferry.service.vsphere_disks import RANGE_BYTES, DatastoreAccess, flat_extent
from vmferry.sources.vsphere_vm import DatastorePath

__all__ = ["SNAPSHOT_PREFIX", "WarmCopy", "WarmSettings"]

SNAPSHOT_PREFIX = "vmferry-warm"
TASK_TIMEOUT_S = 600.0
POLL_S = 1.0

NoteFn = Callable[[str], None]
ProgressFn = Callable[[float], None]


@dataclass(frozen=True)
class WarmSettings:
    """How often the changes are copied, and what says the cutover is due (a time reached,
    or `vmferry job cutover`); ``now`` and ``sleep`` are the clock (tests pass their own)."""

    interval_s: float
    cutover_due: Callable[[], bool]
    part_suffix: str
    timeout_s: float
    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    # may the snapshots an earlier warm import of this VM left (killed before it removed
    # them) be removed now? (no other import of the VM runs; the caller asks its store)
    leftovers_removable: Callable[[], bool] = lambda: False


@dataclass
class _Disk:
    planned: PlannedDisk
    key: int
    part: Path
    base: str = ""  # the base file's datastore path (the snapshot's chain root)
    extent: DatastorePath | None = None  # its raw extent (read once from the descriptor)
    leaves: LeafDigests | None = None
    change_id: str = ""
    bytes_read: int = 0


class WarmCopy:
    """The rounds above, for the VM ``handle``; ``stop`` stops the VM at the cutover.

    ``run`` is the import's ``before_copy`` (it gets the plan and where each copy goes);
    ``copy`` then gives each disk's result from its leaves, the copy already in place."""

    def __init__(self, handle: VsphereVmHandle, access: DatastoreAccess, settings: WarmSettings,
                 stop: Callable[[], None], note: NoteFn,
                 on_disk_progress: Callable[[int, float], None] | None = None) -> None:  # fmt: skip
        self.handle, self.access, self.settings = handle, access, settings
        self.stop, self.note = stop, note
        self.on_disk_progress = on_disk_progress
        self.rounds = 0
        self.cut_over = False
        self._disks: dict[str, _Disk] = {}
        self._tag = f"{SNAPSHOT_PREFIX}-{int(time.time())}"

    def run(self, plan: ImportPlan, part_of: Callable[[PlannedDisk], Path]) -> None:
        keys = {disk.file_name: disk.key for disk in self.handle.raw.disks}
        for planned in plan.disks:
            part = part_of(planned)
            self._disks[planned.source_path] = _Disk(planned, keys[planned.source_path], part)
        try:
            self._remove_leftovers()
            snapshot = self._first_copy()
            while not self.settings.cutover_due():
                due = self.settings.now() + self.settings.interval_s
                while self.settings.now() < due and not self.settings.cutover_due():
                    self.settings.sleep(POLL_S)
                if self.settings.cutover_due():
                    break
                snapshot = self._changes(snapshot, f"precopy {self.rounds + 1}")
            self.note(f"cutover: stopping {self.handle.name}")
            self.stop()
            self.cut_over = True
            self._changes(snapshot, "cutover")
        except BaseException:
            for disk in self._disks.values():
                disk.part.unlink(missing_ok=True)
            raise
        finally:
            self._remove_all()

    def copy(self, disk: PlannedDisk, part: Path, progress: ProgressFn) -> verified_copy.CopyResult:
        state = self._disks[disk.source_path]
        if state.leaves is None or part != state.part:
            raise VmferryError(f"disk {disk.index}: the warm copy has no copy at {part}")
        progress(100.0)
        return verified_copy.CopyResult(state.leaves.digest(), state.bytes_read)

    # -- the rounds --------------------------------------------------------------------------

    def _first_copy(self) -> Snapshot:
        name = self.handle.name
        if not self.handle.change_tracking():
            self.note(f"enabling changed block tracking on {name}")
            self.handle.enable_change_tracking(TASK_TIMEOUT_S)
        snapshot = self._snapshot(1)
        for disk in self._disks.values():
            seen = snapshot.disks.get(disk.key)
            if seen is None or not seen.change_id:
                raise ToolError(f"vSphere gave no change id for disk {disk.planned.index} of "
                                f"{name}: changed block tracking is not active on it")  # fmt: skip
            disk.change_id, disk.base = seen.change_id, seen.base_file
            self.note(f"disk {disk.planned.index}: reading {disk.base} while {name} runs")
            size = disk.planned.capacity_bytes
            # where the data is (CBT's "*"): the rest reads as zeros and is not fetched
            areas = self.handle.changed_areas(snapshot, disk.key, "*", size)
            self.note(f"disk {disk.planned.index}: {sum(n for _s, n in areas) / 2**20:.1f} MiB "
                      f"of {size / 2**20:.0f} MiB hold data")  # fmt: skip
            disk.extent = flat_extent(self.access, disk.base)
            with self.access.open(disk.extent) as reader:
                if reader.size < size:
                    raise BadInputError(f"{disk.base}'s extent holds {reader.size} bytes for "
                                        f"{size}")  # fmt: skip
                reader.size = size
                reader.data_areas = areas
                disk.leaves = LeafDigests(reader.size)
                copied = verified_copy.copy_reader(
                    reader, disk.part, timeout_s=self.settings.timeout_s, read_size=RANGE_BYTES,
                    depth=2 * self.access.connections, leaves=disk.leaves,
                    on_progress=self._progress(disk.planned.index),
                )  # fmt: skip
                disk.bytes_read = copied.bytes_sent
        return snapshot

    def _changes(self, previous: Snapshot, what: str) -> Snapshot:
        """Snapshot n+1, snapshot n removed, the changes between them copied."""
        self.rounds += 1
        snapshot = self._snapshot(self.rounds + 1)
        self._remove(previous)
        total = 0
        for disk in self._disks.values():
            seen = snapshot.disks.get(disk.key)
            if seen is None or not seen.change_id:
                raise ToolError(f"snapshot {snapshot.name} shows no change id for disk "
                                f"{disk.planned.index}")  # fmt: skip
            size = disk.planned.capacity_bytes
            areas = self.handle.changed_areas(snapshot, disk.key, disk.change_id, size)
            runs = changed_runs(areas, size, RANGE_BYTES)
            total += self._apply(disk, runs)
            disk.change_id = seen.change_id
        self.note(f"{what}: {total / 2**20:.1f} MiB changed, copied")
        return snapshot

    def _apply(self, disk: _Disk, runs: list[Run]) -> int:
        """Read ``runs`` from the disk's base file and write them into its copy (zeros
        too: a leaf the guest zeroed must read as zeros in the copy); their leaves redone."""
        if not runs:
            return 0
        assert disk.leaves is not None and disk.extent is not None
        done = 0
        with (
            self.access.open(disk.extent) as reader,
            qemu_nbd.serve(disk.part, "qcow2", writable=True) as target,
        ):
            for run in runs:
                buffer = bytearray(run.length)
                result = reader.wait(reader.submit_read(run.offset, memoryview(buffer), whole=True))
                assert result is not None
                result.fill_holes()
                disk.leaves.set_data(run.offset, buffer)
                target.write(run.offset, memoryview(buffer))
                done += run.length
        disk.bytes_read += done
        return done

    def _progress(self, index: int) -> Callable[[float], None] | None:
        report = self.on_disk_progress
        if report is None:
            return None
        return lambda percent: report(index, percent)

    def _snapshot(self, number: int) -> Snapshot:
        return self.handle.create_snapshot(f"{self._tag}-{number}",
                                           "vmferry warm import: removed when it ends",
                                           TASK_TIMEOUT_S)  # fmt: skip

    def _remove(self, snapshot: Snapshot) -> None:
        self.handle.remove_snapshot(snapshot, TASK_TIMEOUT_S)

    def _remove_leftovers(self) -> None:
        """The snapshots an earlier warm import left on the VM (its process was killed
        before it removed them): removed when no other import of the VM runs, else named."""
        left = self.handle.snapshots_named(SNAPSHOT_PREFIX)
        if not left:
            return
        names = ", ".join(sorted(snapshot.name for snapshot in left))
        if not self.settings.leftovers_removable():
            self.note(f"{self.handle.name} has snapshots of another warm import that still "
                      f"runs; left as they are: {names}")  # fmt: skip
            return
        self.note(f"removing the snapshots an earlier warm import of {self.handle.name} left: "
                  f"{names}")  # fmt: skip
        for snapshot in left:
            self._remove(snapshot)

    def _remove_all(self) -> None:
        """Every snapshot this import made, whatever happened (each tried)."""
        failed: list[str] = []
        try:
            made = self.handle.snapshots_named(self._tag)
        except Exception as exc:  # the connection may be gone: say so, raise what happened
            self.note(f"could not list the snapshots of {self.handle.name} to remove "
                      f"{self._tag}-*: {exc}")  # fmt: skip
            return
        for snapshot in made:
            try:
                self._remove(snapshot)
            except VmferryError as exc:
                failed.append(f"{snapshot.name}: {exc.message}")
        if failed:
            self.note("could not remove snapshot " + "; ".join(failed))
