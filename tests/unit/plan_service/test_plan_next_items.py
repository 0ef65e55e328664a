"""The pure rules that run a plan: which items start now, what a resumed run redoes."""

from __future__ import annotations

from dataclasses import replace

from vmferry.model.plan_run import (
    ItemStatus,
    PlanItem,
    PlanStatus,
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
