"""`vmferry migrate`: check, then move a running VM (live, or warm/cold through
:mod:`vmferry.service.offline_move`), verify, record."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from vmferry.assess.preflight import DiskReach
from vmferry.assess.stream_features import validate
from vmferry.drivers.libvirt_host import LibvirtHost, shared_connections
from vmferry.drivers.libvirt_migration import MigrationRequest
from vmferry.drivers.qemu_monitor import measure_dirty_rate, set_vcpu_cap, vcpu_seconds
from vmferry.engine.convergence import plan_vcpu_cap
from vmferry.engine.live import LivePlan, NoteFn, ProgressFn, policy_config, run_live_migration
from vmferry.errors import BadInputError, BlockedError, VmferryError
from vmferry.model import Host, Severity, VmSpec
from vmferry.model.hook import Hook
from vmferry.model.jsonable import to_jsonable
from vmferry.model.migration import (
    Compression,
    JobStatus,
    MigrationOptions,
    MigrationResult,
    Strategy,
)
from vmferry.predict.strategy import with_choice
from vmferry.service.auto_strategy import choose_move
from vmferry.service.backup import back_up
from vmferry.service.check import CheckReport, check_migration
from vmferry.service.hooks import after_failure, before_move, hooks_for, with_post_hooks
from vmferry.service.jobs import reconcile_vm
from vmferry.service.lease import process_lease
from vmferry.service.netprofile import NetworkMove, finish_move, prepare_destination
from vmferry.service.offline_move import check_offline, run_offline
from vmferry.service.predict import after_migration, before_migration
from vmferry.service.rollback import needs_rollback, roll_back
from vmferry.service.send_queue import bound_send_queue, restore_send_queue
from vmferry.service.witnesses import witness_for
from vmferry.store.db import Store, open_store
from vmferry.verify import sites
from vmferry.verify.profile_checks import check_in_force

MIB = 2**20
JobFn = Callable[[str], None]


@dataclass(frozen=True)
class MigrateOutcome:
    result: MigrationResult
    check: CheckReport
    backup_blocked: bool = False  # --backup: the pool cannot hold it (exit 3)
    rolled_back_by: str | None = None  # --rollback: the job that moved the VM back


def _quiet(*_args: object) -> None:
    return None


def link_bandwidth_mib_s(link_mbps: int) -> int:
    """QEMU's bandwidth cap (MiB/s, whole) for a link of ``link_mbps`` Mbit/s, rounded up."""
    return -(-link_mbps * 1_000_000 // 8 // MIB)


def migrate_auto(
    vm: str,
    to: str,
    options: MigrationOptions,
    *,
    on_progress: ProgressFn = _quiet,
    note: NoteFn = _quiet,
    on_job: JobFn = _quiet,
) -> MigrateOutcome:
    """`--strategy auto`: choose the strategy (:func:`choose_move`), then :func:`migrate`.

    ``options.strategy`` is ignored; the job records the choice and its reason."""
    choice = choose_move(vm, to, options, note)
    note(f"strategy {choice.strategy}: {choice.reason}")
    chosen = with_choice(options, choice)
    return migrate(vm, to, chosen, on_progress=on_progress, note=note,
                   strategy_reason=choice.reason, on_job=on_job)  # fmt: skip


def migrate(
    vm: str,
    to: str,
    options: MigrationOptions,
    *,
    on_progress: ProgressFn = _quiet,
    note: NoteFn = _quiet,
    strategy_reason: str | None = None,
    on_job: JobFn = _quiet,
    job_id: str | None = None,
    plan_hooks: Sequence[Hook] = (),
) -> MigrateOutcome:
    """Run the pre-flight checks and, unless they block, the live migration.

    A blocked check still makes a job (status failed, the findings in its events), so
    `vmferry jobs` shows every attempt. ``strategy_reason``: why the strategy was chosen
    (`--strategy auto`), recorded with the job and returned in the result. ``on_job`` is
    called with the job's id once the checks let the move go ahead, long before it ends
    (the server answers with it); a blocked move's job is finished and only returned.
    ``job_id``: run this job, made (``pending``) and owned by this process already (a
    worker running a queued move, :mod:`vmferry.service.queue`) instead of making one.
    ``plan_hooks``: the hooks a plan declares for this VM, merged with the VM's own
    (:func:`vmferry.service.hooks.hooks_for`; docs/hooks.md).
    """
    with shared_connections():  # one connection per host for the whole move
        outcome = _migrate(vm, to, options, on_progress=on_progress, note=note,
                           strategy_reason=strategy_reason, on_job=on_job, job_id=job_id,
                           plan_hooks=plan_hooks)  # fmt: skip
    if strategy_reason is not None:
        outcome = replace(outcome, result=replace(outcome.result,
                                                  strategy_reason=strategy_reason))  # fmt: skip
    if options.rollback and needs_rollback(outcome.result):
        back = roll_back(outcome.result.job_id, note=note)
        outcome = replace(outcome, rolled_back_by=back.job_id)
    return outcome


def _migrate(
    vm: str,
    to: str,
    options: MigrationOptions,
    *,
    on_progress: ProgressFn,
    note: NoteFn,
    strategy_reason: str | None,
    on_job: JobFn,
    job_id: str | None,
    plan_hooks: Sequence[Hook],
) -> MigrateOutcome:
    if options.to_pool is not None and not (options.copy_storage or options.strategy.boots):
        raise BadInputError(
            "--to-pool names the destination pool copied disks go into: give "
            "it with --copy-storage (a live move), --strategy cold or warm-incremental"
        )
    reconcile_vm(vm)
    note(f"checking {vm} -> {to}")
    if options.strategy.offline:  # warm and cold: the checks as they apply to them
        report = check_offline(vm, to, options)
    else:
        validate(options.parallel, options.compression)
        report = check_migration(vm, to, copy_storage=options.copy_storage, tls=options.tls,
                                 parallel=options.parallel, compression=options.compression,
                                 to_pool=options.to_pool,
                                 postcopy=options.strategy is Strategy.POSTCOPY)  # fmt: skip
    store = open_store()
    source, destination = store.get_host(report.source), store.get_host(report.destination)
    if job_id is None:
        job = store.create_job("migrate", vm, source.name, destination.name, options)
        store.set_owner(job.id, process_lease(store))
    else:  # queued: made where the VM was then; it must still be there
        job = store.get_job(job_id)
        if job.source != source.name:
            result = MigrationResult(job.id, vm, job.source, destination.name, options.strategy,
                                     JobStatus.FAILED, f"{vm} runs on {source.name} now, not "
                                     f"on {job.source} where the move was asked for", None,
                                     None, None, None)  # fmt: skip
            store.finish(job.id, result)
            return MigrateOutcome(result, report)
    hooks = hooks_for(store, vm, plan_hooks)
    backup_blocked = False
    if strategy_reason is not None:
        store.add_event(job.id, "strategy", f"strategy {options.strategy}: {strategy_reason}",
                        {"strategy": str(options.strategy), "reason": strategy_reason})  # fmt: skip
    store.add_event(job.id, "checks", f"pre-flight: {len(report.findings)} findings, "
                    f"{'blocked' if report.blocked else 'clear'}",
                    {"findings": to_jsonable(list(report.findings))})  # fmt: skip
    if not report.blocked:  # a blocked move says its blockers in its reason
        for finding in report.findings:
            if finding.severity is Severity.WARNING:
                note(f"pre-flight warning: {finding.message}")
    if report.blocked:
        blockers = report.blocker_ids
        result = MigrationResult(job.id, vm, source.name, destination.name, options.strategy,
                                 JobStatus.FAILED, "blocked by pre-flight checks: "
                                 + ", ".join(blockers), None, None, None, None)  # fmt: skip
        store.finish(job.id, result)
        after_failure(store, job.id, hooks)
        return MigrateOutcome(result, report)
    on_job(job.id)  # the move goes ahead (a blocked one ended above, its id in its result)
    refused = before_move(store, job.id, hooks)  # pre-migrate hooks: one failing blocks
    if refused is None and options.backup_pool is not None:  # before any change
        try:
            back_up(store, job.id, vm, source, options.backup_pool, note=note)
        except VmferryError as exc:
            refused = f"no backup, so no move: {exc.message}"
            backup_blocked = isinstance(exc, BlockedError)
    if refused is not None:
        result = MigrationResult(job.id, vm, source.name, destination.name, options.strategy,
                                 JobStatus.FAILED, refused, None, None, None, None)  # fmt: skip
        store.finish(job.id, result)
        after_failure(store, job.id, hooks)
        return MigrateOutcome(result, report, backup_blocked)
    if options.strategy.offline:  # warm and cold: vmferry.engine.offline
        offline = run_offline(report, job.id, source, destination, options, store, note, hooks)
        after_failure(store, job.id, hooks)  # only when it did not complete
        return MigrateOutcome(offline, report)

    bandwidth = options.bandwidth_mib_s
    if bandwidth is None and destination.link_mbps:  # the link's known rate
        bandwidth = link_bandwidth_mib_s(destination.link_mbps)
    disks = report.facts.disks if report.facts is not None else ()
    pathed = [d for d in disks if d.path]
    request = MigrationRequest(
        vm=vm,
        destination_uri=destination.uri,
        migration_uri=destination.migration_uri,
        bandwidth_mib_s=bandwidth,
        allow_postcopy=options.strategy is Strategy.POSTCOPY,
        # vmferry checked that the destination resolves every shared disk itself
        unsafe=bool(pathed) and all(d.reach is DiskReach.SHARED for d in pathed)
        and not options.copy_storage,
        copy_disks=tuple(d.target for d in disks if d.reach is DiskReach.LOCAL)
        if options.copy_storage else (),
        copy_paths=tuple((d.target, d.copy_path) for d in disks
                         if d.reach is DiskReach.LOCAL and d.copy_path is not None)
        if options.copy_storage and options.to_pool else (),
        tls=report.encrypt,
        parallel=options.parallel,
        compression=None if options.compression is Compression.NONE
        else options.compression.value,
    )  # fmt: skip
    stream = "encrypted (TLS)" if report.encrypt else "not encrypted"
    store.add_event(job.id, "setting", f"migration stream {stream}", {"encrypted": report.encrypt})
    note(f"migration stream {stream}")
    witness = with_post_hooks(witness_for(vm, options.strategy, store, source, destination),
                              store, job.id, hooks)  # fmt: skip
    plan = LivePlan(job.id, vm, source, destination, options, request)
    if report.facts is not None:  # keeps the prediction with the job; never raises
        before_migration(store, job.id, vm, source, destination, report.facts.vm.spec.memory_bytes,
                         options.bandwidth_mib_s, options.max_downtime_ms, note,
                         parallel=options.parallel, compression=options.compression)  # fmt: skip
    try:  # the VM's port profiles on the destination before the switchover
        network = prepare_destination(vm, source, destination, store, job.id, note)
    except VmferryError as exc:  # it removed what it had added
        why = f"port profiles could not be applied on {destination.name}: {exc.message}"
        result = MigrationResult(job.id, vm, source.name, destination.name, options.strategy,
                                 JobStatus.FAILED, why, None, None, None, None)  # fmt: skip
        store.finish(job.id, result)
        after_failure(store, job.id, hooks)
        return MigrateOutcome(result, report)
    queue = bound_send_queue(source, store, job.id, note)  # a shorter pause at the switch
    capped, settled = False, False

    def settle(result: MigrationResult | None) -> None:
        """The work after the move; on its way out normally, before the job ends, so that
        its events are the job's (a client that follows the job until it ends sees them)."""
        nonlocal settled
        settled = True
        moved = result is not None and result.status is JobStatus.COMPLETED
        if queue is not None:
            restore_send_queue(queue, source, store, job.id)
        if capped:
            _lift_cap(vm, (destination, source), store, job.id, note)
        finish_move(network, moved, store, job.id, note)  # FDB check, source clean-up or undo
        if moved:
            sites.note_moved(vm, destination.name)  # a site's own record follows the VM
            vantage = sites.vantage_for(vm)
            if vantage is not None:
                _verify_profiles(vantage, network, store, job.id, note)

    try:
        if options.precopy_cap and bandwidth and report.facts is not None:
            capped = _plan_cap(source, vm, report.facts.vm.spec, bandwidth, options, store,
                               job.id, note)  # fmt: skip
        result = run_live_migration(plan, store, witness, on_progress=on_progress, note=note,
                                    settle=settle)  # fmt: skip
    finally:
        if not settled:  # interrupted, or the store fell behind: the same clean-up
            settle(None)
    after_migration(store, result)  # the actual figures beside the prediction; never raises
    after_failure(store, job.id, hooks)  # on-failure hooks, when it did not complete
    return MigrateOutcome(result, report)


def _verify_profiles(
    vantage: sites.Vantage, network: NetworkMove, store: Store, job_id: str, note: NoteFn
) -> None:
    """From where the VM's users are (a site's vantage): the ACL and rates of every port
    profile the VM took along are in force at the destination; recorded as a
    ``network-verify`` job event."""
    for profile in network.profiles.values():
        try:
            results = check_in_force(vantage.address, vantage.ports, profile, vantage.prober)
        except VmferryError as exc:
            store.add_event(job_id, "network-verify", f"profile {profile.name}: not checked: "
                            f"{exc.message}", {"profile": profile.name, "ok": None})  # fmt: skip
            continue
        ok = all(r.ok for r in results)
        summary = "; ".join(f"{r.name}: {'ok' if r.ok else 'FAILED'} ({r.detail})" for r in results)
        message = f"profile {profile.name} {'in force' if ok else 'NOT in force'}: {summary}"
        store.add_event(job_id, "network-verify", message,
                        {"profile": profile.name, "ok": ok,
                         "checks": [to_jsonable(r) for r in results]})  # fmt: skip
        note(message)


def _plan_cap(
    source: Host,
    vm: str,
    spec: VmSpec,
    bandwidth_mib_s: int,
    options: MigrationOptions,
    store: Store,
    job_id: str,
    note: NoteFn,
) -> bool:
    """Measure the guest for a second and, if the model says so, cap its vCPUs now."""
    with LibvirtHost.connect(source.name, source.uri) as src:
        started, cpu_before = time.monotonic(), vcpu_seconds(src, vm)
        dirty = measure_dirty_rate(src, vm)
        busy = (vcpu_seconds(src, vm) - cpu_before) / (max(1, spec.vcpus)
                                                       * (time.monotonic() - started))  # fmt: skip
        cap = plan_vcpu_cap(spec.memory_bytes, dirty, busy, bandwidth_mib_s * MIB,
                            policy_config(options))  # fmt: skip
        data = {"dirty_rate_bytes_s": dirty, "vcpu_busy": round(busy, 3), "cap_pct": cap.percent}
        store.add_event(job_id, "plan", cap.reason, data)
        note(cap.reason)
        if cap.percent is None:
            return False
        set_vcpu_cap(src, vm, cap.percent)
        return True


def _lift_cap(vm: str, hosts: tuple[Host, ...], store: Store, job_id: str, note: NoteFn) -> None:
    """Remove the cap wherever the VM runs now (the destination after a move)."""
    for host in hosts:
        try:
            with LibvirtHost.connect(host.name, host.uri, timeout_s=5) as conn:
                if vm in conn.running_vm_names():
                    set_vcpu_cap(conn, vm, None)
                    message = f"vCPU cap lifted on {host.name}"
                    store.add_event(job_id, "setting", message, {"host": host.name})
                    note(message)
                    return
        except VmferryError as exc:
            store.add_event(job_id, "note", f"could not lift the vCPU cap on {host.name}: "
                            f"{exc.message}", {})  # fmt: skip
