"""`vmferry move-storage VM --disk vda --to-pool P`: a VM's disk to another pool of its host,
while it runs, or while it is shut off (docs/storage.md).

The data flow: locate the VM; the pure plan (:mod:`vmferry.assess.storage_move`) from its
disk and the host's pools; a ``move-storage`` job; a new volume in the pool; libvirt's block
copy into it (:mod:`vmferry.drivers.libvirt_blockcopy`), followed until the mirror is in
sync; the pivot; the persistent definition pointed at the new volume; the copy judged as
`--copy-storage` judges one (:func:`vmferry.verify.disk_copies.judge_copies`); the old
volume removed only then (unless ``keep_source``). Ctrl-C or `vmferry job cancel` before the
pivot cancels the copy and removes the new volume: the VM stays on its disk.

A shut-off VM's disk is copied by the host's storage driver instead
(:func:`vmferry.drivers.libvirt_blockcopy.clone_volume`, ``virStorageVolCreateXMLFrom``: a
copy of the volume into the pool, qemu-img on the host for file pools), then the definition,
the judgement and the removal are the same; the job's strategy is ``cold``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace

from vmferry.assess.storage_move import StorageMove, StorageMoveRefused, plan_storage_move
from vmferry.drivers.libvirt_blockcopy import (
    cancel_copy,
    clone_volume,
    copy_progress,
    create_volume,
    persist_disk_source,
    start_copy,
    try_pivot,
    volume_allocation,
    volume_names,
)
from vmferry.drivers.libvirt_facts import pool_facts
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import delete_volume
from vmferry.engine.live import ctrl_c_flag
from vmferry.errors import BadInputError, BlockedError, VmferryError
from vmferry.model import Disk, VmState
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import (
    DiskCopy,
    Job,
    JobStatus,
    MigrationOptions,
    MigrationResult,
    Strategy,
)
from vmferry.service.jobs import reconcile_vm
from vmferry.service.lease import process_lease
from vmferry.service.locate import locate
from vmferry.store.db import Store, open_store
from vmferry.verify.disk_copies import judge_copies

__all__ = ["move_storage", "reconcile_storage_move"]

ProgressFn = Callable[[int, int], None]  # (bytes copied, bytes to copy)
NoteFn = Callable[[str], None]
POLL_S = 0.25


def _quiet(*_args: object) -> None:
    return None


def move_storage(
    vm: str,
    target: str,
    to_pool: str,
    *,
    fmt: str | None = None,
    keep_source: bool = False,
    timeout_s: float = 3600,
    bandwidth_mib_s: int | None = None,
    on_progress: ProgressFn = _quiet,
    note: NoteFn = _quiet,
) -> MigrationResult:
    """Move disk ``target`` of ``vm`` (running or shut off) into pool ``to_pool``; the job's result
    (``disks`` holds the one disk moved). :class:`BadInputError` or :class:`BlockedError`
    (nothing made) when it cannot start."""
    if not 1 <= timeout_s <= 7 * 86400:
        raise BadInputError(f"--timeout must be between 1 and 604800 s (got {timeout_s:g})")
    if bandwidth_mib_s is not None and not 1 <= bandwidth_mib_s <= 100_000:
        raise BadInputError(f"--bandwidth-mib-s must be between 1 and 100000 "
                            f"(got {bandwidth_mib_s})")  # fmt: skip
    reconcile_vm(vm)
    found = locate(vm)
    host = found.host
    running = found.record.state is VmState.RUNNING
    if not running and found.record.state is not VmState.SHUT_OFF:
        raise BadInputError(f"VM {vm!r} is {found.record.state} on {host.name}; move-storage "
                            "moves the disk of a running or a shut-off VM")  # fmt: skip
    strategy = Strategy.LIVE if running else Strategy.COLD
    store = open_store()
    with LibvirtHost.connect(host.name, host.uri) as conn:
        disks = conn.get_vm(vm).spec.disks
        disk = next((d for d in disks if d.target == target), None)
        source_path = conn.disk_path(disk) if disk is not None else None
        pools = pool_facts(conn)
        existing = volume_names(conn, to_pool) if any(p.name == to_pool for p in pools) else ()
        try:
            plan = plan_storage_move(vm, disks, source_path, target, pools, to_pool, fmt,
                                     existing)  # fmt: skip
        except StorageMoveRefused as exc:
            raise (BlockedError if exc.blocked else BadInputError)(exc.message) from None
        job = store.create_job("move-storage", vm, host.name, host.name, MigrationOptions())
        store.set_owner(job.id, process_lease(store))
        run = _Run(store, job.id, note)
        run.event("storage", f"moving disk {target} of {vm} ({plan.source_path}) into pool "
                  f"{plan.pool} as {plan.volume} ({plan.fmt})"
                  + ("" if running else f"; {vm} is shut off: its volume is copied"),
                  target=target, source_path=plan.source_path, pool=plan.pool,
                  volume=plan.volume, format=plan.fmt, running=running)  # fmt: skip
        store.set_status(job.id, JobStatus.RUNNING)
        started = time.monotonic()
        if running:
            path = create_volume(conn, plan.pool, plan.volume, plan.capacity_bytes, plan.fmt)
            run.event("storage", f"created {path}", destination_path=path)
            rate = None if bandwidth_mib_s is None else bandwidth_mib_s * 2**20
            stopped, copied = _copy(conn, vm, plan, path, rate, run, timeout_s, on_progress)
        else:
            pool_dir = next((p.path for p in pools if p.name == plan.pool), None) or ""
            path = f"{pool_dir.rstrip('/')}/{plan.volume}"
            run.event("storage", f"copying into {path}", destination_path=path)
            stopped, copied = _clone(conn, vm, plan, path, run, on_progress)
        total_ms = int((time.monotonic() - started) * 1000)
        if stopped is not None:
            if running:
                with suppress(VmferryError):
                    cancel_copy(conn, vm, target)
            with suppress(VmferryError):
                delete_volume(conn, path)
                run.event("storage", f"removed {path}; {vm} stays on {plan.source_path}")
            status = JobStatus.CANCELLED if stopped.startswith("cancelled") else JobStatus.FAILED
            result = MigrationResult(job.id, vm, host.name, host.name, strategy, status,
                                     stopped, total_ms, None, copied, None)  # fmt: skip
            store.finish(job.id, result)
            return result
        if persist_disk_source(conn, vm, target, path, plan.fmt):
            run.event("storage", f"the definition of {vm} now names {path}")
        moved = _judge(conn, vm, plan, disk, path, host.name)
        run.event("storage-verify", f"disk {target} in {plan.pool}: "
                  f"{'verified' if moved.verified else 'NOT verified'} "
                  f"({'; '.join(moved.checks)})", **to_jsonable(moved))  # fmt: skip
        if moved.verified and not keep_source:
            try:
                delete_volume(conn, plan.source_path)
                moved = replace(moved, source_removed=True)
                run.event("storage", f"removed the old volume {plan.source_path}")
            except VmferryError as exc:
                run.event("note", f"the old volume {plan.source_path} is left: {exc.message}")
    reason = None if moved.verified else "verification failed: " + "; ".join(moved.checks)
    result = MigrationResult(job.id, vm, host.name, host.name, strategy,
                             JobStatus.COMPLETED if moved.verified else JobStatus.FAILED,
                             reason, total_ms, None, copied, None, disks=(moved,))  # fmt: skip
    store.finish(job.id, result)
    return result


class _Run:
    """The job's events, each also a progress line."""

    def __init__(self, store: Store, job_id: str, note: NoteFn) -> None:
        self.store, self.job_id, self.note = store, job_id, note

    def event(self, kind: str, message: str, **data: object) -> None:
        self.store.add_event(self.job_id, kind, message, dict(data))
        self.note(message)


def _copy(
    conn: LibvirtHost, vm: str, plan: StorageMove, path: str, rate: int | None, run: _Run,
    timeout_s: float, on_progress: ProgressFn,
) -> tuple[str | None, int | None]:  # fmt: skip
    """Start the copy and follow it to the pivot: (None, bytes copied) once pivoted, or (why
    it stopped, bytes copied) when it was cancelled or failed before the pivot."""
    copied: int | None = None
    deadline = time.monotonic() + timeout_s
    with ctrl_c_flag() as interrupted:
        try:
            start_copy(conn, vm, plan.target, path, plan.fmt, rate)
            run.event("status", f"copying disk {plan.target} into {path}")
            while True:
                progress = copy_progress(conn, vm, plan.target)
                if progress is None:
                    return "the copy job ended before the pivot", copied
                copied = progress[0]
                on_progress(*progress)
                # libvirt says when the mirror is in sync: the pivot is refused until then
                # (a throttled copy may stay a byte short of "end" though ready)
                if progress[1] and try_pivot(conn, vm, plan.target):
                    run.event("status", f"switched disk {plan.target} to {path}",
                              copied_bytes=copied)  # fmt: skip
                    return None, copied
                if interrupted.is_set():
                    return "cancelled: interrupted (Ctrl-C)", copied
                if run.store.is_cancel_requested(run.job_id):
                    return "cancelled by `vmferry job cancel`", copied
                if time.monotonic() > deadline:
                    return f"the copy was not in sync within --timeout {timeout_s:g} s", copied
                time.sleep(POLL_S)
        except KeyboardInterrupt:  # a second Ctrl-C
            return "cancelled: interrupted (Ctrl-C)", copied
        except VmferryError as exc:
            return f"the copy failed: {exc.message}", copied


def _clone(
    conn: LibvirtHost, vm: str, plan: StorageMove, path: str, run: _Run,
    on_progress: ProgressFn,
) -> tuple[str | None, int | None]:  # fmt: skip
    """Copy the shut-off VM's volume into ``path`` (the host's storage driver does it, in a
    thread here), progress from the new volume's allocation: (None, bytes) once copied, or
    (why not, bytes). Ctrl-C or `job cancel` cannot stop libvirt's copy half way: the copy
    is let finish, then counted as cancelled (the caller removes it)."""
    outcome: list[BaseException | str] = []

    def work() -> None:
        try:
            outcome.append(clone_volume(conn, plan.pool, plan.volume, plan.fmt,
                                        plan.source_path))  # fmt: skip
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    run.event("status", f"copying disk {plan.target} into {path}")
    worker = threading.Thread(target=work, name="vmferry-volume-copy", daemon=True)
    stop: str | None = None
    copied: int | None = None
    told = False
    with ctrl_c_flag() as interrupted:
        worker.start()
        while worker.is_alive():
            try:
                worker.join(POLL_S)
                copied = volume_allocation(conn, path) or copied
                if copied is not None:
                    on_progress(min(copied, plan.needed_bytes), plan.needed_bytes)
                if stop is None and interrupted.is_set():
                    stop = "cancelled: interrupted (Ctrl-C)"
                if stop is None and run.store.is_cancel_requested(run.job_id):
                    stop = "cancelled by `vmferry job cancel`"
            except KeyboardInterrupt:  # a second Ctrl-C: still wait for libvirt's copy
                stop = "cancelled: interrupted (Ctrl-C)"
            if stop is not None and worker.is_alive() and not told:
                told = True
                run.note(f"{stop}: waiting for the host's copy to end, then removing it")
    (done,) = outcome
    if isinstance(done, VmferryError):
        return f"the copy failed: {done.message}", copied
    if isinstance(done, BaseException):
        raise done
    copied = volume_allocation(conn, done) or copied
    if stop is not None:
        return stop, copied
    run.event("status", f"copied disk {plan.target} into {done}", copied_bytes=copied)
    return None, copied


def _judge(conn: LibvirtHost, vm: str, plan: StorageMove, before: Disk | None, path: str,
           host: str) -> DiskCopy:  # fmt: skip
    """The disk after the pivot, judged as a copied disk is (same capacity and format, a
    volume libvirt knows), and running on the new path."""
    try:
        after = list(conn.get_vm(vm).spec.disks)
    except VmferryError:
        after = None
    # the copy is judged against the format asked for (--format), the rest against the disk
    before_disks = [] if before is None else [replace(before, format=plan.fmt)]
    paths = {d.target: conn.disk_path(d) for d in after or ()}
    judged = judge_copies([plan.target], before_disks, {plan.target: plan.source_path}, after,
                          paths, source=f"{host} (pool {plan.source_pool or '-'})",
                          destination=f"{host} (pool {plan.pool})")[0]  # fmt: skip
    now = paths.get(plan.target)
    if judged.verified and now != path:
        wrong = f"{plan.target} runs on {now}, not on {path}"
        return replace(judged, verified=False, checks=(*judged.checks, wrong))
    return judged


def reconcile_storage_move(store: Store, job: Job) -> Job:
    """Finish the record of a ``move-storage`` job whose vmferry died, as the host shows it
    ended: a copy still running is cancelled and its new volume removed (the VM stays on its
    disk: failed); a VM already switched to the new volume is a completed move whose old
    volume is left; a copy that never switched is failed and its new volume removed. A host
    that does not answer leaves the job as it is, with a note."""
    facts: dict[str, object] = {}
    for event in job.events:
        if event.kind == "storage":
            facts.update(event.data)
    target, new = str(facts.get("target", "")), facts.get("destination_path")
    old = str(facts.get("source_path", ""))
    host = store.get_host(job.source)
    try:
        with LibvirtHost.connect(host.name, host.uri) as conn:
            record = conn.get_vm(job.vm)
            disk = next((d for d in record.spec.disks if d.target == target), None)
            running = conn.disk_path(disk) if disk is not None else None
            active = record.state is VmState.RUNNING
            if active and copy_progress(conn, job.vm, target) is not None:
                cancel_copy(conn, job.vm, target)
                store.add_event(job.id, "storage", f"cancelled the copy of disk {target}")
                running = old
            if new is not None and running == new:
                persist_disk_source(conn, job.vm, target, str(new), str(facts.get("format")))
                status, why = JobStatus.COMPLETED, None
                store.add_event(job.id, "note", f"resumed: {job.vm} runs on {new}; the old "
                                f"volume {old} is left (not verified by vmferry)")  # fmt: skip
            else:
                if new is not None:
                    delete_volume(conn, str(new))
                status = JobStatus.FAILED
                why = (f"vmferry ended before the switch; {job.vm} stays on {running or old}"
                       + ("" if new is None else f", {new} removed"))  # fmt: skip
    except VmferryError as exc:
        store.add_event(job.id, "note", f"cannot resume yet: {exc.message}")
        return store.get_job(job.id)
    result = MigrationResult(job.id, job.vm, job.source, job.destination, Strategy.LIVE,
                             status, why, None, None, None, None)  # fmt: skip
    store.finish(job.id, result)
    return store.get_job(job.id)
