"""Strategy choice and right-sizing (pure)."""

from __future__ import annotations

import pytest

from vmferry.predict.model import (
    Calibration,
    PredictInputs,
    Prediction,
    predict,
    with_early_postcopy,
)
from vmferry.predict.rightsize import recommend
from vmferry.predict.strategy import (
    MoveStrategy,
    choose_strategy,
    move_prediction,
    move_time_ms,
    warm_downtime_ms,
)

MIB = 2**20
LINK = 50_000_000.0
CAL = Calibration(efficiency=1.0, setup_ms=400, switchover_ms=100, bytes_factor=1.0)


def prediction(dirty_share: float, memory_mb: int = 512) -> Prediction:
    return predict(PredictInputs(memory_bytes=memory_mb * MIB,
                                 dirty_rate_bytes_s=dirty_share * LINK, link_bytes_s=LINK,
                                 zero_fraction=0.5, downtime_limit_ms=300), CAL)  # fmt: skip


def test_a_converging_vm_moves_live_and_says_why() -> None:
    choice = choose_strategy(prediction(0.1), 300, allow_postcopy=True)
    assert choice.strategy is MoveStrategy.LIVE
    assert "converges" in choice.reason and "300 ms" in choice.reason
    assert choice.predicted_downtime_ms <= 300


def test_a_non_converging_vm_gets_postcopy_when_allowed() -> None:
    choice = choose_strategy(prediction(1.5), 300, allow_postcopy=True)
    assert choice.strategy is MoveStrategy.POSTCOPY
    assert "does not converge" in choice.reason


def test_a_vm_that_converges_only_throttled_gets_postcopy_when_allowed() -> None:
    """At 0.75x of the link pre-copy converges, but only with its guest throttled: the
    policy switches to post-copy at its first judgment instead, and the choice says so, with
    the total of that move and post-copy's risk."""
    p = prediction(0.75)
    assert p.converges
    early = with_early_postcopy(p)
    assert early.total_time_ms < p.total_time_ms
    choice = choose_strategy(p, 300, allow_postcopy=True)
    assert choice.strategy is MoveStrategy.POSTCOPY
    assert choice.reason.startswith("pre-copy converges only with its guest throttled")
    assert f"about {early.total_time_ms / 1000:.1f} s in all" in choice.reason
    assert "a broken link or a failed host loses the VM" in choice.reason
    assert choice.predicted_downtime_ms == 100  # the calibrated switchover
    kept = choose_strategy(p, 300, allow_postcopy=False)
    assert kept.strategy is MoveStrategy.LIVE
    assert kept.reason.endswith("so vmferry's policy will throttle the guest")
    # at a quarter of the link pre-copy converges by itself: live, no throttle named
    quarter = choose_strategy(prediction(0.25), 300, allow_postcopy=True)
    assert quarter.strategy is MoveStrategy.LIVE and "throttle" not in quarter.reason


def test_early_postcopy_is_the_first_pass_and_what_was_dirtied_during_it() -> None:
    p = prediction(0.75)
    early = with_early_postcopy(p)
    first = p.rounds[0]
    dirtied = 0.75 * LINK * first.seconds  # under the working set (all non-zero memory)
    assert early.rounds == (first,) and not early.converges
    assert early.total_time_ms == round(400 + (first.seconds + dirtied / LINK) * 1000)
    assert early.transferred_bytes == round(first.bytes + dirtied)
    assert early.guest_pause_ms == 100


def test_without_postcopy_a_tolerant_vm_moves_warm_and_an_intolerant_one_cold() -> None:
    p = prediction(1.5)
    warm = warm_downtime_ms(p)
    assert warm > 1000
    tolerant = choose_strategy(p, warm + 1000, allow_postcopy=False)
    assert tolerant.strategy is MoveStrategy.WARM
    assert "post-copy is not allowed" in tolerant.reason
    strict = choose_strategy(p, 300, allow_postcopy=False)
    assert strict.strategy is MoveStrategy.COLD
    assert "maintenance window" in strict.reason


def test_a_tolerance_below_the_postcopy_switch_rules_out_postcopy() -> None:
    choice = choose_strategy(prediction(1.5), 50, allow_postcopy=True)
    assert choice.strategy is MoveStrategy.COLD


def test_no_offline_moves_keep_it_live() -> None:
    choice = choose_strategy(prediction(1.5), 300, allow_postcopy=False,
                             allow_offline=False)  # fmt: skip
    assert choice.strategy is MoveStrategy.LIVE
    assert "may not be stopped" in choice.reason


def test_a_live_only_blocker_leaves_warm_even_for_a_vm_that_would_converge() -> None:
    why = "migration.tcg-lost-writes"
    choice = choose_strategy(prediction(0.1), 300, live_refused=why)
    assert choice.strategy is MoveStrategy.WARM
    assert why in choice.reason and "keeps the guest's memory" in choice.reason
    assert "nothing shorter is possible" in choice.reason  # its stop is over 300 ms
    assert choice.predicted_downtime_ms == warm_downtime_ms(prediction(0.1))


def test_live_and_warm_refused_leave_cold_with_both_reasons() -> None:
    choice = choose_strategy(prediction(0.1), 300, live_refused="migration.x",
                             warm_refused="disks.local")  # fmt: skip
    assert choice.strategy is MoveStrategy.COLD
    assert "migration.x" in choice.reason and "disks.local" in choice.reason


def test_a_refused_warm_move_is_passed_over_for_cold() -> None:
    p = prediction(1.5)
    warm = warm_downtime_ms(p)
    allowed = choose_strategy(p, warm + 1000, allow_postcopy=False)
    refused = choose_strategy(p, warm + 1000, allow_postcopy=False,
                              warm_refused="disks.local")  # fmt: skip
    assert (allowed.strategy, refused.strategy) == (MoveStrategy.WARM, MoveStrategy.COLD)
    assert "a warm move is refused (disks.local)" in refused.reason


def test_a_rehearsed_boot_is_what_a_cold_move_stops_the_vm_for_at_least() -> None:
    p = prediction(1.5)
    guessed = choose_strategy(p, 300, allow_postcopy=False)
    booted = choose_strategy(p, 300, allow_postcopy=False, boot_ms=4417)
    assert guessed.strategy is booted.strategy is MoveStrategy.COLD
    assert guessed.predicted_downtime_ms == warm_downtime_ms(p)
    assert booted.predicted_downtime_ms == 4417
    assert booted.reason.endswith("; its rehearsal booted it in 4.4 s, so at least that")
    refused = choose_strategy(p, 300, live_refused="migration.x",
                              warm_refused="disks.local", boot_ms=9000)  # fmt: skip
    assert refused.predicted_downtime_ms == 9000 and "booted it in 9.0 s" in refused.reason
    live = choose_strategy(prediction(0.1), 300, boot_ms=4417)
    assert live.strategy is MoveStrategy.LIVE and "rehearsal" not in live.reason


def test_no_tolerance_given_means_any_downtime() -> None:
    assert choose_strategy(prediction(0.1), None).strategy is MoveStrategy.LIVE
    assert choose_strategy(prediction(1.5), None, allow_postcopy=False).strategy is (
        MoveStrategy.WARM)  # fmt: skip


# -- right-sizing --------------------------------------------------------------------------


def test_an_idle_big_vm_is_oversized() -> None:
    r = recommend(8, 16 * 1024 * MIB, [0.05] * 100, [2 * 1024 * MIB] * 100)
    assert r.oversized and not r.overutilised
    assert r.recommended_vcpus == 1
    assert r.recommended_memory_bytes == 2560 * MIB  # 2 GiB + 20%, up to 256 MiB
    assert "oversized" in r.reason


def test_a_hot_vm_is_overutilised_and_never_shrunk() -> None:
    r = recommend(2, 1024 * MIB, [0.95] * 100, [1000 * MIB] * 100)
    assert r.overutilised and not r.oversized
    assert r.recommended_vcpus >= 3
    assert r.recommended_memory_bytes > 1024 * MIB
    assert "CPU and memory" in r.reason


def test_p95_ignores_a_short_spike() -> None:
    r = recommend(4, 4096 * MIB, [0.3] * 99 + [1.0], [])
    assert r.cpu_p95 == pytest.approx(0.3)
    assert not r.overutilised
    assert r.recommended_vcpus == 2  # 1.2 vCPUs + 25%
    assert r.memory_used_p95_bytes is None and r.recommended_memory_bytes == 4096 * MIB


def test_a_well_sized_vm_is_neither() -> None:
    r = recommend(2, 2048 * MIB, [0.5] * 10, [1400 * MIB] * 10)
    assert not r.oversized and not r.overutilised
    assert "about right" in r.reason


def test_the_move_a_strategy_makes_switches_to_post_copy_only_where_the_policy_would() -> None:
    throttled = prediction(0.7)  # converges only after passes longer than the first
    assert throttled.converges
    early = move_prediction(throttled, MoveStrategy.POSTCOPY)
    assert early == with_early_postcopy(throttled)
    assert early.total_time_ms < throttled.total_time_ms
    assert move_prediction(throttled, MoveStrategy.LIVE) is throttled
    quiet = prediction(0.1)  # pre-copy converges at once: post-copy is never switched to
    assert move_prediction(quiet, MoveStrategy.POSTCOPY) is quiet


def test_a_move_that_stops_its_vm_takes_its_stop_and_a_live_one_its_transfer() -> None:
    """Warm, cold and warm-incremental moves send no running guest's memory: the model's
    time for them is their stop, not the pre-copy that would not converge."""
    busy = prediction(1.5)
    assert not busy.converges
    stop = warm_downtime_ms(busy)
    assert stop < busy.total_time_ms
    for strategy in (MoveStrategy.WARM, MoveStrategy.COLD, MoveStrategy.WARM_INCREMENTAL):
        assert move_time_ms(busy, strategy, stop) == stop
    quiet = prediction(0.1)
    assert move_time_ms(quiet, MoveStrategy.LIVE, 40) == quiet.total_time_ms
    throttled = prediction(0.7)
    assert move_time_ms(throttled, MoveStrategy.POSTCOPY, 100) == (
        with_early_postcopy(throttled).total_time_ms
    )
