"""`--backup POOL`: the disks of a VM backed up into a pool of its host before a move
changes anything, recorded with the job (docs/storage.md).

The data flow: the pure plan (:mod:`vmferry.assess.backup`) from the VM's disks and the
pool's free space (too little: :class:`BlockedError`, exit 3, nothing written); one new
qcow2 volume per disk; for a running VM, libvirt's push-mode backup into them
(:mod:`vmferry.drivers.libvirt_backup`), followed with progress events until it ends; for
a VM that is off (libvirt's backup API needs a running QEMU), each disk copied into its
volume by the host's storage driver (``virStorageVolCreateXMLFrom``: a whole, independent
copy; an external snapshot would leave the VM on an overlay whose base the cold move then
has to carry); the backups recorded (:mod:`vmferry.store.backups`). A backup that fails,
Ctrl-C or `vmferry job cancel` stop it and remove its volumes: the move does not start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import NoReturn

from vmferry.assess.backup import BackupPlan, plan_backup
from vmferry.drivers.libvirt_backup import abort_backup, backup_state, begin_backup
from vmferry.drivers.libvirt_backup import pool_free_bytes as free_bytes
from vmferry.drivers.libvirt_blockcopy import clone_volume, create_volume
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import delete_volume
from vmferry.engine.live import INTERRUPTED, ctrl_c_flag
from vmferry.errors import BadInputError, BlockedError, MigrationFailedError, VmferryError
from vmferry.model import Host, VmState
from vmferry.model.backup import DiskBackup
from vmferry.model.jsonable import to_jsonable
from vmferry.store import backups as backup_store
from vmferry.store.db import Store, open_store

__all__ = ["back_up", "list_backups", "prune", "prune_choice", "remove_backup"]

NoteFn = Callable[[str], None]
POLL_S = 0.25
PROGRESS_EVERY_S = 2.0


def _quiet(*_args: object) -> None:
    return None


def back_up(
    store: Store,
    job_id: str,
    vm: str,
    host: Host,
    pool: str,
    *,
    note: NoteFn = _quiet,
    timeout_s: float = 3600.0,
) -> list[DiskBackup]:
    """Back up every writable disk of ``vm`` on ``host`` (running, or off) into ``pool``
    there; the recorded backups. Raises (nothing left behind) when it cannot be done."""
    with LibvirtHost.connect(host.name, host.uri) as conn:
        record = conn.get_vm(vm)
        disks = record.spec.disks
        sources = {d.target: conn.disk_path(d) for d in disks}
        plan = plan_backup(vm, job_id, disks, pool, free_bytes(conn, pool))
        if plan.refused is not None:
            store.add_event(job_id, "backup", f"no backup: {plan.refused}", {"pool": pool})
            raise BlockedError(plan.refused)
        paths: dict[str, str] = {}
        try:
            if record.state is VmState.SHUT_OFF:
                _copy_off(conn, store, job_id, vm, plan, sources, paths, note)
            else:
                for t in plan.targets:
                    paths[t.target] = create_volume(conn, pool, t.volume, t.capacity_bytes,
                                                    "qcow2")  # fmt: skip
                _run(conn, store, job_id, vm, plan, paths, note, timeout_s)
        except BaseException:
            for path in paths.values():
                with suppress(VmferryError):
                    delete_volume(conn, path)
            raise
    recorded = [
        backup_store.add(store, DiskBackup(0, job_id, vm, host.name, pool, t.target, t.volume,
                                           paths[t.target], "qcow2", t.capacity_bytes, ""))
        for t in plan.targets
    ]  # fmt: skip
    message = (f"backed up {', '.join(t.target for t in plan.targets)} of {vm} into pool "
               f"{pool} on {host.name}")  # fmt: skip
    store.add_event(job_id, "backup", message, {
        "backups": to_jsonable(recorded),
        # what a restore puts back where (vmferry.service.restore)
        "sources": {t.target: sources.get(t.target) for t in plan.targets},
    })  # fmt: skip
    note(message)
    return recorded


def _copy_off(conn: LibvirtHost, store: Store, job_id: str, vm: str, plan: BackupPlan,
              sources: dict[str, str | None], paths: dict[str, str],
              note: NoteFn) -> None:  # fmt: skip
    """Each disk of ``vm``, which is off, copied into its backup volume (``paths`` fills in
    as they are made, for the caller's clean-up). Ctrl-C or a cancel stops it between
    disks (a copy under way ends first: the storage driver's copy cannot be stopped)."""
    with ctrl_c_flag() as interrupted:
        for t in plan.targets:
            stop = _stop_reason(interrupted, store, job_id)
            if stop is not None:
                _stopped(store, job_id, vm, stop)
            source = sources.get(t.target)
            if source is None:
                raise MigrationFailedError(f"disk {t.target} of {vm} has no file to back up")
            message = f"{vm} is off: copying disk {t.target} ({source}) into pool {plan.pool}"
            store.add_event(job_id, "backup", message, {"pool": plan.pool})
            note(message)
            paths[t.target] = clone_volume(conn, plan.pool, t.volume, "qcow2", source)
        if interrupted.is_set():  # Ctrl-C during the last copy
            _stopped(store, job_id, vm, INTERRUPTED)


def _stop_reason(interrupted: threading.Event, store: Store, job_id: str) -> str | None:
    """Why the backup must stop now (Ctrl-C, `job cancel`), or None."""
    if interrupted.is_set():
        return INTERRUPTED
    if store.is_cancel_requested(job_id):
        return "cancelled by `vmferry job cancel`"
    return None


def _stopped(store: Store, job_id: str, vm: str, why: str) -> NoReturn:
    store.add_event(job_id, "backup", f"backup stopped: {why}", {})
    raise MigrationFailedError(f"the backup of {vm} was stopped: {why}; the move did not start")


def _run(conn: LibvirtHost, store: Store, job_id: str, vm: str, plan: BackupPlan,
         paths: dict[str, str], note: NoteFn, timeout_s: float) -> None:  # fmt: skip
    others = [d.target for d in conn.get_vm(vm).spec.disks if d.target not in paths]
    started = time.monotonic()
    with ctrl_c_flag() as interrupted:
        begin_backup(conn, vm, paths, others)
        message = f"backing up {', '.join(paths)} of {vm} into pool {plan.pool}"
        store.add_event(job_id, "backup", message, {"pool": plan.pool, "volumes": paths})
        note(message)
        last = 0.0
        while True:
            state = backup_state(conn, vm)
            if not state.running:
                break
            stop = _stop_reason(interrupted, store, job_id)
            if stop is None and time.monotonic() - started > timeout_s:
                stop = f"it took longer than {timeout_s:g} s"
            if stop is not None:
                abort_backup(conn, vm)
                _stopped(store, job_id, vm, stop)
            if time.monotonic() - last >= PROGRESS_EVERY_S and state.total_bytes:
                last = time.monotonic()
                store.add_event(job_id, "backup-progress",
                                f"backup {state.processed_bytes * 100 // state.total_bytes}%",
                                {"processed_bytes": state.processed_bytes,
                                 "total_bytes": state.total_bytes})  # fmt: skip
            time.sleep(POLL_S)
    if state.error is not None:
        store.add_event(job_id, "backup", f"backup failed: {state.error}", {})
        raise MigrationFailedError(f"the backup of {vm} failed: {state.error}; the move did "
                                   "not start")  # fmt: skip


def remove_backup(store: Store, backup: DiskBackup, host: Host) -> None:
    """Delete the backup's volume on ``host`` and mark it removed."""
    with LibvirtHost.connect(host.name, host.uri) as conn:
        delete_volume(conn, backup.path)
    backup_store.mark_removed(store, backup.id)


def list_backups(vm: str | None = None, *, all_: bool = False,
                 store: Store | None = None) -> list[DiskBackup]:  # fmt: skip
    """The backups kept (``all_``: also the pruned ones), oldest first."""
    return backup_store.backups(store or open_store(), vm=vm, kept_only=not all_)


def prune(*, keep: int, vm: str | None = None, store: Store | None = None) -> list[DiskBackup]:
    """Remove all but the newest ``keep`` backups of each VM (of ``vm``): their volumes
    deleted through the host's libvirt; the backups removed."""
    if keep < 0:
        raise BadInputError(f"--keep must be 0 or more, not {keep}")
    store = store or open_store()
    kept = backup_store.backups(store, vm=vm, kept_only=True)
    removed: list[DiskBackup] = []
    for backup in prune_choice(kept, keep):
        remove_backup(store, backup, store.get_host(backup.host))
        removed.append(backup)
    return removed


def prune_choice(backups: list[DiskBackup], keep: int) -> list[DiskBackup]:
    """Of ``backups`` (oldest first), what goes when each VM keeps its newest ``keep`` moves'
    backups (a move's disks stay or go together). Pure."""
    jobs: dict[str, list[str]] = {}
    for b in backups:
        order = jobs.setdefault(b.vm, [])
        if b.job_id not in order:
            order.append(b.job_id)
    going = {job for order in jobs.values() for job in order[: max(0, len(order) - keep)]}
    return [b for b in backups if b.job_id in going]
