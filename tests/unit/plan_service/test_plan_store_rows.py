"""Plans and their items in the store, on SQLite and PostgreSQL (fixtures in
tests/unit/conftest.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vmferry.errors import BadInputError, NotFoundError
from vmferry.model.plan_run import ItemStatus, PlanItem, PlanRecord, PlanStatus
from vmferry.store import Store

SPEC = {"version": 1, "hosts": [{"name": "kvm1"}], "vms": [{"name": "a"}]}
SCHEDULE = {"makespan_s": 30, "lower_bound_s": 20, "migrations": [], "waves": []}


def items() -> list[PlanItem]:
    return [
        PlanItem(vm="b", wave=1, order=1, source="kvm1", destination="kvm2", strategy="postcopy",
                 strategy_reason="does not converge", predicted_start_s=10, predicted_end_s=30,
                 predicted_s=20, predicted_downtime_ms=80,
                 prediction={"measured": True, "inputs": {"memory_bytes": 268435456}}),
        PlanItem(vm="a", wave=1, order=0, source="kvm1", destination="kvm2", strategy="live",
                 strategy_reason="converges", predicted_start_s=0, predicted_end_s=10,
                 predicted_s=10),
    ]  # fmt: skip


def test_create_get_round_trip_in_schedule_order(store: Store) -> None:
    created = store.create_plan("rack7", SPEC, SCHEDULE, items())
    assert isinstance(created, PlanRecord)
    assert len(created.id) == 12 and created.status is PlanStatus.PENDING
    got = store.get_plan(created.id)
    assert got == created
    assert [i.vm for i in got.items] == ["a", "b"]  # by order, not by insertion
    assert got.item("b") == items()[0]
    assert (got.spec, got.schedule, got.name) == (SPEC, SCHEDULE, "rack7")
    assert [p.id for p in store.list_plans()] == [created.id]
    assert store.list_plans()[0].items == ()


def test_status_times_owner_and_requests(store: Store) -> None:
    plan_id = store.create_plan(None, SPEC, SCHEDULE, items()).id
    running = store.set_plan_status(plan_id, PlanStatus.RUNNING)
    assert running.started_at is not None and running.finished_at is None
    lease = store.take_lease(
        "c0ffee", host="elsewhere", node="boot/pid:[1]", pid=4242, start_ticks=99, lease_s=15
    )
    store.set_plan_owner(plan_id, lease)
    store.request_plan(plan_id, "cancel")
    store.request_plan(plan_id, "pause")  # never replaces a cancel
    assert store.plan_request(plan_id) == "cancel"
    record = store.get_plan(plan_id)
    assert (record.owner_pid, record.owner_start_ticks, record.requested) == (4242, 99, "cancel")
    assert record.owner_id == "c0ffee"
    store.request_plan(plan_id, None)
    assert store.plan_request(plan_id) is None
    with pytest.raises(BadInputError):
        store.request_plan(plan_id, "explode")
    done = store.set_plan_status(plan_id, PlanStatus.COMPLETED, None)
    assert done.finished_at is not None and done.started_at == running.started_at


def test_save_item_keeps_actuals_and_derives_offsets(store: Store) -> None:
    plan_id = store.create_plan(None, SPEC, SCHEDULE, items()).id
    started = store.set_plan_status(plan_id, PlanStatus.RUNNING).started_at
    assert started is not None
    item = store.get_plan(plan_id).item("a")
    ran = replace(item, status=ItemStatus.COMPLETED, job_id="0123456789ab", attempts=1,
                  started_at=started, finished_at=started.replace("Z", "") + "+00:00",
                  actual_total_ms=9000, actual_downtime_ms=120)  # fmt: skip
    store.save_plan_item(plan_id, ran)
    got = store.get_plan(plan_id).item("a")
    assert (got.status, got.job_id, got.attempts) == (ItemStatus.COMPLETED, "0123456789ab", 1)
    assert (got.actual_total_ms, got.actual_downtime_ms) == (9000, 120)
    assert (got.actual_start_s, got.actual_end_s) == (0.0, 0.0)
    assert got.started_at == started


def test_unknown_plan_and_item(store: Store) -> None:
    with pytest.raises(NotFoundError, match="vmferry plan create"):
        store.get_plan("nope")
    with pytest.raises(NotFoundError):
        store.plan_request("nope")
    plan_id = store.create_plan(None, SPEC, SCHEDULE, items()).id
    with pytest.raises(NotFoundError, match="no vm 'zz'"):
        store.save_plan_item(plan_id, replace(items()[0], vm="zz"))
