"""`vmferry plan create|show|pause|cancel`: make a wave plan from a plan file, store it,
show it (predicted against actual), and stop it. `plan run|resume` is
:mod:`vmferry.service.plan_run`.

``create_plan`` reads the plan file, measures every VM that has no ``predicted_s`` and runs
on its source (a registered host) the way `vmferry predict` does, lets the planner
(:func:`vmferry.plan.plan`) use the pre-copy model for those VMs' durations (the post-copy
move's where the plan moves a VM with post-copy: :func:`vmferry.predict.strategy.move_prediction`),
chooses the strategy per VM (:func:`vmferry.predict.strategy.choose_strategy`, with the
reason), and stores the plan with one item per VM.

Every strategy runs: live and postcopy through the live engine, warm and cold through
:mod:`vmferry.engine.offline`; the item's reason says why it was chosen.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from vmferry.drivers.libvirt_host import LibvirtHost
from vmferry.drivers.libvirt_stats import rates, read_counters
from vmferry.errors import BadInputError, VmferryError
from vmferry.model import Host, VmState
from vmferry.model.migration import Job, JobStatus, MigrationOptions
from vmferry.model.plan_run import ItemStatus, PlanItem, PlanRecord, PlanStatus
from vmferry.model.vsphere import VsphereVm
from vmferry.plan import (
    Method,
    PlanSpec,
    Schedule,
    ScheduledMigration,
    TransferEstimate,
    load_plan,
    plan,
    schedule_from_dict,
    schedule_to_dict,
    write_gantt,
)
from vmferry.plan.model import PlanInfeasibleError
from vmferry.plan.schema import IMPORT_STRATEGIES, VmEntry, vm_max_downtime_ms
from vmferry.predict.incremental import DiskLoad
from vmferry.predict.model import DEFAULT_CALIBRATION, Calibration, PredictInputs, Prediction
from vmferry.predict.model import predict as predict_model
from vmferry.predict.strategy import (
    LocalDisks,
    MoveStrategy,
    choose_strategy,
    choose_with_disks,
    cold_downtime,
    copy_rate,
    incremental_stop,
    move_prediction,
    move_time_ms,
    warm_downtime_ms,
)
from vmferry.service.auto_strategy import disks_to_copy
from vmferry.service.jobs import cancel_job
from vmferry.service.lease import owner_of
from vmferry.service.plan_imports import (
    ImportChoice,
    InventoryFn,
    PasswordFn,
    ProfilesFn,
    SourceFacts,
    choose_import,
    disk_writes,
    env_password,
    import_doc,
    read_profiles,
)
from vmferry.service.predict import DEFAULT_LINK_BYTES_S, calibration_from_store, gather_inputs
from vmferry.service.rehearse import Rehearsal, rehearse, rehearsed_boots
from vmferry.service.vsphere_sources import inventory
from vmferry.store.db import Store, open_store

__all__ = [
    "Measured",
    "cancel_plan",
    "create_plan",
    "measure_live",
    "owner_alive",
    "pause_plan",
    "plan_json",
    "show_plan",
    "write_plan_gantt",
]

MIB = 2**20
SUPPORTED = tuple(s.value for s in MoveStrategy)


@dataclass(frozen=True)
class Measured:
    """A VM's live facts for the model (the link rate is filled in per migration)."""

    inputs: PredictInputs
    basis: dict[str, str]
    disks: DiskLoad | None = None  # its disks' allocation and write rate (warm-incremental)
    # the disks only its source sees, which every move to its destination copies (the plan
    # file's, or the planner's placement when ``create_plan`` is given an ``assess``; None:
    # none, or not assessed)
    local: LocalDisks | None = None
    off: bool = False  # shut off: nothing ran to measure (``inputs``: its memory, idle)


MeasureFn = Callable[[PlanSpec, Store], tuple[dict[str, Measured], dict[str, str]]]
# (vm, destination, max downtime ms, disk write rate if measured) -> the disks it must copy
AssessFn = Callable[[str, str, int, float | None], LocalDisks | None]


def assess_disks(vm: str, destination: str, max_downtime_ms: int,
                 write_bytes_s: float | None) -> LocalDisks | None:  # fmt: skip
    """The disks only ``vm``'s source sees, which its move to ``destination`` copies (the
    live pre-flight's answer, :func:`vmferry.service.auto_strategy.disks_to_copy`)."""
    return disks_to_copy(vm, destination, MigrationOptions(max_downtime_ms=max_downtime_ms),
                         write_bytes_s)  # fmt: skip


def measure_live(spec: PlanSpec, store: Store) -> tuple[dict[str, Measured], dict[str, str]]:
    """Measure every VM without ``predicted_s`` that runs on its source, a registered host
    (about 1 s each, as `vmferry predict`). Returns the measured VMs and, for the others,
    why they were not measured."""
    hosts = {h.name: h for h in store.list_hosts()}
    measured: dict[str, Measured] = {}
    skipped: dict[str, str] = {}
    for vm in spec.vms:
        if spec.imports(vm):  # read from its source's inventory (service.plan_imports)
            continue
        if vm.predicted_s is not None:
            skipped[vm.name] = "predicted_s is given in the plan file"
            continue
        host = hosts.get(vm.source)
        if host is None:
            skipped[vm.name] = f"its source {vm.source} is not a registered host"
            continue
        try:
            found = _measure_one(host, vm, vm_max_downtime_ms(vm, spec.defaults), store)
        except VmferryError as exc:
            skipped[vm.name] = f"not measured on {host.name}: {exc.message}"
            continue
        if isinstance(found, str):
            skipped[vm.name] = found
        else:
            measured[vm.name] = found
    return measured, skipped


def _idle(memory_bytes: int, link_bytes_s: float, downtime_ms: int) -> PredictInputs:
    """What the model is given for a VM that dirties nothing: one that is off, or one not
    measured (then taken as idle)."""
    return PredictInputs(memory_bytes=memory_bytes, dirty_rate_bytes_s=0.0,
                         link_bytes_s=link_bytes_s, downtime_limit_ms=downtime_ms)  # fmt: skip


def _measure_one(host: Host, vm: VmEntry, max_downtime_ms: int, store: Store) -> Measured | str:
    with LibvirtHost.connect(host.name, host.uri, timeout_s=5) as conn:
        record = conn.get_vm(vm.name)
        if record.state is VmState.SHUT_OFF:  # `auto` moves it cold, and it stays off
            idle = _idle(record.spec.memory_bytes, DEFAULT_LINK_BYTES_S, max_downtime_ms)
            return Measured(idle, {"state": f"shut off on {host.name}"}, off=True)
        if record.state is not VmState.RUNNING:
            return f"it is {record.state} on {host.name}, not running"
        before = read_counters(conn, [vm.name], time.monotonic()).get(vm.name)
        inputs, basis = gather_inputs(
            conn,
            vm.name,
            record.spec.memory_bytes,
            DEFAULT_LINK_BYTES_S,
            max_downtime_ms,
            store=store,
        )  # about a second
        after = read_counters(conn, [vm.name], time.monotonic()).get(vm.name)
    disks = None
    if before is not None and after is not None:
        allocated = sum(d.allocation_bytes or d.capacity_bytes or 0 for d in record.spec.disks
                        if d.source and not d.removable)  # fmt: skip
        disks = DiskLoad(allocated, float(rates(before, after)["disk_write_bytes_s"] or 0.0))
    local = None
    if vm.destination is not None:
        try:
            local = assess_disks(vm.name, vm.destination, max_downtime_ms,
                                 None if disks is None else disks.write_bytes_s)  # fmt: skip
        except VmferryError as exc:  # the move's own pre-flight says it again
            basis = {**basis, "disks": f"not assessed: {exc.message}"}
    return Measured(inputs, basis, disks, local)


#: Seconds a migration job spends around QEMU's transfer (pre-flight, the 1 s measurement,
#: the post-move verification) when the store has no completed job to learn it from.
DEFAULT_OVERHEAD_S = 12.0


def per_vm_overhead_s(jobs: Sequence[Job]) -> float:
    """The median time a completed migration job took beyond QEMU's own total time (its
    record's lifetime minus ``total_time_ms``): what the schedule adds to each measured VM's
    predicted transfer. Pure; ``DEFAULT_OVERHEAD_S`` without completed jobs."""
    extra = []
    for job in jobs:
        result = job.result
        if job.status is not JobStatus.COMPLETED or result is None or result.total_time_ms is None:
            continue
        lifetime = (
            datetime.fromisoformat(job.updated_at) - datetime.fromisoformat(job.created_at)
        ).total_seconds()
        extra.append(max(0.0, lifetime - result.total_time_ms / 1000))
    return statistics.median(extra) if extra else DEFAULT_OVERHEAD_S


def create_plan(
    path: str | Path,
    *,
    store: Store | None = None,
    measure: MeasureFn = measure_live,
    method: Method = "auto",
    time_limit_s: float = 10.0,
    assess: AssessFn | None = None,
    password: PasswordFn = env_password,
    read_inventory: InventoryFn = inventory,
    profiles_of: ProfilesFn = read_profiles,
) -> PlanRecord:
    """Load, measure, plan, choose the strategies, and store a new ``pending`` plan.

    ``assess`` (:func:`assess_disks` for real hosts): the disks each measured VM the planner
    placed must copy to its placement; when some must, the plan is made again with those
    placements kept, so that the schedule counts the copies. The VMs of vSphere sources
    are read from their inventories (``read_inventory``, logged in with ``password``;
    :mod:`vmferry.service.plan_imports`), and the running ones' last hour of statistics
    (``profiles_of``: their disk writes size a warm import's cutover). Raises
    ``BadInputError`` (exit 2) for a bad plan file or an infeasible plan
    (``PlanInfeasibleError``)."""
    store = store or open_store()
    facts = SourceFacts(store, password, read_inventory)
    spec = load_plan(path, facts=facts)
    measured, skipped = measure(spec, store)
    calibration = calibration_from_store(store) if measured else DEFAULT_CALIBRATION
    overhead = per_vm_overhead_s(store.list_jobs(limit=200))
    predictions: dict[str, Prediction] = {}
    boots = rehearsed_boots(store)  # a cold move stops its VM at least that long

    imported = {vm.name for vm in spec.vms if spec.imports(vm)}
    writes = _import_writes(spec, facts, profiles_of, store)
    entries = {vm.name: vm for vm in spec.vms}

    def import_choice(vm: str, nbytes: int, rate_bytes_s: float) -> ImportChoice:
        entry = entries[vm]
        hint = entry.strategy or spec.defaults.strategy
        return choose_import(hint if hint in IMPORT_STRATEGIES else "auto", entry.source,
                             facts.vms[(entry.source, vm)].power_state, nbytes, rate_bytes_s,
                             spec.defaults.precopy_interval_s, writes.get(vm))  # fmt: skip

    def predictor(estimate: TransferEstimate) -> float:
        if estimate.vm in imported:  # its disks read from the datastore, then its cutover
            return import_choice(estimate.vm, estimate.transfer_bytes,
                                 estimate.rate_bps / 8).duration_s  # fmt: skip
        found = measured.get(estimate.vm)
        if found is None:  # the planner's own default: bytes over the bandwidth
            return estimate.transfer_bytes * 8 / estimate.rate_bps
        inputs = replace(
            found.inputs,
            link_bytes_s=estimate.rate_bps / 8,
            downtime_limit_ms=estimate.max_downtime_ms,
        )
        p = predictions[estimate.vm] = predict_model(inputs, calibration)
        disks_s = 0.0  # disks only its source sees: every move copies them too
        if found.local is not None:
            disks_s = found.local.load.allocated_bytes / copy_rate(p)
        strategy, _reason, stop_ms, _copying = _strategy(
            estimate.strategy, p, estimate.max_downtime_ms, boots.get(estimate.vm),
            found.disks, found.local, found.off)  # fmt: skip
        return move_time_ms(p, strategy, stop_ms) / 1000 + disks_s + overhead

    schedule = plan(spec, method=method, time_limit_s=time_limit_s, predict=predictor)
    placed = {} if assess is None else _assess_placed(spec, schedule, measured, assess)
    if placed:  # planned again, each placement kept, so that the schedule counts the copies
        pinned = spec.model_copy(update={"vms": [
            vm.model_copy(update={"destination": placed[vm.name]}) if vm.name in placed else vm
            for vm in spec.vms]})  # fmt: skip
        try:
            schedule = plan(pinned, method=method, time_limit_s=time_limit_s, predict=predictor)
        except PlanInfeasibleError as exc:
            raise PlanInfeasibleError(f"{exc.message} (counting the copies of the disks that "
                                      f"only the sources of {', '.join(sorted(placed))} "
                                      "see)") from exc  # fmt: skip
    items = [
        _import_item(
            order,
            m,
            entries[m.vm],
            spec,
            facts.vms[(entries[m.vm].source, m.vm)],
            import_choice(m.vm, m.transfer_bytes, m.bandwidth_mbps * 1e6 / 8),
            writes.get(m.vm),
        )
        if m.vm in imported
        else _item(
            order,
            m,
            entries[m.vm],
            spec,
            predictions.get(m.vm),
            measured.get(m.vm),
            skipped.get(m.vm),
            calibration,
            boots.get(m.vm),
        )
        for order, m in enumerate(schedule.migrations)
    ]
    return store.create_plan(
        spec.name, spec.model_dump(mode="json", warnings=False), schedule_to_dict(schedule), items
    )


def _assess_placed(spec: PlanSpec, schedule: Schedule, measured: dict[str, Measured],
                   assess: AssessFn) -> dict[str, str]:  # fmt: skip
    """For each running, measured VM the planner placed (no destination in the plan file),
    the disks it must copy to its placement, kept in ``measured``; returns those that must
    copy some, with their placements. A VM that cannot be assessed is noted in its basis."""
    entries = {vm.name: vm for vm in spec.vms}
    placed: dict[str, str] = {}
    for m in schedule.migrations:
        found = measured.get(m.vm)
        if entries[m.vm].destination is not None or found is None or found.off:
            continue
        write = None if found.disks is None else found.disks.write_bytes_s
        try:
            local = assess(m.vm, m.destination,
                           vm_max_downtime_ms(entries[m.vm], spec.defaults), write)  # fmt: skip
        except VmferryError as exc:  # the move's own pre-flight says it again
            measured[m.vm] = replace(
                found, basis={**found.basis, "disks": f"not assessed: {exc.message}"}
            )
            continue
        if local is not None:
            measured[m.vm] = replace(found, local=local)
            placed[m.vm] = m.destination
    return placed


def _item(
    order: int,
    m: ScheduledMigration,
    vm: VmEntry,
    spec: PlanSpec,
    prediction: Prediction | None,
    found: Measured | None,
    why_not: str | None,
    calibration: Calibration,
    boot_ms: int | None = None,
) -> PlanItem:
    tolerance = vm_max_downtime_ms(vm, spec.defaults)
    detail: dict[str, Any] = {"measured": found is not None, "max_downtime_ms": tolerance}
    prefix = ""
    if prediction is None:  # no live facts: the plan file's memory, taken as idle
        inputs = _idle(vm.memory_mb * MIB, m.bandwidth_mbps * 1e6 / 8, tolerance)
        prediction = predict_model(inputs, calibration)
        detail["not_measured"] = why_not or "no live facts"
        prefix = f"not measured ({detail['not_measured']}); the model takes it as idle: "
    else:
        detail["basis"] = dict(found.basis) if found is not None else {}
    detail.update(_prediction_doc(prediction))
    strategy, reason, downtime, copy_storage = _strategy(
        vm.strategy or spec.defaults.strategy,
        prediction,
        tolerance,
        boot_ms,
        found.disks if found is not None else None,
        found.local if found is not None else None,
        found is not None and found.off,
    )
    if copy_storage:  # the run moves it live with --copy-storage (vmferry.service.plan_run)
        detail["copy_storage"] = True
    moved = move_prediction(prediction, strategy)
    if moved.total_time_ms != prediction.total_time_ms:  # what the schedule counted for it
        detail["postcopy_total_time_ms"] = moved.total_time_ms
    return PlanItem(
        vm=m.vm,
        wave=m.wave,
        order=order,
        source=m.source,
        destination=m.destination,
        strategy=strategy,
        strategy_reason=prefix + reason,
        predicted_start_s=m.start_s,
        predicted_end_s=m.end_s,
        predicted_s=m.predicted_s,
        predicted_downtime_ms=downtime,
        prediction=detail,
    )


def _import_writes(spec: PlanSpec, facts: SourceFacts, profiles_of: ProfilesFn,
                   store: Store) -> dict[str, float]:  # fmt: skip
    """Per running VM of a vSphere source, its disks' writes (p95 of the last hour of
    vCenter's statistics, stored as its profile); a source that gives none leaves its VMs
    out (their cutovers then count no last changes, and say so)."""
    running: dict[str, list[str]] = {}
    for (source, name), found in facts.vms.items():
        if found.power_state == "poweredOn":
            running.setdefault(source, []).append(name)
    writes: dict[str, float] = {}
    for source, names in running.items():
        try:
            runs = profiles_of(source, names, facts.passwords[source], store)
        except VmferryError:  # the statistics are a refinement: the plan is made without
            continue
        for name, run in runs.items():
            write = disk_writes(run)
            if write is not None:
                writes[name] = write
    return writes


def _import_item(order: int, m: ScheduledMigration, vm: VmEntry, spec: PlanSpec,
                 found: VsphereVm, choice: ImportChoice,
                 write_bytes_s: float | None) -> PlanItem:  # fmt: skip
    """The item of a VM imported from a vSphere source (:func:`choose_import`)."""
    detail: dict[str, Any] = {
        "measured": write_bytes_s is not None,
        "max_downtime_ms": vm_max_downtime_ms(vm, spec.defaults),
        "import": import_doc(choice, found, vm.source, m.transfer_bytes, m.end_s, write_bytes_s),
    }
    return PlanItem(vm=m.vm, wave=m.wave, order=order, source=m.source,
                    destination=m.destination, strategy=choice.strategy,
                    strategy_reason=choice.reason, predicted_start_s=m.start_s,
                    predicted_end_s=m.end_s, predicted_s=m.predicted_s,
                    predicted_downtime_ms=choice.downtime_ms, prediction=detail)  # fmt: skip


def _prediction_doc(p: Prediction) -> dict[str, Any]:
    i = p.inputs
    return {
        "converges": p.converges,
        "total_time_ms": p.total_time_ms,
        "downtime_ms": p.downtime_ms,
        "transferred_bytes": p.transferred_bytes,
        "rounds": len(p.rounds),
        "inputs": {
            "memory_bytes": i.memory_bytes,
            "dirty_rate_bytes_s": round(i.dirty_rate_bytes_s),
            "link_bytes_s": round(i.link_bytes_s),
            "zero_fraction": i.zero_fraction,
            "working_set_bytes": i.working_set_bytes,
        },
    }


def _strategy(hint: str, p: Prediction, tolerance: int, boot_ms: int | None = None,
              disks: DiskLoad | None = None,
              local: LocalDisks | None = None,
              off: bool = False) -> tuple[str, str, int, bool]:  # fmt: skip
    """(strategy, reason, predicted downtime ms, live with --copy-storage) for one VM;
    ``boot_ms``: its last rehearsal's boot, which a cold move stops it for at least;
    ``disks``: its disks as measured (a warm-incremental move's rounds); ``local``: the
    disks only its source sees (auto weighs copying them; live copies them); ``off``: it is
    shut off (auto moves it cold; it stays off)."""
    if off and hint == "auto":
        return "cold", ("it is shut off: a cold move copies what only its host sees and "
                        "defines it on its destination, where it stays off"), 0, False  # fmt: skip
    if hint == MoveStrategy.WARM_INCREMENTAL:
        words, stop_ms = incremental_stop(p, disks, tolerance, boot_ms)
        return hint, f"set in the plan file (strategy: {hint}); {words}", stop_ms, False
    if hint == MoveStrategy.COLD and boot_ms is not None:
        cold, booted = cold_downtime(warm_downtime_ms(p), boot_ms)
        return hint, f"set in the plan file (strategy: cold){booted}", cold, False
    if hint in (MoveStrategy.WARM, MoveStrategy.COLD):
        warm = warm_downtime_ms(p)
        stop = "stops the VM for about" if hint == "warm" else "stops the VM for at least"
        return hint, (f"set in the plan file (strategy: {hint}); the model says a {hint} "
                      f"move {stop} {warm / 1000:.1f} s"), warm, False  # fmt: skip
    if hint in SUPPORTED:
        downtime = (
            p.guest_pause_ms
            if hint == "live" and p.converges
            else round(p.calibration.switchover_ms)
        )
        model = f"the model predicts {p.total_time_ms / 1000:.1f} s" + (
            f" with {p.guest_pause_ms} ms downtime" if p.converges else ", not converging"
        )
        copying = hint == MoveStrategy.LIVE and local is not None
        if copying:
            model += "; its disks are on its host only: it moves with --copy-storage"
        return hint, f"set in the plan file (strategy: {hint}); {model}", downtime, copying
    if local is not None:
        choice = choose_with_disks(p, local, tolerance, boot_ms=boot_ms)
    else:
        choice = choose_strategy(p, tolerance, allow_postcopy=True, boot_ms=boot_ms)
    return (choice.strategy.value, choice.reason, choice.predicted_downtime_ms,
            choice.copy_storage)  # fmt: skip


# -- show -----------------------------------------------------------------------------------


def show_plan(plan_id: str, *, store: Store | None = None) -> PlanRecord:
    """The plan with its items; ``NotFoundError`` (exit 2) for an unknown id."""
    return (store or open_store()).get_plan(plan_id)


def actual_spans(record: PlanRecord) -> dict[str, tuple[float, float]]:
    """Per VM that has run: (start, end) in seconds from the plan's first run."""
    return {
        i.vm: (i.actual_start_s, i.actual_end_s)
        for i in record.items
        if i.actual_start_s is not None and i.actual_end_s is not None
    }


def write_plan_gantt(record: PlanRecord, path: str | Path) -> Path:
    """The Gantt chart (``.html`` or ``.png``): predicted bars, and actual bars where the
    VMs have moved."""
    schedule = _schedule_with_strategies(record)
    return write_gantt(schedule, path, actual=actual_spans(record) or None)


def _schedule_with_strategies(record: PlanRecord) -> Schedule:
    schedule = schedule_from_dict(record.schedule)
    chosen = {i.vm: i.strategy for i in record.items}
    migrations = tuple(
        replace(m, strategy=chosen.get(m.vm, m.strategy)) for m in schedule.migrations
    )
    return replace(schedule, migrations=migrations)


def plan_json(record: PlanRecord) -> dict[str, Any]:
    """The `vmferry plan show --json` document (docs/planning.md)."""
    sched = record.schedule
    spans = actual_spans(record)
    actual_makespan = max((end for _, end in spans.values()), default=None)
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status.value,
        "reason": record.reason,
        "requested": record.requested,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "makespan_s": sched.get("makespan_s"),
        "lower_bound_s": sched.get("lower_bound_s"),
        "lower_bound_parts": sched.get("lower_bound_parts"),
        "method": sched.get("method"),
        "actual_makespan_s": actual_makespan,
        "waves": sched.get("waves", []),
        "items": [_item_json(i) for i in record.items],
        "schedule": sched,
    }


def _item_json(i: PlanItem) -> dict[str, Any]:
    ran = i.started_at is not None
    return {
        "vm": i.vm,
        "wave": i.wave,
        "order": i.order,
        "source": i.source,
        "destination": i.destination,
        "strategy": i.strategy,
        "strategy_reason": i.strategy_reason,
        "copy_storage": bool(i.prediction.get("copy_storage")),  # live: its disks copied too
        "status": i.status.value,
        "job_id": i.job_id,
        "reason": i.reason,
        "attempts": i.attempts,
        "rehearsal": i.prediction.get("rehearsal"),  # `plan create --rehearse`, else None
        "predicted": {
            "start_s": i.predicted_start_s,
            "end_s": i.predicted_end_s,
            "duration_s": i.predicted_s,
            "downtime_ms": i.predicted_downtime_ms,
            "model": i.prediction,
        },
        "actual": {
            "start_s": i.actual_start_s,
            "end_s": i.actual_end_s,
            "total_time_ms": i.actual_total_ms,
            "downtime_ms": i.actual_downtime_ms,
        }
        if ran
        else None,
    }


# -- pause and cancel ---------------------------------------------------------------------


def owner_alive(store: Store, record: PlanRecord) -> bool:
    """Whether a vmferry process still runs the plan (its lease, see
    :mod:`vmferry.service.lease`)."""
    return owner_of(store, record.owner_id, record.owner_pid, record.owner_start_ticks).alive


def pause_plan(plan_id: str, *, store: Store | None = None) -> PlanRecord:
    """Pause: a running plan starts no new migration and pauses once the running ones end
    (its owner does that); a plan nobody runs is paused at once."""
    store = store or open_store()
    record = store.get_plan(plan_id)
    if record.status.finished:
        raise BadInputError(f"plan {plan_id} is {record.status}; there is nothing to pause")
    if record.status is PlanStatus.PAUSED:
        return record
    if record.status is PlanStatus.RUNNING and owner_alive(store, record):
        store.request_plan(plan_id, "pause")
        return store.get_plan(plan_id)
    return store.set_plan_status(plan_id, PlanStatus.PAUSED, "paused by `vmferry plan pause`")


def cancel_plan(plan_id: str, *, store: Store | None = None, wait_s: float = 30) -> PlanRecord:
    """Cancel: a running plan's owner cancels its running migrations (their sources keep
    running) and stops; for a plan nobody runs, the jobs its items left unfinished are
    cancelled (or reconciled) here and the plan is cancelled."""
    store = store or open_store()
    record = store.get_plan(plan_id)
    if record.status.finished:
        raise BadInputError(f"plan {plan_id} is {record.status}; there is nothing to cancel")
    if record.status is PlanStatus.RUNNING and owner_alive(store, record):
        store.request_plan(plan_id, "cancel")
        return store.get_plan(plan_id)
    for item in record.items:
        if item.status is ItemStatus.COMPLETED:
            continue
        if item.status is ItemStatus.RUNNING and item.job_id is not None:
            job = cancel_job(item.job_id, wait_s=wait_s)
            if job.status.value == "completed":
                result = job.result
                store.save_plan_item(
                    plan_id,
                    replace(
                        item,
                        status=ItemStatus.COMPLETED,
                        reason=None,
                        actual_total_ms=None if result is None else result.total_time_ms,
                        actual_downtime_ms=None if result is None else result.downtime_ms,
                    ),
                )
                continue
        store.save_plan_item(
            plan_id, replace(item, status=ItemStatus.CANCELLED, reason="cancelled with the plan")
        )
    store.set_plan_owner(plan_id, None)
    return store.set_plan_status(
        plan_id, PlanStatus.CANCELLED, "cancelled by `vmferry plan cancel`"
    )


@dataclass(frozen=True)
class ItemRehearsal:
    """One plan item's rehearsal: ``status`` completed, failed or skipped, and why not."""

    vm: str
    destination: str
    status: str
    reason: str | None
    phases_ms: dict[str, int]
    job_id: str | None


RehearseFn = Callable[..., Rehearsal]


def rehearse_plan(
    plan_id: str,
    *,
    pool: str | None = None,
    store: Store | None = None,
    rehearse_fn: RehearseFn = rehearse,
    on_item: Callable[[ItemRehearsal], None] = lambda _r: None,
) -> list[ItemRehearsal]:
    """Rehearse every VM of plan ``plan_id`` on its planned destination, wave by wave
    (:func:`vmferry.service.rehearse.rehearse`: a copy booted in isolation, then removed),
    and keep each outcome in the item's ``prediction["rehearsal"]``. A VM that cannot be
    rehearsed (not found, stopped, no shared pool) is ``failed`` with the reason: the plan
    would fail there too."""
    store = store or open_store()
    record = store.get_plan(plan_id)
    done = []
    for item in sorted(record.items, key=lambda i: (i.wave, i.order)):
        try:
            found = rehearse_fn(item.vm, item.destination, pool=pool, store=store)
            outcome = ItemRehearsal(item.vm, item.destination, found.status, found.reason,
                                    dict(found.phases_ms), found.job_id)  # fmt: skip
        except VmferryError as exc:
            outcome = ItemRehearsal(item.vm, item.destination, "failed", exc.message, {}, None)
        rehearsal = {"status": outcome.status, "reason": outcome.reason,
                     "phases_ms": outcome.phases_ms, "job_id": outcome.job_id}  # fmt: skip
        kept = {**item.prediction, "rehearsal": rehearsal}
        store.save_plan_item(plan_id, replace(item, prediction=kept))
        on_item(outcome)
        done.append(outcome)
    return done
