"""`create_plan` and `run_plan` with the hosts replaced: a fake measurement and a fake
engine that records jobs in a real (SQLite) store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support.leases import dead_owner_lease

from vmferry.errors import BadInputError, VmferryError
from vmferry.model.migration import JobStatus, MigrationOptions, MigrationResult, Strategy
from vmferry.model.plan_run import ItemStatus, PlanStatus
from vmferry.plan import PlanSpec
from vmferry.predict.incremental import DiskLoad, predict_incremental
from vmferry.predict.model import DEFAULT_CALIBRATION, PredictInputs
from vmferry.predict.strategy import LocalDisks
from vmferry.service.lease import process_lease
from vmferry.service.migrate import MigrateOutcome
from vmferry.service.plan import (
    DEFAULT_OVERHEAD_S,
    Measured,
    create_plan,
    plan_json,
    rehearse_plan,
    write_plan_gantt,
)
from vmferry.service.plan_run import run_plan
from vmferry.service.rehearse import Rehearsal, rehearsed_boots
from vmferry.store import Store, open_store

MIB = 2**20
PLAN = """version: 1
name: unit
defaults: {wave_slice_s: 30}
hosts:
  - {name: kvm1, cpus: 16, memory_mb: 8192, link_gbps: 0.4, max_concurrent: 2}
  - {name: kvm2, cpus: 16, memory_mb: 8192, link_gbps: 0.4, max_concurrent: 2}
vms:
  - {name: idle, source: kvm1, destination: kvm2, memory_mb: 256, vcpus: 1}
  - {name: busy, source: kvm1, destination: kvm2, memory_mb: 256, vcpus: 1, max_downtime_ms: 200}
  - {name: other, source: kvm1, destination: kvm2, memory_mb: 512, vcpus: 1%s}
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'plans.db'}"
    monkeypatch.setenv("VMFERRY_DB", url)
    with open_store(url) as opened:
        yield opened


def plan_path(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN % extra)
    return path


def fake_measure(spec: PlanSpec, _store: Store) -> tuple[dict[str, Measured], dict[str, str]]:
    def inputs(dirty_mib_s: float) -> PredictInputs:
        return PredictInputs(memory_bytes=256 * MIB, dirty_rate_bytes_s=dirty_mib_s * MIB,
                             link_bytes_s=125e6, zero_fraction=0.5)  # fmt: skip

    measured = {"idle": Measured(inputs(0), {"dirty_rate_bytes_s": "test"}),
                "busy": Measured(inputs(80), {"dirty_rate_bytes_s": "test"})}  # fmt: skip
    return measured, {"other": "not on a registered host"}


class FakeEngine:
    """Records a job per call, like service.migrate.migrate; fails the VMs in ``fail``."""

    def __init__(self, store: Store, fail: set[str] | None = None,
                 during: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.store, self.fail, self.during = store, fail or set(), during
        self.calls: list[tuple[str, str, MigrationOptions]] = []

    def __call__(self, vm: str, to: str, options: MigrationOptions, *, on_progress: Any,
                 note: Callable[[str], None]) -> MigrateOutcome:  # fmt: skip
        self.calls.append((vm, to, options))
        lease = process_lease(self.store)  # the engine runs in the plan's process
        job = self.store.create_job("migrate", vm, "kvm1", to, options, owner_pid=lease.pid,
                                    owner_start_ticks=lease.start_ticks,
                                    owner_id=lease.owner_id)  # fmt: skip
        note("checks clear")
        if self.during is not None:
            self.during(vm)
        self.store.set_status(job.id, JobStatus.RUNNING)
        failed = vm in self.fail
        result = MigrationResult(job.id, vm, "kvm1", to, options.strategy,
                                 JobStatus.FAILED if failed else JobStatus.COMPLETED,
                                 "boom" if failed else None, 4000, 120, 300 * MIB, 2)  # fmt: skip
        self.store.finish(job.id, result)
        return MigrateOutcome(result, None)  # type: ignore[arg-type]


def test_create_predicts_measured_vms_and_explains_each_strategy(
    store: Store, tmp_path: Path
) -> None:
    record = create_plan(plan_path(tmp_path), store=store, measure=fake_measure)
    assert record.status is PlanStatus.PENDING
    items = {i.vm: i for i in record.items}
    assert items["idle"].strategy == "live"
    assert "converges" in items["idle"].strategy_reason
    assert items["busy"].strategy == "postcopy"  # 80 MiB/s against a 48 MiB/s link
    assert "does not converge" in items["busy"].strategy_reason
    assert items["idle"].prediction["measured"] is True
    assert items["other"].prediction["measured"] is False
    assert items["other"].strategy_reason.startswith("not measured (not on a registered host)")
    # the measured VMs' durations are the model's, not bytes over bandwidth
    model_s = items["idle"].prediction["total_time_ms"] / 1000
    # the schedule's duration: the transfer plus the per-VM overhead (no jobs yet: the default)
    assert items["idle"].predicted_s == pytest.approx(model_s + DEFAULT_OVERHEAD_S, abs=1)
    assert (
        items["idle"].predicted_end_s - items["idle"].predicted_start_s == items["idle"].predicted_s
    )
    assert [i.order for i in record.items] == [0, 1, 2]


def test_a_vm_moved_with_post_copy_is_scheduled_for_the_post_copy_move(
    store: Store, tmp_path: Path
) -> None:
    """At 20 MiB/s against its share of the link, pre-copy converges only throttled (the
    model: about 49 s); auto moves it with post-copy after the first pass, and the schedule
    counts that move's time, not the throttled pre-copy's."""

    def measure(spec: PlanSpec, _store: Store) -> tuple[dict[str, Measured], dict[str, str]]:
        measured, skipped = fake_measure(spec, _store)
        busy = replace(measured["busy"].inputs, dirty_rate_bytes_s=20 * MIB)
        return {**measured, "busy": replace(measured["busy"], inputs=busy)}, skipped

    record = create_plan(plan_path(tmp_path), store=store, measure=measure)
    busy = next(i for i in record.items if i.vm == "busy")
    assert busy.strategy == "postcopy"
    assert busy.strategy_reason.startswith("pre-copy converges only with its guest throttled")
    postcopy_ms = busy.prediction["postcopy_total_time_ms"]
    assert postcopy_ms < busy.prediction["total_time_ms"] / 2
    assert busy.predicted_s == pytest.approx(postcopy_ms / 1000 + DEFAULT_OVERHEAD_S, abs=1)
    idle = next(i for i in record.items if i.vm == "idle")  # a pre-copy move: as before
    assert "postcopy_total_time_ms" not in idle.prediction


def test_a_vm_moved_warm_or_cold_is_scheduled_for_its_stop_not_a_pre_copy(
    store: Store, tmp_path: Path
) -> None:
    """busy dirties 80 MiB/s against its share of the link: its pre-copy never converges.
    Set warm (and then cold) in the plan file, it is saved, sent and restored once: the
    schedule counts that stop, not the pre-copy's time, which it counted before."""
    for strategy in ("warm", "cold"):
        path = plan_path(tmp_path)
        path.write_text(path.read_text().replace(
            "max_downtime_ms: 200}", f"max_downtime_ms: 200, strategy: {strategy}}}"))  # fmt: skip
        record = create_plan(path, store=store, measure=fake_measure)
        busy = next(i for i in record.items if i.vm == "busy")
        assert busy.strategy == strategy
        stop_s = busy.predicted_downtime_ms / 1000
        assert busy.predicted_s == pytest.approx(stop_s + DEFAULT_OVERHEAD_S, abs=1)
        assert stop_s < busy.prediction["total_time_ms"] / 1000 * 0.6  # the pre-copy's


def test_warm_or_cold_in_the_plan_file_is_kept_with_its_reason(
    store: Store, tmp_path: Path
) -> None:
    record = create_plan(plan_path(tmp_path, ", strategy: cold"), store=store, measure=fake_measure)
    other = next(i for i in record.items if i.vm == "other")
    assert other.strategy == "cold"
    seconds = other.predicted_downtime_ms / 1000
    assert other.strategy_reason.endswith(f"a cold move stops the VM for at least {seconds:.1f} s")


def test_run_moves_every_vm_and_records_jobs_and_actuals(store: Store, tmp_path: Path) -> None:
    plan_id = create_plan(plan_path(tmp_path), store=store, measure=fake_measure).id
    engine = FakeEngine(store)
    done = run_plan(plan_id, store=store, migrate_fn=engine, poll_s=0.01)
    assert done.status is PlanStatus.COMPLETED and done.reason is None
    assert sorted(vm for vm, _, _ in engine.calls) == ["busy", "idle", "other"]
    strategies = {vm: str(o.strategy) for vm, _, o in engine.calls}
    assert strategies == {i.vm: i.strategy for i in done.items}
    assert {vm: o.max_downtime_ms for vm, _, o in engine.calls}["busy"] == 200
    assert all(o.bandwidth_mib_s is None for _, _, o in engine.calls)  # no budget: the link's
    for item in done.items:
        assert item.status is ItemStatus.COMPLETED and item.attempts == 1
        assert item.job_id is not None and store.get_job(item.job_id).vm == item.vm
        assert (item.actual_total_ms, item.actual_downtime_ms) == (4000, 120)
        assert item.actual_start_s is not None and item.actual_end_s is not None
    assert done.owner_pid is None
    doc = plan_json(done)
    assert all(i["actual"]["total_time_ms"] == 4000 for i in doc["items"])
    html = write_plan_gantt(done, tmp_path / "g.html").read_text()
    assert html.count('class="bar actual"') == 3


def test_the_plans_backup_and_rollback_reach_each_move(store: Store, tmp_path: Path) -> None:
    """``defaults: {backup_pool, rollback}`` apply to every VM; an entry's own replace them."""
    path = tmp_path / "plan.yaml"
    path.write_text(
        PLAN.replace("defaults: {wave_slice_s: 30}",
                     "defaults: {wave_slice_s: 30, backup_pool: backups, rollback: true}")
        % ", backup_pool: fast, rollback: false"
    )  # fmt: skip
    engine = FakeEngine(store)
    done = run_plan(create_plan(path, store=store, measure=fake_measure).id, store=store,
                    migrate_fn=engine, poll_s=0.01)  # fmt: skip
    assert done.status is PlanStatus.COMPLETED
    asked = {vm: (o.backup_pool, o.rollback) for vm, _, o in engine.calls}
    assert asked == {"idle": ("backups", True), "busy": ("backups", True),
                     "other": ("fast", False)}  # fmt: skip
    plain = FakeEngine(store)
    run_plan(create_plan(plan_path(tmp_path), store=store, measure=fake_measure).id,
             store=store, migrate_fn=plain, poll_s=0.01)  # fmt: skip
    assert {(o.backup_pool, o.rollback) for _, _, o in plain.calls} == {(None, False)}


def test_rehearsing_a_plan_keeps_each_vms_outcome(store: Store, tmp_path: Path) -> None:
    """`plan create --rehearse`: each VM rehearsed on its planned destination, in wave
    order; one that cannot be rehearsed is failed with the reason; the plan shows both."""
    record = create_plan(plan_path(tmp_path), store=store, measure=fake_measure)
    asked: list[tuple[str, str, str | None]] = []

    def fake_rehearse(vm: str, to: str, *, pool: str | None, store: Store) -> Rehearsal:
        asked.append((vm, to, pool))
        if vm == "other":
            raise BadInputError("other is shut-off on kvm1; a rehearsal copies a running VM")
        return Rehearsal(f"job-{vm}", vm, to, "completed", None, {"boot": 4417}, {})

    seen: list[str] = []
    done = rehearse_plan(record.id, pool="shared", store=store, rehearse_fn=fake_rehearse,
                         on_item=lambda r: seen.append(r.vm))  # fmt: skip
    order = [i.vm for i in sorted(record.items, key=lambda i: (i.wave, i.order))]
    assert [vm for vm, _, _ in asked] == order == seen
    assert {(to, pool) for _, to, pool in asked} == {("kvm2", "shared")}
    assert {r.vm: r.status for r in done} == {"idle": "completed", "busy": "completed",
                                              "other": "failed"}  # fmt: skip
    doc = {i["vm"]: i["rehearsal"] for i in plan_json(store.get_plan(record.id))["items"]}
    assert doc["idle"] == {"status": "completed", "reason": None, "phases_ms": {"boot": 4417},
                           "job_id": "job-idle"}  # fmt: skip
    assert doc["other"]["status"] == "failed" and "shut-off" in doc["other"]["reason"]


def test_a_fleet_budget_caps_each_migration_and_what_runs_at_once(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        PLAN.replace("defaults:", "fleet: {bandwidth_budget_gbps: 0.3}\ndefaults:") % ""
    )
    record = create_plan(path, store=store, measure=fake_measure)
    planned = {m["vm"]: m["bandwidth_mbps"] for m in record.schedule["migrations"]}
    assert record.schedule["fleet_budget_mbps"] == 300 and all(planned.values())
    running_mbps: list[int] = []

    def during(_vm: str) -> None:  # what runs, as the runner recorded it, when a job starts
        items = store.get_plan(record.id).items
        running_mbps.append(sum(planned[i.vm] for i in items if i.status is ItemStatus.RUNNING))

    engine = FakeEngine(store, during=during)
    done = run_plan(record.id, store=store, migrate_fn=engine, poll_s=0.01)
    assert done.status is PlanStatus.COMPLETED
    caps = {vm: o.bandwidth_mib_s for vm, _, o in engine.calls}
    assert caps == {vm: int(mbps * 1e6 / 8 / MIB) for vm, mbps in planned.items()}
    assert running_mbps and max(running_mbps) <= 300, running_mbps


def test_resume_skips_completed_items(store: Store, tmp_path: Path) -> None:
    record = create_plan(plan_path(tmp_path), store=store, measure=fake_measure)
    first = record.items[0]
    store.save_plan_item(record.id, replace(first, status=ItemStatus.COMPLETED))
    store.set_plan_status(record.id, PlanStatus.PAUSED)
    engine = FakeEngine(store)
    done = run_plan(record.id, store=store, migrate_fn=engine, poll_s=0.01)
    assert done.status is PlanStatus.COMPLETED
    assert first.vm not in [vm for vm, _, _ in engine.calls]
    assert len(engine.calls) == 2
    assert done.item(first.vm).job_id is None


def test_a_failure_stops_the_plan_and_a_new_run_retries_only_it(
    store: Store, tmp_path: Path
) -> None:
    plan_id = create_plan(plan_path(tmp_path), store=store, measure=fake_measure).id
    failed = run_plan(plan_id, store=store, migrate_fn=FakeEngine(store, {"busy"}), poll_s=0.01)
    assert failed.status is PlanStatus.FAILED
    assert "busy (failed: boom)" in (failed.reason or "")
    assert failed.item("busy").status is ItemStatus.FAILED
    retry = FakeEngine(store)
    done = run_plan(plan_id, store=store, migrate_fn=retry, poll_s=0.01)
    assert done.status is PlanStatus.COMPLETED
    moved_first = {i.vm for i in failed.items if i.status is ItemStatus.COMPLETED}
    assert {vm for vm, _, _ in retry.calls} == {i.vm for i in done.items} - moved_first
    assert done.item("busy").attempts == 2


def test_pause_request_lets_the_running_finish_and_starts_nothing_more(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "one.yaml"
    path.write_text((PLAN % "").replace("max_concurrent: 2", "max_concurrent: 1"))
    plan_id = create_plan(path, store=store, measure=fake_measure).id
    engine = FakeEngine(store, during=lambda _vm: store.request_plan(plan_id, "pause"))
    paused = run_plan(plan_id, store=store, migrate_fn=engine, poll_s=0.01)
    assert paused.status is PlanStatus.PAUSED and paused.requested is None
    assert len(engine.calls) == 1
    statuses = sorted(i.status.value for i in paused.items)
    assert statuses == ["completed", "pending", "pending"]
    done = run_plan(plan_id, store=store, migrate_fn=FakeEngine(store), poll_s=0.01)
    assert done.status is PlanStatus.COMPLETED


def test_an_item_left_running_by_a_crash_is_reconciled_not_rerun(
    store: Store, tmp_path: Path
) -> None:
    record = create_plan(plan_path(tmp_path), store=store, measure=fake_measure)
    first = record.items[0]
    # the earlier run's job completed, but vmferry died before the item noted the end
    job = store.create_job("migrate", first.vm, "kvm1", "kvm2", MigrationOptions())
    store.set_status(job.id, JobStatus.RUNNING)
    live = MigrationOptions().strategy
    result = MigrationResult(job.id, first.vm, "kvm1", "kvm2", live, JobStatus.COMPLETED, None,
                             5000, 90, 1, 1)  # fmt: skip
    store.finish(job.id, result)
    store.save_plan_item(record.id, replace(first, status=ItemStatus.RUNNING, job_id=job.id,
                                            started_at="2020-01-01T00:00:00.000Z"))  # fmt: skip
    store.set_plan_status(record.id, PlanStatus.RUNNING)
    store.set_plan_owner(record.id, dead_owner_lease(store))  # a vmferry that was killed
    engine = FakeEngine(store)
    done = run_plan(record.id, store=store, migrate_fn=engine, poll_s=0.01)
    assert done.status is PlanStatus.COMPLETED
    assert first.vm not in [vm for vm, _, _ in engine.calls]
    assert (done.item(first.vm).job_id, done.item(first.vm).actual_total_ms) == (job.id, 5000)


def test_a_plan_run_by_a_live_process_or_finished_is_refused(store: Store, tmp_path: Path) -> None:
    plan_id = create_plan(plan_path(tmp_path), store=store, measure=fake_measure).id
    store.set_plan_status(plan_id, PlanStatus.RUNNING)
    store.set_plan_owner(plan_id, process_lease(store))
    with pytest.raises(BadInputError, match="being run by vmferry process"):
        run_plan(plan_id, store=store, migrate_fn=FakeEngine(store))
    store.set_plan_status(plan_id, PlanStatus.COMPLETED)
    with pytest.raises(BadInputError, match="is completed"):
        run_plan(plan_id, store=store, migrate_fn=FakeEngine(store))


def test_a_rehearsed_boot_sets_a_cold_moves_least_stop(store: Store, tmp_path: Path) -> None:
    """The boot a VM's last completed rehearsal measured is what the plan predicts its cold
    move stops it for at least (service/rehearse.rehearsed_boots)."""
    for boot in (9000, 4417):  # the newer rehearsal counts
        job = store.create_job("rehearse", "other", "kvm1", "kvm2", MigrationOptions())
        store.add_event(job.id, "rehearsal", "done", {"phases_ms": {"boot": boot}})
        store.set_status(job.id, JobStatus.RUNNING)
        store.finish(job.id, MigrationResult(job.id, "other", "kvm1", "kvm2", Strategy.COLD,
                                             JobStatus.COMPLETED, None, 1, None, None,
                                             None))  # fmt: skip
    assert rehearsed_boots(store) == {"other": 4417}
    record = create_plan(plan_path(tmp_path, ", strategy: cold"), store=store, measure=fake_measure)
    other = next(i for i in record.items if i.vm == "other")
    assert other.predicted_downtime_ms == 4417
    assert other.strategy_reason.endswith("its rehearsal booted it in 4.4 s, so at least that")


def test_a_warm_incremental_vm_is_predicted_from_its_disks_and_run_so(
    store: Store, tmp_path: Path
) -> None:
    """`strategy: warm-incremental` in the plan file: the measured disks give the rounds and
    the stop (the last round, not the disk); a VM not measured says so; the run asks the
    engine for that strategy."""

    def measure(spec: PlanSpec, st: Store) -> tuple[dict[str, Measured], dict[str, str]]:
        measured, skipped = fake_measure(spec, st)
        disks = DiskLoad(2048 * MIB, 2 * MIB)  # 2 GiB, written at 2 MiB/s
        return {**measured, "idle": replace(measured["idle"], disks=disks)}, skipped

    path = tmp_path / "plan.yaml"
    path.write_text((PLAN % ", strategy: warm-incremental").replace(
        "{name: idle, source: kvm1, destination: kvm2, memory_mb: 256, vcpus: 1}",
        "{name: idle, source: kvm1, destination: kvm2, memory_mb: 256, vcpus: 1, "
        "strategy: warm-incremental}"))  # fmt: skip
    record = create_plan(path, store=store, measure=measure)
    items = {i.vm: i for i in record.items}
    idle, other = items["idle"], items["other"]
    assert (idle.strategy, other.strategy) == ("warm-incremental", "warm-incremental")
    assert "2048 MiB, written at 2.0 MiB/s" in idle.strategy_reason
    link = idle.prediction["inputs"]["link_bytes_s"]  # the schedule's share of the link
    expected = predict_incremental(DiskLoad(2048 * MIB, 2 * MIB), link * 0.97, 300).stop_ms
    assert idle.predicted_downtime_ms == expected < 1000
    assert "not measured" in other.strategy_reason
    engine = FakeEngine(store)
    run_plan(record.id, store=store, migrate_fn=engine, poll_s=0.01)
    asked = {vm: options.strategy for vm, _to, options in engine.calls}
    assert asked["idle"] is asked["other"] is Strategy.WARM_INCREMENTAL
    assert asked["busy"] is not Strategy.WARM_INCREMENTAL


def test_auto_weighs_copying_the_disks_only_the_source_sees_and_the_run_copies_them(
    store: Store, tmp_path: Path
) -> None:
    """A VM whose disks only its source sees (``Measured.local``, from the pre-flight against
    its plan-file destination): `auto` weighs live with --copy-storage, warm-incremental and
    cold, as `migrate --strategy auto` does; a live choice runs with ``copy_storage``; the
    schedule counts the disks' copy in its duration; `strategy: live` copies them too."""

    def measure(spec: PlanSpec, st: Store) -> tuple[dict[str, Measured], dict[str, str]]:
        measured, skipped = fake_measure(spec, st)
        quiet = LocalDisks(DiskLoad(512 * MIB, 0.0))  # idle: pre-copy fits, the mirror keeps up
        busy = LocalDisks(DiskLoad(512 * MIB, 40 * MIB))  # writes faster than a mirror follows
        found = {"idle": replace(measured["idle"], disks=quiet.load, local=quiet),
                 "busy": replace(measured["busy"], disks=busy.load, local=busy)}  # fmt: skip
        return found, skipped

    record = create_plan(plan_path(tmp_path), store=store, measure=measure)
    items = {i.vm: i for i in record.items}
    idle, busy = items["idle"], items["busy"]
    assert (idle.strategy, idle.prediction.get("copy_storage")) == ("live", True)
    assert "live with --copy-storage copies them while it runs" in idle.strategy_reason
    assert (busy.strategy, busy.prediction.get("copy_storage")) == ("warm-incremental", None)
    assert "are on its host only, so every move copies them" in busy.strategy_reason
    link = idle.prediction["inputs"]["link_bytes_s"]
    disk_s = 512 * MIB / (link * DEFAULT_CALIBRATION.efficiency)  # the calibrated share
    model_s = idle.prediction["total_time_ms"] / 1000
    assert idle.predicted_s == pytest.approx(model_s + disk_s + DEFAULT_OVERHEAD_S, abs=1)
    engine = FakeEngine(store)
    run_plan(record.id, store=store, migrate_fn=engine, poll_s=0.01)
    asked = {vm: options for vm, _to, options in engine.calls}
    assert (asked["idle"].strategy, asked["idle"].copy_storage) == (Strategy.LIVE, True)
    assert (asked["busy"].strategy, asked["busy"].copy_storage) == (
        Strategy.WARM_INCREMENTAL, False)  # fmt: skip
    assert asked["other"].copy_storage is False  # not measured: nothing known of its disks

    path = tmp_path / "live.yaml"
    path.write_text(PLAN % ", strategy: live")
    path.write_text(
        path.read_text().replace(
            "defaults: {wave_slice_s: 30}", "defaults: {wave_slice_s: 30, strategy: live}"
        )
    )
    told = {i.vm: i for i in create_plan(path, store=store, measure=measure).items}
    assert (told["busy"].strategy, told["busy"].prediction.get("copy_storage")) == ("live", True)
    assert told["busy"].strategy_reason.endswith("it moves with --copy-storage")


def test_auto_moves_a_vm_that_is_off_cold_and_the_run_asks_for_cold(
    store: Store, tmp_path: Path
) -> None:
    def measure(spec: PlanSpec, st: Store) -> tuple[dict[str, Measured], dict[str, str]]:
        measured, skipped = fake_measure(spec, st)
        off = replace(measured["idle"], basis={"state": "shut off on kvm1"}, off=True)
        return {**measured, "idle": off}, skipped

    record = create_plan(plan_path(tmp_path), store=store, measure=measure)
    idle = next(i for i in record.items if i.vm == "idle")
    assert (idle.strategy, idle.predicted_downtime_ms) == ("cold", 0)
    assert idle.strategy_reason.startswith("it is shut off: a cold move")
    engine = FakeEngine(store)
    run_plan(record.id, store=store, migrate_fn=engine, poll_s=0.01)
    assert {vm: o.strategy for vm, _to, o in engine.calls}["idle"] is Strategy.COLD


def test_a_vm_the_planner_places_has_its_disks_assessed_there_and_the_schedule_counts_them(
    store: Store, tmp_path: Path
) -> None:
    """No destination in the plan file: the planner places the VM, then ``assess`` asks
    which disks the move to that placement copies; the plan is made again with the
    placement kept, so the schedule counts the copy, and `auto` weighs it as for a VM whose
    destination the file names. A VM that cannot be assessed is noted, and planned as
    before; without ``assess`` (the fakes' default) nothing is asked."""
    path = tmp_path / "placed.yaml"
    path.write_text((PLAN % "").replace("destination: kvm2, ", ""))
    asked: list[tuple[str, str, int, float | None]] = []
    quiet = LocalDisks(DiskLoad(512 * MIB, 0.0))

    def assess(vm: str, to: str, downtime_ms: int, write: float | None) -> LocalDisks | None:
        asked.append((vm, to, downtime_ms, write))
        if vm == "busy":
            raise VmferryError("host 'kvm2' does not answer")
        return quiet

    before = {i.vm: i for i in create_plan(path, store=store, measure=fake_measure).items}
    record = create_plan(path, store=store, measure=fake_measure, assess=assess)
    items = {i.vm: i for i in record.items}
    # measured VMs only (other was not), each at the one host it can go to
    assert sorted(asked) == [("busy", "kvm2", 200, None), ("idle", "kvm2", 300, None)]
    idle, busy = items["idle"], items["busy"]
    assert idle.destination == "kvm2"
    assert (idle.strategy, idle.prediction.get("copy_storage")) == ("live", True)
    assert "live with --copy-storage copies them while it runs" in idle.strategy_reason
    disk_s = 512 * MIB / (idle.prediction["inputs"]["link_bytes_s"] * 0.97)
    assert idle.predicted_s == pytest.approx(before["idle"].predicted_s + disk_s, abs=1)
    assert busy.prediction["basis"]["disks"] == "not assessed: host 'kvm2' does not answer"
    assert (busy.strategy, busy.predicted_s) == (before["busy"].strategy,
                                                 before["busy"].predicted_s)  # fmt: skip
    assert "copy_storage" not in before["idle"].prediction
