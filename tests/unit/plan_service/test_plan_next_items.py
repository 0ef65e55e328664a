"""The pure rules that run a plan: which items start now, what a resumed run redoes."""

from __future__ import annotations

from dataclasses import replace

from vmferry.model.plan_run import (
    ItemStatus,
    PlanItem,
    PlanStatus,
    RunLimits,
    current_wave,
    next_items,
    plan_outcome,
    restart_items,
)


def item(vm: str, wave: int, order: int, src: str = "a", dst: str = "b",
         status: ItemStatus = ItemStatus.PENDING) -> PlanItem:  # fmt: skip
    return PlanItem(vm=vm, wave=wave, order=order, source=src, destination=dst,
                    strategy="live", strategy_reason="test", predicted_start_s=0,
                    predicted_end_s=10, predicted_s=10, status=status)  # fmt: skip


def names(items: list[PlanItem]) -> list[str]:
    return [i.vm for i in items]


def test_first_wave_starts_in_order_up_to_the_host_slots() -> None:
    items = [item("v1", 1, 0), item("v2", 1, 1), item("v3", 1, 2), item("w1", 2, 3)]
    assert names(next_items(items, {"a": 2, "b": 2})) == ["v1", "v2"]
    assert names(next_items(items, {"a": 1, "b": 4})) == ["v1"]
    assert names(next_items(items, {})) == ["v1"]  # a host not named has one slot


def test_running_items_hold_their_slots() -> None:
    items = [item("v1", 1, 0, status=ItemStatus.RUNNING), item("v2", 1, 1), item("v3", 1, 2)]
    assert names(next_items(items, {"a": 2, "b": 2})) == ["v2"]
    assert next_items(items, {"a": 1, "b": 1}) == []


def test_items_on_other_hosts_overtake_a_blocked_one() -> None:
    items = [item("v1", 1, 0, status=ItemStatus.RUNNING), item("v2", 1, 1),
             item("x1", 1, 2, src="c", dst="d")]  # fmt: skip
    assert names(next_items(items, {"a": 1, "b": 1, "c": 1, "d": 1})) == ["x1"]


def test_the_next_wave_waits_for_every_item_of_the_earlier_one() -> None:
    items = [
        item("v1", 1, 0, status=ItemStatus.COMPLETED),
        item("v2", 1, 1, status=ItemStatus.RUNNING),
        item("w1", 2, 2, src="c", dst="d"),
    ]
    assert next_items(items, {"a": 4, "b": 4, "c": 4, "d": 4}) == []
    done = [replace(i, status=ItemStatus.COMPLETED) if i.wave == 1 else i for i in items]
    assert current_wave(done) == 2
    assert names(next_items(done, {"c": 1, "d": 1})) == ["w1"]


def test_completed_items_are_skipped_and_nothing_is_left_at_the_end() -> None:
    items = [item("v1", 1, 0, status=ItemStatus.COMPLETED), item("v2", 1, 1)]
    assert names(next_items(items, {"a": 4, "b": 4})) == ["v2"]
    all_done = [replace(i, status=ItemStatus.COMPLETED) for i in items]
    assert current_wave(all_done) is None
    assert next_items(all_done, {"a": 4, "b": 4}) == []
    assert plan_outcome(all_done) is PlanStatus.COMPLETED


def test_a_failed_item_stops_its_wave() -> None:
    items = [item("v1", 1, 0, status=ItemStatus.FAILED), item("v2", 1, 1)]
    assert next_items(items, {"a": 4, "b": 4}) == []
    assert plan_outcome(items) is PlanStatus.FAILED
    running = [items[0], replace(items[1], status=ItemStatus.RUNNING)]
    assert plan_outcome(running) is None  # something still runs: no verdict yet


def test_restart_keeps_completed_resets_failed_and_cancelled_and_leaves_running() -> None:
    items = [
        item("done", 1, 0, status=ItemStatus.COMPLETED),
        replace(item("bad", 1, 1, status=ItemStatus.FAILED), job_id="j1", reason="boom"),
        replace(item("stopped", 1, 2, status=ItemStatus.CANCELLED), job_id="j2"),
        replace(item("busy", 1, 3, status=ItemStatus.RUNNING), job_id="j3"),
    ]
    out = {i.vm: i for i in restart_items(items)}
    assert out["done"] == items[0]
    assert (out["bad"].status, out["bad"].job_id) == (ItemStatus.PENDING, None)
    assert (out["stopped"].status, out["stopped"].job_id) == (ItemStatus.PENDING, None)
    assert out["busy"] == items[3]  # only the hosts can tell how it ended
    assert names(next_items(list(out.values()), {"a": 4, "b": 4})) == ["bad", "stopped"]


def test_the_fleet_budget_counts_the_running_migrations() -> None:
    slots = {"a": 4, "b": 4}
    bw = {"v1": 200, "v2": 200, "v3": 100}
    items = [item("v1", 1, 0), item("v2", 1, 1), item("v3", 1, 2)]
    limits = RunLimits(slots, bandwidth_mbps=bw, budget_mbps=300)
    # v2 would take 400 of 300; v3 still fits beside v1 (schedule order, skipping)
    assert names(next_items(items, limits)) == ["v1", "v3"]
    running = [replace(items[0], status=ItemStatus.RUNNING), items[1], items[2]]
    assert names(next_items(running, limits)) == ["v3"]
    v1_done = [replace(items[0], status=ItemStatus.COMPLETED), items[1], items[2]]
    assert names(next_items(v1_done, limits)) == ["v2", "v3"]
    # without a budget the bandwidths do not limit anything
    assert names(next_items(items, RunLimits(slots, bandwidth_mbps=bw))) == ["v1", "v2", "v3"]


def test_a_group_starts_together_or_not_at_all() -> None:
    items = [item("solo", 1, 0), item("g1", 1, 1), item("x", 1, 2, "c", "d"), item("g2", 1, 3)]
    groups = {"g1": "db", "g2": "db"}
    # a has 2 slots: solo takes one, the group needs two: it waits, x (other hosts) goes on
    limits = RunLimits({"a": 2, "b": 2, "c": 1, "d": 1}, groups=groups)
    assert names(next_items(items, limits)) == ["solo", "x"]
    solo_done = [replace(items[0], status=ItemStatus.COMPLETED), *items[1:]]
    assert names(next_items(solo_done, limits)) == ["g1", "g2", "x"]
    # the budget counts the whole group
    bw = {"solo": 10, "g1": 100, "g2": 100, "x": 10}
    tight = RunLimits({"a": 4, "b": 4, "c": 1, "d": 1}, bw, budget_mbps=150, groups=groups)
    assert names(next_items(solo_done, tight)) == ["x"]


def test_limits_are_read_from_the_stored_schedule() -> None:
    schedule = {
        "fleet_budget_mbps": 500,
        "migrations": [
            {"vm": "v1", "bandwidth_mbps": 250, "group": "web"},
            {"vm": "v2", "bandwidth_mbps": 125, "group": None},
        ],
    }
    limits = RunLimits.from_schedule({"a": 2}, schedule)
    assert limits == RunLimits({"a": 2}, {"v1": 250, "v2": 125}, 500, {"v1": "web"})
    assert RunLimits.from_schedule({}, {}).budget_mbps is None
