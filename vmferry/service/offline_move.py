"""`vmferry migrate --strategy warm|cold`: the checks as they apply to an offline move, the
state directory and disk copies it needs, and the run through :mod:`vmferry.engine.offline`.

:func:`vmferry.service.migrate.migrate` creates the job as for a live move and hands over
here for warm and cold moves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

from vmferry.assess.preflight import DiskReach, PreflightFacts
from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_offline import pool_directories, prove_shared_directory
from vmferry.engine.live import NoteFn
from vmferry.engine.offline import DiskCopy, OfflinePlan, run_offline_move
from vmferry.errors import BadInputError, VmferryError
from vmferry.model import Finding, Host, Severity, VmState, is_blocked
from vmferry.model.hook import Hook
from vmferry.model.migration import (
    JobStatus,
    MigrationOptions,
    MigrationResult,
    Strategy,
    TlsMode,
)
from vmferry.service.check import CheckReport, check_migration
from vmferry.service.hooks import with_post_hooks
from vmferry.service.netprofile import finish_move, prepare_destination
from vmferry.service.witnesses import witness_for
from vmferry.store.db import Store
from vmferry.verify import sites
from vmferry.verify.witness import NoWitness

__all__ = [
    "check_offline",
    "copies_for",
    "is_off",
    "offline_findings",
    "run_offline",
    "state_dir_candidates",
]

# Findings about the live migration stream; an offline move sends none.
LIVE_ONLY = ("migration.",)  # finding ids that only a live move has
NOT_RUNNING = "vm.not-running"  # a blocker for live, warm and warm-incremental moves


def check_offline(vm: str, to: str, options: MigrationOptions) -> CheckReport:
    """The pre-flight checks for a warm or cold move.

    Warm needs every disk shared (the VM's disks are not copied while its state is saved),
    so ``--copy-storage`` is refused; cold copies what only the source sees, so its disks
    are checked as with ``--copy-storage``. Findings about the migration stream are left
    out: an offline move opens none."""
    if options.strategy is Strategy.WARM and options.copy_storage:
        raise BadInputError("a warm move needs the VM's disks on storage both hosts see; "
                            "--copy-storage is for live and cold moves")  # fmt: skip
    cold = options.strategy.boots  # cold and warm-incremental copy what is not shared
    report = check_migration(vm, to, copy_storage=cold, tls=TlsMode.OFF,  # no stream
                             to_pool=options.to_pool if cold else None)  # fmt: skip
    state = report.facts.vm.state if report.facts is not None else None
    findings = offline_findings(report.findings, options.strategy, vm, state, report.source,
                                report.destination)  # fmt: skip
    return replace(report, findings=findings, blocked=is_blocked(findings))


def offline_findings(findings: Sequence[Finding], strategy: Strategy, vm: str,
                     state: VmState | None, source: str,
                     destination: str) -> tuple[Finding, ...]:  # fmt: skip
    """Pure: the live pre-flight's findings as they apply to an offline move: those about
    the migration stream left out; for a cold move of a VM that is shut off, "not running"
    is no blocker but what the move does (it stays off)."""
    kept = [f for f in findings if not f.id.startswith(LIVE_ONLY)]
    if strategy is Strategy.COLD and state is VmState.SHUT_OFF:
        kept = [f for f in kept if f.id != NOT_RUNNING]
        kept.append(Finding("vm.off", Severity.INFO,
                            f"VM {vm!r} is shut off on {source}: a cold move copies its disks and "
                            f"defines it on {destination}, where it stays off"))  # fmt: skip
    return tuple(kept)


def is_off(report: CheckReport, strategy: Strategy) -> bool:
    """Whether the move is a cold move of a VM that is shut off."""
    return any(f.id == "vm.off" for f in report.findings) and strategy is Strategy.COLD


def state_dir_candidates(
    facts: PreflightFacts, source_pools: dict[str, str], destination_pools: dict[str, str]
) -> list[str]:
    """Pure: where a warm move's state file may go, best first: the pool directories that
    hold the VM's shared disks, then any other directory that is a pool's on both hosts."""
    common = sorted(set(source_pools.values()) & set(destination_pools.values()))
    disk_dirs = [
        os.path.dirname(d.path) for d in facts.disks if d.path and d.reach is DiskReach.SHARED
    ]
    first = [d for d in dict.fromkeys(disk_dirs) if d in common]
    return first + [d for d in common if d not in first]


def copies_for(facts: PreflightFacts, *, qcow2: bool = False) -> tuple[DiskCopy, ...]:
    """Pure: the disks a cold (or warm-incremental) move copies (those only the source
    sees), with their format.

    Raises BadInputError for a disk whose format libvirt does not state (qemu-img is never
    left to guess) or for which the destination has no pool; with ``qcow2`` (warm-
    incremental: the changes are tracked by qcow2 bitmaps) for a disk of another format, and
    when no disk is to be copied."""
    specs = {d.target: d for d in facts.vm.spec.disks}
    copies = []
    for placement in facts.disks:
        if placement.reach is not DiskReach.LOCAL or placement.path is None:
            continue
        disk = specs.get(placement.target)
        if disk is None or disk.removable:
            continue
        if not disk.format:
            raise BadInputError(f"disk {disk.target} ({placement.path}) has no stated format "
                                "(<driver type=...>); vmferry will not guess it")  # fmt: skip
        if placement.copy_pool is None:
            raise BadInputError(f"disk {disk.target}: the destination has no pool to copy "
                                f"{placement.path} into")  # fmt: skip
        if qcow2 and disk.format != "qcow2":
            raise BadInputError(f"disk {disk.target} ({placement.path}) is {disk.format}: "
                                "warm-incremental tracks changes with qcow2 bitmaps; move it "
                                "cold, or `vmferry move-storage --format qcow2` first")  # fmt: skip
        copies.append(DiskCopy(disk.target, placement.path, disk.format, placement.copy_pool))
    if qcow2 and not copies:
        raise BadInputError(f"{facts.vm.spec.name} has no disk only its host sees: "
                            "warm-incremental copies such disks; on shared storage move it "
                            "live or warm")  # fmt: skip
    return tuple(copies)


def run_offline(
    report: CheckReport,
    job_id: str,
    source: Host,
    destination: Host,
    options: MigrationOptions,
    store: Store,
    note: NoteFn,
    hooks: Sequence[Hook] = (),
) -> MigrationResult:
    """Move the VM warm or cold (the job exists, the checks passed) and record it;
    ``hooks``' post-migrate ones run within its verification."""
    vm, facts = report.vm, report.facts
    try:
        if facts is None:
            raise VmferryError("the pre-flight facts are missing")
        state_dir = _state_dir(source, destination, facts, options, note)
        copies = (
            copies_for(facts, qcow2=options.strategy is Strategy.WARM_INCREMENTAL)
            if options.strategy.boots
            else ()
        )
    except BadInputError as exc:  # recorded, then exit 2 like any bad input
        _failed(store, job_id, vm, source, destination, options, exc.message)
        raise
    except VmferryError as exc:
        return _failed(store, job_id, vm, source, destination, options, exc.message)
    off = is_off(report, options.strategy)  # nothing runs to witness: it stays off
    witness = with_post_hooks(NoWitness() if off else witness_for(vm, options.strategy, store,
                                                                  source, destination),
                              store, job_id, hooks)  # fmt: skip
    try:  # the VM's port profiles on the destination before it runs there
        network = prepare_destination(vm, source, destination, store, job_id, note)
    except VmferryError as exc:  # it removed what it had added
        why = f"port profiles could not be applied on {destination.name}: {exc.message}"
        return _failed(store, job_id, vm, source, destination, options, why)
    plan = OfflinePlan(job_id, vm, source, destination, options, state_dir, copies, off)
    settled = False

    def settle(result: MigrationResult | None) -> None:
        """FDB check and source clean-up, or the destination's profiles removed: before the
        job ends, so that their events are the job's."""
        nonlocal settled
        settled = True
        finish_move(network, _runs_on_destination(result), store, job_id, note)
        if result is not None and result.status is JobStatus.COMPLETED:
            sites.note_moved(vm, destination.name)

    try:
        return run_offline_move(plan, store, witness, note=note, settle=settle)
    finally:
        if not settled:  # a step raised past the engine (Ctrl-C): the same clean-up
            settle(None)


def _runs_on_destination(result: MigrationResult | None) -> bool:
    return bool(result and result.verification and result.verification.on_destination)


def _state_dir(source: Host, destination: Host, facts: PreflightFacts,
               options: MigrationOptions, note: NoteFn) -> str | None:  # fmt: skip
    """A warm move's state directory, proven shared (None for a cold move)."""
    if options.strategy is not Strategy.WARM:
        return None
    with (
        LibvirtHost.connect(source.name, source.uri) as src,
        LibvirtHost.connect(destination.name, destination.uri) as dst,
    ):
        if options.state_dir is not None:
            candidates = [options.state_dir]
        else:
            candidates = state_dir_candidates(facts, pool_directories(src), pool_directories(dst))
        reasons = []
        for directory in candidates:
            why = prove_shared_directory(src, dst, directory)
            if why is None:
                note(f"the saved state goes to {directory} (both hosts see it)")
                return directory
            reasons.append(why)
    if options.state_dir is not None:
        raise BadInputError(f"--state-dir {options.state_dir}: {reasons[0]}; give a "
                            "directory that is a storage pool's on both hosts")  # fmt: skip
    raise BadInputError(f"no directory both {source.name} and {destination.name} see for the "
                        f"saved state ({'; '.join(reasons) or 'no pool directory in common'}); "
                        "pass --state-dir")  # fmt: skip


def _failed(store: Store, job_id: str, vm: str, source: Host, destination: Host,
            options: MigrationOptions, why: str) -> MigrationResult:  # fmt: skip
    result = MigrationResult(job_id, vm, source.name, destination.name, options.strategy,
                             JobStatus.FAILED, why, None, None, None, None)  # fmt: skip
    store.finish(job_id, result)
    return result
