"""The rollback of a warm or cold move from its backup: the VM back on the move's source, its
disks as the backup took them (docs/storage.md).

The data flow, for a job whose VM runs (or is defined) on the move's destination and whose
``--backup`` volumes are kept:

1. on the source, each backed-up disk is copied out of its backup into a new volume beside
   the disk it was (``VM-vda-restored-JOB.qcow2`` in the pool of that directory, else in
   the backup's pool): the host's storage driver copies it
   (:func:`vmferry.drivers.libvirt_blockcopy.clone_volume`); nothing of the VM is touched
   yet, and a copy that fails removes the copies made and stops here;
2. the VM is powered off on the destination (its definition kept);
3. its definition (the destination's) with each restored disk in place of the old one is
   defined on the source and started (not a VM that was off when the move began: it is
   left off, as it was). Should that fail, the VM is started again on the destination
   (when it ran there) and the restored copies are removed: it is where it was;
4. only then is it undefined on the destination and are the disk copies the move made there
   removed (the job's ``copied_path`` events). The disks the VM used before the restore are
   left where they are (on shared storage the destination wrote to them), named in the
   job's ``rollback`` event, for the admin to remove.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from vmferry.drivers.domain_edit import with_disk_files
from vmferry.drivers.libvirt_blockcopy import clone_volume
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import delete_volume, pool_directories, volume_exists
from vmferry.engine.offline_reconcile import started_off
from vmferry.errors import VmferryError
from vmferry.model.backup import DiskBackup
from vmferry.model.migration import Job
from vmferry.store import backups as backup_store
from vmferry.store.db import Store

__all__ = ["Restored", "restore_from_backup", "restored_name"]

NoteFn = Callable[[str], None]


@dataclass(frozen=True)
class Restored:
    ok: bool
    reason: str | None  # why not, one line
    restored: dict[str, str]  # disk target -> the restored volume's path on the source
    left: tuple[str, ...]  # the disks the VM had before, left in place


def restored_name(old_path: str, target: str, vm: str, job_id: str) -> str:
    """The restored volume's file name: the old file's stem (or the VM and disk) tagged with
    the job (pure)."""
    stem = posixpath.splitext(posixpath.basename(old_path))[0] if old_path else f"{vm}-{target}"
    return f"{stem}-restored-{job_id[:8]}.qcow2"


def kept_backups(store: Store, job: Job) -> list[DiskBackup]:
    """The job's backups whose volumes are still kept."""
    return [b for b in backup_store.backups_of_job(store, job.id) if b.removed_at is None]


def restore_from_backup(store: Store, job: Job, backups: list[DiskBackup],
                        note: NoteFn) -> Restored:  # fmt: skip
    """Put ``job``'s VM back on its source from ``backups`` (see the module docstring)."""
    sources: dict[str, str | None] = {}
    for event in job.events:
        recorded = event.data.get("sources") if event.kind == "backup" else None
        if isinstance(recorded, dict):
            sources.update({str(t): None if p is None else str(p) for t, p in recorded.items()})
    copies = [str(e.data["copied_path"]) for e in job.events if "copied_path" in e.data]
    vm = job.vm
    src_host, dst_host = store.get_host(job.source), store.get_host(job.destination)
    with (
        LibvirtHost.connect(src_host.name, src_host.uri) as src,
        LibvirtHost.connect(dst_host.name, dst_host.uri) as dst,
    ):
        definition = dst.definition_xml(vm)
        running = vm in dst.running_vm_names()
        restored = _copy_out(src, backups, sources, vm, job.id, note)
        if isinstance(restored, str):
            return Restored(False, restored, {}, ())
        if running:
            dst.destroy(vm)
            note(f"{vm} powered off on {dst.name}")
        off = started_off(job)  # a cold move of a VM that was off: it stays off
        try:
            src.define_xml(with_disk_files(definition, {t: (p, "qcow2")
                                                        for t, p in restored.items()}))  # fmt: skip
            if not off:
                src.start(vm)
        except VmferryError as exc:
            with suppress(VmferryError):
                src.undefine(vm)
            for path in restored.values():
                with suppress(VmferryError):
                    delete_volume(src, path)
            if running:
                with suppress(VmferryError):
                    dst.start(vm)
            return Restored(False, f"starting {vm} on {src.name} from its backup failed: "
                            f"{exc.message}; it runs on {dst.name} as before", {}, ())  # fmt: skip
        note(f"{vm} {'defined, off,' if off else 'started'} on {src.name} from its backup")
        dst.undefine(vm)
        for path in copies:
            try:
                delete_volume(dst, path)
                note(f"removed the move's copy {path} from {dst.name}")
            except VmferryError as exc:
                note(f"the move's copy {path} on {dst.name} is left: {exc.message}")
        left = tuple(p for t in restored if (p := sources.get(t)) and _there(src, p))
    return Restored(True, None, restored, left)


def _there(host: LibvirtHost, path: str) -> bool:
    """Whether ``host`` still has a volume at ``path`` (unknown counts as there)."""
    try:
        return volume_exists(host, path)
    except VmferryError:
        return True


def _copy_out(src: LibvirtHost, backups: list[DiskBackup], sources: dict[str, str | None],
              vm: str, job_id: str, note: NoteFn) -> dict[str, str] | str:  # fmt: skip
    """Each backup copied into a new volume beside its disk's old file; the paths, or why
    not (the copies made so far removed)."""
    pools = {d: name for name, d in pool_directories(src).items()}
    made: dict[str, str] = {}
    try:
        for backup in backups:
            old = sources.get(backup.target) or ""
            pool = pools.get(posixpath.dirname(old), backup.pool)
            name = restored_name(old, backup.target, vm, job_id)
            note(f"restoring disk {backup.target} of {vm} from {backup.path} into pool {pool}")
            made[backup.target] = clone_volume(src, pool, name, "qcow2", backup.path)
    except VmferryError as exc:
        for path in made.values():
            with suppress(VmferryError):
                delete_volume(src, path)
        return f"restoring the disks of {vm} from their backup failed: {exc.message}"
    return made
