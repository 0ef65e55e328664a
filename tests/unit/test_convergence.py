"""The convergence policy on synthetic progress, in the regimes of the benchmark."""

from __future__ import annotations

import pytest

from vmferry.engine.convergence import (
    NEVER,
    Decision,
    PolicyConfig,
    PolicyState,
    decide,
    initial_state,
    pass_sizes,
    plan_vcpu_cap,
    predict_converge_seconds,
    stalled,
)
from vmferry.model.migration import EscalationStep, ProgressSample

MIB = 2**20
LINK = 48 * MIB  # bytes/s, a 400 Mbit/s link


def sample(t_s: float, iteration: int, remaining_mib: float, dirty_mib_s: float = 0.0,
           throughput: int = LINK) -> ProgressSample:  # fmt: skip
    return ProgressSample(
        elapsed_ms=round(t_s * 1000),
        iteration=iteration,
        memory_total_bytes=512 * MIB,
        memory_processed_bytes=round(t_s * throughput),  # the stream keeps moving
        memory_remaining_bytes=round(remaining_mib * MIB),
        dirty_rate_bytes_s=round(dirty_mib_s * MIB),
        throughput_bytes_s=throughput,
    )


def first_pass(seconds: float = 7.5) -> list[ProgressSample]:
    return [sample(0.2, 1, 512), sample(seconds / 2, 1, 200), sample(seconds, 1, 3)]


def run(samples: list[ProgressSample], config: PolicyConfig,
        state: PolicyState | None = None) -> tuple[PolicyState, list[Decision]]:  # fmt: skip
    state = state or initial_state(config)
    decisions = []
    for i in range(1, len(samples) + 1):
        decision = decide(samples[:i], state, config)
        state = decision.state
        decisions.append(decision)
    return state, decisions


def steps(decisions: list[Decision]) -> list[tuple[EscalationStep, int | None]]:
    return [(e.step, e.value) for d in decisions for e in d.escalations]


LOW = PolicyConfig()  # the default: start at 30 ms and double when pre-copy would lag


def test_idle_guest_is_left_alone() -> None:
    state, decisions = run([*first_pass(), sample(7.6, 2, 1.2, 0.5)], PolicyConfig())
    assert steps(decisions) == []
    assert state.downtime_ms == 30  # by default the low start
    ceiling, _ = run([*first_pass(), sample(7.6, 2, 1.2, 0.5)],
                     PolicyConfig(initial_downtime_ms=300))  # fmt: skip
    assert ceiling.downtime_ms == 220  # a start above the ceiling is held to it


def test_quarter_link_dirty_rate_converges_without_escalation() -> None:
    _, decisions = run([*first_pass(), sample(7.6, 2, 90, 12), sample(9.5, 3, 22, 12)],
                       PolicyConfig())  # fmt: skip
    assert steps(decisions) == []


def test_three_quarter_link_raises_downtime_to_the_maximum_then_throttles() -> None:
    _, decisions = run([*first_pass(), sample(7.6, 2, 220, 36)], LOW)
    assert steps(decisions) == [
        (EscalationStep.DOWNTIME, 60),
        (EscalationStep.DOWNTIME, 120),
        (EscalationStep.DOWNTIME, 220),  # 300 ms less the switchover overhead
        (EscalationStep.THROTTLE, 80),
    ]
    reason = decisions[-1].escalations[0].reason
    assert "pass 2" in reason and "first pass took 7.4 s" in reason


def test_downtime_stops_at_the_users_maximum() -> None:
    state, decisions = run([*first_pass(), sample(7.6, 2, 220, 36)],
                           PolicyConfig(max_downtime_ms=100, switchover_overhead_ms=0,
                                        initial_downtime_ms=30))  # fmt: skip
    assert [v for s, v in steps(decisions) if s is EscalationStep.DOWNTIME] == [60, 100]
    assert state.downtime_ms == 100


def test_the_switchover_overhead_is_kept_below_the_maximum() -> None:
    config = PolicyConfig(max_downtime_ms=300, switchover_overhead_ms=80)
    assert config.downtime_ceiling_ms == 220
    tight = PolicyConfig(max_downtime_ms=50, switchover_overhead_ms=80, initial_downtime_ms=30)
    assert tight.downtime_ceiling_ms == 10  # never below 10 ms
    assert initial_state(PolicyConfig(max_downtime_ms=20, initial_downtime_ms=30)).downtime_ms == 10


def test_faster_than_link_goes_to_postcopy_at_the_first_judgment_when_allowed() -> None:
    samples = [*first_pass(), sample(7.6, 2, 256, 72), sample(12.9, 3, 256, 70)]
    state, decisions = run(samples, PolicyConfig(allow_postcopy=True))
    assert steps(decisions) == [(EscalationStep.POSTCOPY, None)]  # no downtime step, no throttle
    assert state.postcopy and state.throttle_level == 0
    # once in post-copy nothing more is decided, not even at the timeout
    after = decide([*samples, sample(999, 4, 10, 70)], state, PolicyConfig(timeout_s=10))
    assert after.escalations == ()


def test_three_quarter_link_goes_to_postcopy_instead_of_the_throttle_when_allowed() -> None:
    """The 0.75x row: pre-copy would converge, but only throttled (see the test above
    without post-copy); with post-copy allowed it replaces the throttle at once."""
    _, decisions = run([*first_pass(), sample(7.6, 2, 220, 36)],
                       PolicyConfig(allow_postcopy=True))  # fmt: skip
    assert steps(decisions) == [(EscalationStep.POSTCOPY, None)]
    reason = decisions[-1].escalations[0].reason
    assert "first pass took 7.4 s" in reason
    assert reason.endswith("even at 220 ms downtime pre-copy would need the throttle: "
                           "post-copy instead")  # fmt: skip


def test_with_postcopy_allowed_a_stall_below_the_ceiling_raises_the_limit_first() -> None:
    """A stall the model says a higher limit may answer raises the limit; at the ceiling
    the next stall goes to post-copy, never to the throttle."""
    stuck = [sample(7.6, 2, 20, 5), sample(9, 3, 20, 5), sample(10.4, 4, 20, 5)]
    low, decisions = run([*first_pass(), *stuck], PolicyConfig(allow_postcopy=True))
    assert steps(decisions) == [(EscalationStep.DOWNTIME, 60)]
    assert not low.postcopy
    high, decisions = run([*first_pass(), *stuck],
                          PolicyConfig(allow_postcopy=True, initial_downtime_ms=220))  # fmt: skip
    assert steps(decisions) == [(EscalationStep.POSTCOPY, None)]
    assert high.postcopy and high.throttle_level == 0


def test_without_postcopy_the_throttle_is_raised_and_then_nothing_more() -> None:
    samples = [*first_pass(), sample(7.6, 2, 256, 72), sample(12.9, 3, 256, 70),
               sample(18, 4, 250, 70), sample(23, 5, 250, 70)]  # fmt: skip
    _, decisions = run(samples, PolicyConfig(allow_postcopy=False))
    throttles = [v for s, v in steps(decisions) if s is EscalationStep.THROTTLE]
    assert throttles == [80, 99]
    assert EscalationStep.POSTCOPY not in [s for s, _ in steps(decisions)]


def test_timeout_aborts_once() -> None:
    config = PolicyConfig(timeout_s=20)
    samples = [*first_pass(), sample(19.9, 2, 256, 72), sample(20.0, 2, 200, 72)]
    state, decisions = run(samples, config)
    aborts = [e for d in decisions for e in d.escalations if e.step is EscalationStep.ABORT]
    assert len(aborts) == 1 and "20 s timeout" in aborts[0].reason
    assert state.aborted
    assert decide([*samples, sample(21, 3, 100, 72)], state, config).escalations == ()


def test_each_pass_is_judged_once() -> None:
    samples = [*first_pass(), sample(7.6, 2, 220, 36), sample(8.0, 2, 200, 36),
               sample(9.0, 2, 150, 36)]  # fmt: skip
    _, decisions = run(samples, LOW)
    assert [len(d.escalations) for d in decisions[-3:]] == [4, 0, 0]


def test_stall_is_detected_from_pass_sizes() -> None:
    sizes = [(2, 200 * MIB), (3, 198 * MIB), (4, 199 * MIB)]
    assert stalled(sizes, 2, 0.9)
    assert not stalled([(2, 200 * MIB), (3, 120 * MIB), (4, 60 * MIB)], 2, 0.9)
    assert not stalled(sizes[:2], 2, 0.9)  # not enough passes to say


def test_stall_escalates_even_when_the_model_is_optimistic() -> None:
    # the model says this converges soon, but the passes stopped shrinking
    samples = [*first_pass(), sample(7.6, 2, 40, 5), sample(8.5, 3, 39, 5), sample(9.4, 4, 39, 5)]
    _, decisions = run(samples, LOW)
    assert steps(decisions) == [(EscalationStep.DOWNTIME, 60)]
    assert "not shrinking over 2 passes" in decisions[-1].escalations[0].reason


def test_pass_sizes_take_the_first_sample_of_each_pass() -> None:
    samples = [sample(0, 1, 500), sample(5, 2, 90), sample(6, 2, 40), sample(7, 3, 20)]
    assert pass_sizes(samples) == [(2, 90 * MIB), (3, 20 * MIB)]


@pytest.mark.parametrize(
    ("remaining", "dirty", "downtime", "expected"),
    [
        (10, 0, 300, 0.0),  # already fits
        (480, 0, 300, 10.0),  # no dirtying: one pass at link speed
        (220, 48, 300, NEVER),  # dirty rate = link
        (256, 72, 300, NEVER),
    ],
)
def test_predict_converge_seconds(remaining: int, dirty: int, downtime: int,
                                  expected: float) -> None:  # fmt: skip
    got = predict_converge_seconds(remaining * MIB, dirty * MIB, LINK, downtime)
    assert got == pytest.approx(expected)


def test_prediction_grows_with_the_dirty_rate() -> None:
    slow = predict_converge_seconds(220 * MIB, 36 * MIB, LINK, 300)
    fast = predict_converge_seconds(220 * MIB, 12 * MIB, LINK, 300)
    assert 10 < slow < 25 and fast < 6


def test_a_dead_stream_is_aborted() -> None:
    def at(t: float, processed_mib: int) -> ProgressSample:
        base = sample(t, 2, 100, 1)
        return ProgressSample(base.elapsed_ms, 2, base.memory_total_bytes, processed_mib * MIB,
                              base.memory_remaining_bytes, base.dirty_rate_bytes_s, 0)  # fmt: skip

    moving = [at(1, 10), at(2, 60), at(3, 110)]
    frozen = [*moving, at(7, 110), at(12, 110), at(13.1, 110)]
    state, decisions = run(frozen, PolicyConfig(stall_timeout_s=10))
    aborts = [e for d in decisions for e in d.escalations if e.step is EscalationStep.ABORT]
    assert len(aborts) == 1 and "stalled: no data moved for 10 s" in aborts[0].reason
    assert state.aborted
    _, fine = run(moving, PolicyConfig(stall_timeout_s=10))
    assert EscalationStep.ABORT not in [s for s, _ in steps(fine)]
    assert "(pass 2, 110 MiB sent" in aborts[0].reason


def test_a_slow_start_is_not_a_dead_stream() -> None:
    # libvirt starts the destination's QEMU and QEMU opens the stream before the first byte;
    # on a busy host that took more than 10 s, and the stall guard aborted a healthy move
    def at(t: float, processed_mib: int) -> ProgressSample:
        base = sample(t, 1, 100, 1)
        return ProgressSample(base.elapsed_ms, 1, base.memory_total_bytes, processed_mib * MIB,
                              base.memory_remaining_bytes, base.dirty_rate_bytes_s, 0)  # fmt: skip

    config = PolicyConfig(stall_timeout_s=10, start_timeout_s=60)
    slow_start = [at(0.5, 0), at(8, 0), at(14, 0), at(30, 0), at(31, 20), at(32, 70)]
    state, decisions = run(slow_start, config)
    assert not state.aborted
    assert EscalationStep.ABORT not in [s for s, _ in steps(decisions)]
    never = [at(0.5, 0), at(30, 0), at(60.5, 0)]
    state, decisions = run(never, config)
    aborts = [e for d in decisions for e in d.escalations if e.step is EscalationStep.ABORT]
    assert state.aborted and len(aborts) == 1
    assert "did not start: no data moved in 60 s" in aborts[0].reason


def test_no_cap_for_an_idle_or_slow_dirtying_guest() -> None:
    config = PolicyConfig()
    assert plan_vcpu_cap(512 * MIB, 0, 0.1, LINK, config).percent is None
    quarter = plan_vcpu_cap(512 * MIB, 12 * MIB, 0.8, LINK, config)
    assert quarter.percent is None and "converges by itself" in quarter.reason


def test_a_heavy_dirtier_is_capped_in_proportion() -> None:
    config = PolicyConfig()
    three_quarters = plan_vcpu_cap(512 * MIB, 36 * MIB, 0.8, LINK, config)
    assert three_quarters.percent == 27  # 80% busy x 0.25 x 48/36
    double = plan_vcpu_cap(512 * MIB, 96 * MIB, 1.0, LINK, config)
    assert double.percent == 12
    assert "never" in double.reason
    extreme = plan_vcpu_cap(512 * MIB, 960 * MIB, 1.0, LINK, config)
    assert extreme.percent == 10  # the floor: a guest keeps at least a tenth of a CPU


def test_a_cap_that_would_not_bite_is_not_set() -> None:
    # the guest uses little CPU: capping at 90%+ would change nothing
    plan = plan_vcpu_cap(512 * MIB, 150 * MIB, 1.0, 200 * MIB, PolicyConfig(), target_ratio=0.9)
    assert plan.percent is None and "would change nothing" in plan.reason


def disks(t_s: float, processed_mib: float, remaining_mib: float,
          bps_mib: float = 40.0) -> ProgressSample:  # fmt: skip
    """--copy-storage before memory moves: the disks' mirror copies, memory counters 0."""
    return ProgressSample(
        elapsed_ms=round(t_s * 1000), iteration=0, memory_total_bytes=512 * MIB,
        memory_processed_bytes=0, memory_remaining_bytes=0, dirty_rate_bytes_s=0,
        throughput_bytes_s=0, disk_total_bytes=round((processed_mib + remaining_mib) * MIB),
        disk_processed_bytes=round(processed_mib * MIB),
        disk_remaining_bytes=round(remaining_mib * MIB),
        disk_throughput_bytes_s=round(bps_mib * MIB),
    )  # fmt: skip


def test_a_long_disk_copy_is_progress_not_a_stream_that_did_not_start() -> None:
    """A 4 GiB disk at 40 MiB/s takes 100 s before memory moves: never aborted as a stream
    that did not start (the start-up's 60 s) nor as one that stalled."""
    copy = [disks(t, 40 * t, 4096 - 40 * t) for t in range(1, 100, 2)]
    state, decisions = run(copy, PolicyConfig(stall_timeout_s=10, start_timeout_s=60))
    assert not state.aborted
    assert EscalationStep.ABORT not in [s for s, _ in steps(decisions)]


def test_a_disk_copy_the_guest_outwrites_is_aborted_with_what_to_do() -> None:
    """Data moves but what is left does not shrink over the window: the guest writes its
    disks as fast as the copy goes; the move would wait for its timeout."""
    chasing = [disks(t, 40 * t, 900 - 2 * t) for t in range(1, 40)]  # shrinks 2 MiB/s
    state, decisions = run(chasing, PolicyConfig(mirror_window_s=30))
    aborts = [e for d in decisions for e in d.escalations if e.step is EscalationStep.ABORT]
    assert state.aborted and len(aborts) == 1
    assert "the disks' copy does not catch up: 838 MiB left, 898 MiB 30 s ago" in aborts[0].reason
    assert "--strategy warm-incremental" in aborts[0].reason
    catching_up = [disks(t, 40 * t, 900 - 20 * t) for t in range(1, 40)]
    state, _ = run(catching_up, PolicyConfig(mirror_window_s=30))
    assert not state.aborted


def test_a_frozen_disk_copy_is_a_stalled_stream_named_as_such() -> None:
    frozen = [disks(1, 40, 500), disks(2, 80, 460), disks(8, 80, 460), disks(13, 80, 460)]
    state, decisions = run(frozen, PolicyConfig(stall_timeout_s=10))
    aborts = [e for d in decisions for e in d.escalations if e.step is EscalationStep.ABORT]
    assert state.aborted and "the disks' copy stalled: no data moved for 11 s" in aborts[0].reason
