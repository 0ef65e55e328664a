"""`vmferry plan run|resume`: carry out a stored wave plan through the migration engine.

Waves run one after the other (:func:`vmferry.model.plan_run.next_items`): a wave starts
when every VM of the earlier waves has moved. Inside a wave the VMs start in schedule order
whenever their source and destination have a free slot (``max_concurrent`` of the plan
file's hosts) and their bandwidth fits in what the running ones leave of the fleet budget;
a group's VMs start together. Under a budget each migration is capped at the bandwidth the
planner gave it. Each runs in its own thread through
:func:`vmferry.service.migrate.migrate` with the item's strategy, and the plan's hooks for
the VM (``hooks:`` at the plan's top and in its entry) as ``plan_hooks``. Each item records
its job id (as soon as the job exists), its start and end, and the job's total time and
downtime.

Stopping:

- ``pause`` (`vmferry plan pause`, from any process): start nothing new; when the running
  migrations end, the plan is ``paused``;
- ``cancel`` (`vmferry plan cancel`): cancel the running jobs (their sources keep running),
  then the plan is ``cancelled``;
- Ctrl-C: as cancel for the running jobs, but the plan is ``paused`` (resume goes on);
- a failed migration (its source runs): start nothing new; the plan ends ``failed``, and
  `vmferry plan run` tries the failed VMs again.

After a crash or kill, `plan run ID` (or `plan resume ID`) skips the completed items and
reconciles the running ones through :func:`vmferry.service.jobs.reconcile_job` (the hosts
say how each job ended) before going on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from vmferry.engine.convergence import PolicyState
from vmferry.engine.live import ctrl_c_flag
from vmferry.errors import BadInputError, VmferryError
from vmferry.model.migration import (
    JobStatus,
    MigrationOptions,
    ProgressSample,
    Strategy,
)
from vmferry.model.plan_run import (
    ItemStatus,
    PlanItem,
    PlanRecord,
    PlanStatus,
    RunLimits,
    next_items,
    plan_outcome,
    restart_items,
)
from vmferry.plan import PlanSpec
from vmferry.plan.placement import host_slots
from vmferry.plan.schema import plan_hooks, plan_safety
from vmferry.service.import_vm import ImportCancelledError
from vmferry.service.jobs import reconcile_job
from vmferry.service.lease import process_lease
from vmferry.service.migrate import MigrateOutcome, migrate
from vmferry.service.plan import owner_alive
from vmferry.service.plan_imports import (
    ImportItemResult,
    ImportTerms,
    PasswordFn,
    cutover_time,
    env_password,
    import_sources,
    run_import_item,
)
from vmferry.service.vsphere_sources import get_source
from vmferry.store.db import Store, open_store

__all__ = ["PlanEvent", "budget_share_mib_s", "host_slot_limits", "run_plan"]

MIN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PlanEvent:
    """What the runner reports: ``plan`` (the plan's own steps), ``start``, ``done`` (an
    item started or ended; ``item`` is it), ``note`` (a migration's note), ``progress``
    (``sample`` is the migration's newest)."""

    kind: str
    message: str
    vm: str | None = None
    item: PlanItem | None = None
    sample: ProgressSample | None = None


EventFn = Callable[[PlanEvent], None]
MigrateFn = Callable[..., MigrateOutcome]
# (item, plan, password + cutover time + bandwidth, note, store) -> the import's result
# (service.plan_imports.run_import_item)
ImportFn = Callable[[PlanItem, PlanSpec, ImportTerms, Callable[[str], None], Store],
                    ImportItemResult]  # fmt: skip


def _quiet(_event: PlanEvent) -> None:
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def host_slot_limits(spec: dict[str, object]) -> dict[str, int]:
    """Migrations at once per host and vSphere source, as the planner counted them
    (``max_concurrent``, else by the link's speed)."""
    parsed = PlanSpec.model_validate(spec)
    return {h.name: host_slots(h, parsed) for h in parsed.endpoints()}


def run_plan(
    plan_id: str,
    *,
    on_event: EventFn = _quiet,
    store: Store | None = None,
    migrate_fn: MigrateFn = migrate,
    poll_s: float = 0.5,
    password: PasswordFn = env_password,
    import_fn: ImportFn = run_import_item,
) -> PlanRecord:
    """Run (or resume) plan ``plan_id`` until it completes, fails, pauses or is cancelled;
    returns the plan as recorded then. ``BadInputError`` (exit 2) for a finished plan or one
    another live vmferry process runs. The VMs of vSphere sources are imported with
    ``import_fn`` (logged in with ``password``, asked for each source before anything
    starts)."""
    store = store or open_store()
    record = store.get_plan(plan_id)
    if record.status.finished:
        raise BadInputError(f"plan {plan_id} is {record.status}; there is nothing to run")
    if record.status is PlanStatus.RUNNING and owner_alive(store, record):
        raise BadInputError(
            f"plan {plan_id} is being run by vmferry process {record.owner_pid}; "
            f"`vmferry plan pause {plan_id}` or `vmferry plan cancel {plan_id}` stops it"
        )
    passwords = _passwords(store, record, password)
    resumed = record.started_at is not None
    store.set_plan_owner(plan_id, process_lease(store))
    store.request_plan(plan_id, None)
    record = store.set_plan_status(plan_id, PlanStatus.RUNNING)
    on_event(PlanEvent("plan", f"{'resuming' if resumed else 'running'} plan {plan_id}"))
    try:
        _recover(store, record, on_event)
        runner = _Runner(store, store.get_plan(plan_id), on_event, migrate_fn, poll_s,
                         _Imports(import_fn, passwords))  # fmt: skip
        with ctrl_c_flag() as interrupted:
            stop = runner.loop(interrupted)
    except BaseException:
        store.set_plan_status(
            plan_id,
            PlanStatus.PAUSED,
            f"the run stopped on an error; `vmferry plan resume {plan_id}` goes on",
        )
        store.set_plan_owner(plan_id, None)
        raise
    return _finish(store, plan_id, stop, on_event)


def _passwords(store: Store, record: PlanRecord, password: PasswordFn) -> dict[str, str]:
    """The password of every vSphere source an unfinished item imports from."""
    return {name: password(get_source(name, store)) for name in import_sources(record.items)}


@dataclass(frozen=True)
class _Imports:
    """How the runner imports the items of vSphere sources."""

    run: ImportFn
    passwords: dict[str, str]


# -- recovery of an earlier run ----------------------------------------------------------


def _recover(store: Store, record: PlanRecord, on_event: EventFn) -> None:
    """Reconcile the items an earlier run left running, then reset failed and cancelled
    items to pending (see :func:`restart_items`)."""
    items = []
    for item in record.items:
        if item.status is ItemStatus.RUNNING:
            item = _reconcile_item(store, item)
            on_event(
                PlanEvent(
                    "plan",
                    f"{item.vm}: the earlier run left it running; reconciled: {item.status}",
                    item.vm,
                    item,
                )
            )
        items.append(item)
    for before, after in zip(record.items, restart_items(items), strict=True):
        if after != before:
            store.save_plan_item(record.id, after)


def _reconcile_item(store: Store, item: PlanItem) -> PlanItem:
    job_id = item.job_id or _find_job(store, item)
    if job_id is None:
        return replace(
            item,
            status=ItemStatus.PENDING,
            reason="the earlier run stopped before its migration began",
        )
    job = reconcile_job(job_id)
    if not job.status.finished:
        raise VmferryError(
            f"cannot tell yet how {item.vm}'s migration (job {job_id}) ended: "
            f"{job.reason or 'a host did not answer'}; try again later, or see "
            f"`vmferry job show {job_id}`"
        )
    result = job.result
    status = {
        JobStatus.COMPLETED: ItemStatus.COMPLETED,
        JobStatus.CANCELLED: ItemStatus.CANCELLED,
    }.get(job.status, ItemStatus.FAILED)
    return replace(
        item,
        status=status,
        job_id=job_id,
        reason=job.reason,
        finished_at=job.updated_at,
        actual_total_ms=None if result is None else result.total_time_ms,
        actual_downtime_ms=None if result is None else result.downtime_ms,
    )


def _find_job(store: Store, item: PlanItem) -> str | None:
    """The newest job of the item's VM created since the item started (a crash can come
    between the job's creation and the item noting its id)."""
    if item.started_at is None:
        return None
    for job in store.list_jobs(200):
        if job.vm == item.vm and job.created_at >= item.started_at:
            return job.id
    return None


# -- the run -------------------------------------------------------------------------------


class _Runner:
    """The dispatch loop: starts items in worker threads, collects them, stops on request."""

    def __init__(
        self,
        store: Store,
        record: PlanRecord,
        on_event: EventFn,
        migrate_fn: MigrateFn,
        poll_s: float,
        imports: _Imports,
    ) -> None:
        self.store, self.plan_id, self.on_event = store, record.id, on_event
        self.migrate_fn, self.poll_s, self.imports = migrate_fn, poll_s, imports
        self.items = {i.vm: i for i in record.items}
        self.spec = spec = PlanSpec.model_validate(record.spec)
        self.started_at = record.started_at
        self.hooks = {i.vm: plan_hooks(spec, i.vm) for i in record.items}
        self.safety = {i.vm: plan_safety(spec, i.vm) for i in record.items}
        self.limits = RunLimits.from_schedule(host_slot_limits(record.spec), record.schedule)
        self.threads: dict[str, threading.Thread] = {}
        self.done: queue.Queue[PlanItem] = queue.Queue()
        self.job_ids: dict[str, str] = {}
        self.cancel_asked: set[str] = set()
        self.lock = threading.Lock()

    def loop(self, interrupted: threading.Event) -> str | None:
        """Run until nothing runs and nothing more may start; the reason it stopped
        (``pause``, ``cancel``, ``interrupt``, ``failed``) or None when all completed."""
        stop: str | None = None
        while True:
            try:
                stop = self._step(stop, interrupted)
                if not self.threads and (stop is not None or not self._pending()):
                    return stop
                if not self.threads and not next_items(list(self.items.values()), self.limits):
                    return "failed"  # pending items that can never start (a failed wave)
                self._collect(self.poll_s)
            except KeyboardInterrupt:  # a second Ctrl-C: still wait for the aborts
                stop = "interrupt"
                self._cancel_running()

    def _pending(self) -> bool:
        return any(i.status is ItemStatus.PENDING for i in self.items.values())

    def _step(self, stop: str | None, interrupted: threading.Event) -> str | None:
        self._collect(0)
        if (
            any(i.status in (ItemStatus.FAILED, ItemStatus.CANCELLED) for i in self.items.values())
            and stop is None
        ):
            stop = "failed"
            self.on_event(
                PlanEvent(
                    "plan",
                    "a migration did not complete: starting no more; the running ones finish",
                )
            )
        if interrupted.is_set() and stop != "interrupt":
            stop = "interrupt"
            self.on_event(
                PlanEvent(
                    "plan",
                    "interrupted: cancelling the running migrations (their sources keep running)",
                )
            )
        if stop is None or stop == "failed":
            asked = self.store.plan_request(self.plan_id)
            if asked is not None:
                stop = asked
                self.on_event(PlanEvent("plan", f"{asked} requested"))
        if stop in ("cancel", "interrupt"):
            self._cancel_running()
        if stop is None:
            for item in next_items(list(self.items.values()), self.limits):
                self._start(item)
        return stop

    def _collect(self, timeout_s: float) -> None:
        try:
            item = self.done.get(timeout=timeout_s) if timeout_s > 0 else self.done.get_nowait()
        except queue.Empty:
            return
        while True:
            self.items[item.vm] = item
            self.threads.pop(item.vm).join()
            self.on_event(PlanEvent("done", _done_message(item), item.vm, item))
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return

    def _cancel_running(self) -> None:
        with self.lock:
            jobs = {vm: j for vm, j in self.job_ids.items() if vm in self.threads}
        for vm, job_id in jobs.items():
            if job_id not in self.cancel_asked:
                self.cancel_asked.add(job_id)
                self.store.request_cancel(job_id)
                self.on_event(PlanEvent("plan", f"{vm}: cancelling job {job_id}", vm))

    def _start(self, item: PlanItem) -> None:
        item = replace(
            item,
            status=ItemStatus.RUNNING,
            started_at=_now(),
            finished_at=None,
            job_id=None,
            reason=None,
            actual_total_ms=None,
            actual_downtime_ms=None,
            attempts=item.attempts + 1,
        )
        self.store.save_plan_item(self.plan_id, item)
        self.items[item.vm] = item
        thread = threading.Thread(target=self._work, args=(item,), name=f"plan-{item.vm}")
        self.threads[item.vm] = thread
        self.on_event(
            PlanEvent(
                "start",
                f"{item.vm}: {item.source} -> {item.destination} "
                f"({item.strategy}, wave {item.wave})",
                item.vm,
                item,
            )
        )
        thread.start()

    def _work(self, item: PlanItem) -> None:
        """One VM's migration (in its own thread); always records the item's end."""
        vm = item.vm

        def note(message: str) -> None:
            self._attach_job(vm)
            self.on_event(PlanEvent("note", message, vm))

        def progress(sample: ProgressSample, _state: PolicyState) -> None:
            self.on_event(PlanEvent("progress", "", vm, sample=sample))

        ended = item
        # the plan's hooks for this VM (service.migrate adds the VM's own); only when there
        # are some, so a migrate_fn that takes no plan_hooks still runs plans without hooks
        hooks = {"plan_hooks": self.hooks[vm]} if self.hooks.get(vm) else {}
        try:  # everything in here: whatever it raises, the item's end is recorded
            if "import" in item.prediction:  # a VM of a vSphere source (service.plan_imports)
                ended = self._import(item, note)
            else:
                backup_pool, rollback = self.safety.get(vm, (None, False))
                options = MigrationOptions(
                    strategy=Strategy(item.strategy),
                    max_downtime_ms=int(item.prediction.get("max_downtime_ms") or 300),
                    timeout_s=max(MIN_TIMEOUT_S, 4.0 * item.predicted_s),
                    bandwidth_mib_s=budget_share_mib_s(self.limits, vm),
                    # live with its disks copied: chosen so when the plan was made
                    copy_storage=bool(item.prediction.get("copy_storage")),
                    backup_pool=backup_pool,
                    rollback=rollback,
                )
                outcome = self.migrate_fn(
                    vm, item.destination, options, on_progress=progress, note=note, **hooks
                )
                result = outcome.result
                ended = replace(
                    item,
                    status=_item_status(result.status),
                    job_id=result.job_id,
                    reason=result.reason,
                    actual_total_ms=result.total_time_ms,
                    actual_downtime_ms=result.downtime_ms,
                )
        except ImportCancelledError as exc:  # cancelled (a warm one before its cutover): the
            # VM runs on its source
            ended = replace(
                item, status=ItemStatus.CANCELLED, reason=exc.message, job_id=self.job_ids.get(vm)
            )
        except VmferryError as exc:
            ended = replace(
                item, status=ItemStatus.FAILED, reason=exc.message, job_id=self.job_ids.get(vm)
            )
        except BaseException as exc:  # recorded, never lost with the thread
            ended = replace(
                item,
                status=ItemStatus.FAILED,
                job_id=self.job_ids.get(vm),
                reason=f"internal error: {type(exc).__name__}: {exc}",
            )
        finally:
            ended = replace(ended, finished_at=_now())
            try:
                self.store.save_plan_item(self.plan_id, ended)
            finally:
                self.done.put(ended)

    def _import(self, item: PlanItem, note: Callable[[str], None]) -> PlanItem:
        """Import the item's VM from its vSphere source; a warm one cuts over at the time
        its schedule gave (:func:`cutover_time`)."""
        doc = item.prediction["import"]
        at = cutover_time(self.spec, self.started_at, doc.get("cutover_at_s"),
                          datetime.now().astimezone())  # fmt: skip
        if at is not None:
            note(f"{item.vm}: its cutover is scheduled at {at.isoformat(timespec='seconds')}")
        terms = ImportTerms(self.imports.passwords[str(doc["source"])], at,
                            budget_share_mib_s(self.limits, item.vm))  # fmt: skip
        done = self.imports.run(item, self.spec, terms, note, self.store)
        return replace(item, status=ItemStatus.COMPLETED, job_id=done.job_id, reason=None,
                       actual_total_ms=done.total_time_ms,
                       actual_downtime_ms=done.downtime_ms)  # fmt: skip

    def _attach_job(self, vm: str) -> None:
        """Note the VM's job id as soon as the engine has made the job (its owner is us)."""
        with self.lock:
            if vm in self.job_ids:
                return
        me = process_lease(self.store).owner_id
        mine = [j for j in self.store.unfinished_jobs(vm) if j.owner_id == me]
        if not mine:
            return
        job_id = mine[-1].id
        with self.lock:
            self.job_ids[vm] = job_id
        item = replace(self.items[vm], job_id=job_id)
        self.store.save_plan_item(self.plan_id, item)


def budget_share_mib_s(limits: RunLimits, vm: str) -> int | None:
    """The bandwidth cap of ``vm``'s migration: under a fleet budget, what the planner gave
    it (Mbit/s, rounded down to whole MiB/s, at least 1), so the running migrations together
    stay within the budget; without a budget ``None`` (the link's rate)."""
    planned = limits.bandwidth_mbps.get(vm)
    if limits.budget_mbps is None or not planned:
        return None
    return max(1, int(planned * 1_000_000 / 8 / 2**20))


def _item_status(status: JobStatus) -> ItemStatus:
    if status is JobStatus.COMPLETED:
        return ItemStatus.COMPLETED
    if status is JobStatus.CANCELLED:
        return ItemStatus.CANCELLED
    return ItemStatus.FAILED


def _done_message(item: PlanItem) -> str:
    took = "" if item.actual_total_ms is None else f" in {item.actual_total_ms / 1000:.1f} s"
    why = f": {item.reason}" if item.reason else ""
    return f"{item.vm}: {item.status}{took} (predicted {item.predicted_s} s){why}"


def _finish(store: Store, plan_id: str, stop: str | None, on_event: EventFn) -> PlanRecord:
    record = store.get_plan(plan_id)
    reason: str | None
    if stop == "cancel":
        for item in record.items:
            if item.status in (ItemStatus.PENDING, ItemStatus.FAILED):
                store.save_plan_item(
                    plan_id,
                    replace(item, status=ItemStatus.CANCELLED, reason="cancelled with the plan"),
                )
        status, reason = PlanStatus.CANCELLED, "cancelled by `vmferry plan cancel`"
    elif stop == "pause":
        status, reason = PlanStatus.PAUSED, "paused by `vmferry plan pause`"
    elif stop == "interrupt":
        status = PlanStatus.PAUSED
        reason = f"interrupted (Ctrl-C); `vmferry plan resume {plan_id}` goes on"
    else:
        status = plan_outcome(record.items) or PlanStatus.FAILED
        bad = [
            f"{i.vm} ({i.status}: {i.reason})"
            for i in record.items
            if i.status in (ItemStatus.FAILED, ItemStatus.CANCELLED)
        ]
        reason = None
        if status is not PlanStatus.COMPLETED:
            reason = "stopped with items left"
            if bad:
                reason = f"did not move: {'; '.join(bad)}; `vmferry plan run {plan_id}` retries"
    store.request_plan(plan_id, None)
    store.set_plan_owner(plan_id, None)
    record = store.set_plan_status(plan_id, status, reason)
    on_event(PlanEvent("plan", f"plan {plan_id} {status}" + (f": {reason}" if reason else "")))
    return record
