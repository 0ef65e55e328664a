"""The pre-copy round model and its calibration (pure)."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest

from vmferry.predict.model import (
    DEFAULT_CALIBRATION,
    MAX_ROUNDS,
    MIN_PLANE_JOBS,
    Calibration,
    Observation,
    PredictInputs,
    fit_calibration,
    percentile,
    policy_limits_ms,
    policy_would_escalate,
    predict,
    qemu_downtime_limit_ms,
)

MIB = 2**20
LINK = 50_000_000.0  # 400 Mbit/s
EXACT = Calibration(efficiency=1.0, setup_ms=0.0, switchover_ms=0.0, bytes_factor=1.0)


def inputs(**kw: object) -> PredictInputs:
    base: dict[str, object] = {"memory_bytes": 512 * MIB, "dirty_rate_bytes_s": 0.0,
                               "link_bytes_s": LINK, "zero_fraction": 0.0,
                               "downtime_limit_ms": 300}  # fmt: skip
    base.update(kw)
    return PredictInputs(**base)  # type: ignore[arg-type]


def test_an_idle_vm_sends_its_memory_once() -> None:
    p = predict(inputs(), EXACT)
    assert p.converges
    assert len(p.rounds) == 1
    assert p.transferred_bytes == 512 * MIB
    assert p.total_time_ms == round(512 * MIB / LINK * 1000)
    assert p.guest_pause_ms == 0


def test_zero_pages_are_not_sent() -> None:
    p = predict(inputs(zero_fraction=0.75), EXACT)
    assert p.rounds[0].bytes == 128 * MIB
    assert p.transferred_bytes == 128 * MIB


def test_compression_sends_fewer_bytes_in_less_time() -> None:
    plain = predict(inputs(zero_fraction=0.5), EXACT)
    zstd = predict(inputs(zero_fraction=0.5, channels=4, compression_ratio=0.25), EXACT)
    assert zstd.transferred_bytes == plain.transferred_bytes // 4
    assert zstd.total_time_ms == pytest.approx(plain.total_time_ms / 4, abs=1)


def test_compression_switches_over_with_more_left_in_the_same_pause() -> None:
    """QEMU compares the guest bytes left with the rate it measured on the wire: with the
    memory compressed to a quarter it switches with more left, paused no longer."""
    busy = {"dirty_rate_bytes_s": 0.5 * LINK, "working_set_bytes": 512 * MIB}
    plain = predict(inputs(**busy), EXACT)
    zstd = predict(inputs(**busy, compression_ratio=0.25), EXACT)
    assert plain.converges and zstd.converges
    assert len(zstd.rounds) < len(plain.rounds)
    assert 0 < zstd.guest_pause_ms <= zstd.qemu_limit_ms


def test_libvirts_downtime_is_the_pause_and_its_report_lag() -> None:
    cal = Calibration(switchover_ms=90, report_lag_ms=18)
    p = predict(inputs(), cal)
    assert p.downtime_ms == p.guest_pause_ms + 18


def test_fixed_costs_and_efficiency_add_up() -> None:
    cal = Calibration(efficiency=0.5, setup_ms=400, switchover_ms=100, bytes_factor=1.0)
    p = predict(inputs(memory_bytes=100 * MIB), cal)
    assert p.total_time_ms == round(400 + 100 * MIB / (LINK * 0.5) * 1000)  # downtime inside
    assert p.guest_pause_ms == 100


def test_a_dirtying_vm_needs_rounds_that_shrink_geometrically() -> None:
    p = predict(inputs(dirty_rate_bytes_s=0.25 * LINK, working_set_bytes=512 * MIB), EXACT)
    assert p.converges
    sizes = [r.bytes for r in p.rounds]
    assert len(sizes) >= 3
    for before, after in itertools.pairwise(sizes):
        assert after == pytest.approx(0.25 * before, rel=0.01)
    # the switch happens once what is left fits QEMU's limit: the policy's 30 ms start holds,
    # as the passes after the first take a third of it
    assert qemu_downtime_limit_ms(300) == 220  # the user's maximum less the reserve
    assert p.qemu_limit_ms == policy_limits_ms(300)[0] == 30
    assert 0 < p.guest_pause_ms <= 30
    assert p.transferred_bytes > 512 * MIB


def test_the_model_settles_on_the_limit_the_policy_would() -> None:
    assert policy_limits_ms(300) == [30, 60, 120, 220]
    assert policy_limits_ms(50) == [10]  # a maximum under the reserve: the 10 ms floor
    chosen = []
    for share in (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8):
        p = predict(inputs(dirty_rate_bytes_s=share * LINK, working_set_bytes=512 * MIB), EXACT)
        # at the limit chosen the policy would not raise it, unless it is the ceiling
        assert p.qemu_limit_ms == 220 or not policy_would_escalate(p)
        chosen.append(p.qemu_limit_ms)
    # past half the link the passes after the first outlast it (r / (1 - r) > 1 for a
    # dirty share r) at any limit: the policy goes on to its ceiling
    assert chosen == [30, 30, 30, 30, 220, 220, 220], chosen


def test_the_working_set_bounds_a_round() -> None:
    p = predict(inputs(dirty_rate_bytes_s=0.8 * LINK, working_set_bytes=32 * MIB), EXACT)
    assert all(r.bytes <= 32 * MIB for r in p.rounds[1:])
    assert p.rounds[1].bytes == 32 * MIB


def test_a_vm_dirtying_faster_than_the_link_does_not_converge() -> None:
    p = predict(inputs(dirty_rate_bytes_s=1.5 * LINK), EXACT)
    assert not p.converges
    assert p.guest_pause_ms == 0  # the figures are post-copy's: only the switchover stops it
    assert len(p.rounds) < MAX_ROUNDS


def test_ratio_just_below_one_hits_the_round_limit_or_stalls() -> None:
    p = predict(inputs(dirty_rate_bytes_s=0.99 * LINK), EXACT)
    assert not p.converges


def test_a_working_set_that_fits_the_downtime_converges_whatever_the_rate() -> None:
    small = 5 * MIB  # 5 MiB at 50 MB/s: about 105 ms, under the 220 ms limit
    p = predict(inputs(dirty_rate_bytes_s=10 * LINK, working_set_bytes=small), EXACT)
    assert p.converges
    assert p.guest_pause_ms == round(small / LINK * 1000)


@pytest.mark.parametrize("field", ["dirty_rate_bytes_s", "memory_bytes"])
def test_more_memory_or_dirtying_never_makes_it_faster(field: str) -> None:
    last_total, last_bytes = 0, 0
    for step in range(0, 12):
        value = step * 0.05 * LINK if field == "dirty_rate_bytes_s" else (64 + 64 * step) * MIB
        kw = {field: value, "working_set_bytes": 256 * MIB}
        if field == "memory_bytes":
            kw["dirty_rate_bytes_s"] = 0.2 * LINK
        p = predict(inputs(**kw), DEFAULT_CALIBRATION)
        assert p.converges
        assert p.total_time_ms >= last_total
        assert p.transferred_bytes >= last_bytes
        last_total, last_bytes = p.total_time_ms, p.transferred_bytes


def test_a_faster_link_is_never_slower() -> None:
    totals = [predict(inputs(link_bytes_s=LINK * k, dirty_rate_bytes_s=0.3 * LINK)).total_time_ms
              for k in (1, 2, 4, 8)]  # fmt: skip
    assert totals == sorted(totals, reverse=True)


def test_a_longer_downtime_limit_never_costs_more_rounds() -> None:
    rounds = [len(predict(inputs(dirty_rate_bytes_s=0.5 * LINK, downtime_limit_ms=ms)).rounds)
              for ms in (100, 300, 1000, 5000)]  # fmt: skip
    assert rounds == sorted(rounds, reverse=True)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        predict(inputs(link_bytes_s=0))


def test_policy_escalation_is_flagged_when_convergence_outlasts_the_first_pass() -> None:
    calm = predict(inputs(dirty_rate_bytes_s=0.1 * LINK, working_set_bytes=128 * MIB))
    busy = predict(inputs(dirty_rate_bytes_s=0.9 * LINK, working_set_bytes=512 * MIB))
    assert not policy_would_escalate(calm)
    assert policy_would_escalate(busy)


# -- calibration ---------------------------------------------------------------------------


def synthetic(efficiency: float, setup: float, switchover: float, n: int,
              slowdown: float = 0.0) -> list[Observation]:  # fmt: skip
    jobs = []
    for i in range(n):
        link = LINK if i % 2 else LINK / 2
        sent = (100 + 60 * i) * MIB
        final = 20.0 + 5 * i
        share = (i % 3) * 0.15
        rate = link * efficiency / (1 + slowdown * share)
        pause = round(switchover + final / efficiency)
        jobs.append(Observation(link_bytes_s=link, dirty_share=share,
                                total_time_ms=round(setup + sent / rate * 1000),
                                downtime_ms=pause + 20, guest_pause_ms=pause,
                                transferred_bytes=sent, predicted_bytes=round(sent / 1.1),
                                predicted_final_ms=final))  # fmt: skip
    return jobs


def test_calibration_recovers_the_constants_of_synthetic_jobs() -> None:
    cal = fit_calibration(synthetic(0.9, 600, 150, 8))
    assert cal.jobs == 8
    assert cal.efficiency == pytest.approx(0.9, rel=0.01)
    assert cal.setup_ms == pytest.approx(600, abs=5)
    assert cal.switchover_ms == pytest.approx(150, abs=2)
    assert cal.bytes_factor == pytest.approx(1.1, rel=0.01)
    assert cal.report_lag_ms == pytest.approx(20, abs=1)  # libvirt's figure over the pause


def test_without_the_guests_pause_the_switchover_comes_from_libvirts_figure() -> None:
    jobs = [replace(j, guest_pause_ms=None) for j in synthetic(0.9, 600, 150, 8)]
    cal = fit_calibration(jobs)
    assert cal.report_lag_ms == DEFAULT_CALIBRATION.report_lag_ms
    # libvirt's figure less the default lag: 150 + 20 - 15
    assert cal.switchover_ms == pytest.approx(155, abs=2)


def test_calibration_recovers_a_dirty_slowdown() -> None:
    cal = fit_calibration(synthetic(0.95, 500, 100, MIN_PLANE_JOBS, slowdown=2.0))
    assert cal.dirty_slowdown == pytest.approx(2.0, rel=0.02)
    assert cal.efficiency == pytest.approx(0.95, rel=0.01)
    assert cal.setup_ms == pytest.approx(500, abs=10)
    fast = predict(inputs(dirty_rate_bytes_s=0.0), cal).total_time_ms
    slow = predict(inputs(dirty_rate_bytes_s=0.3 * LINK, working_set_bytes=MIB), cal)
    assert slow.total_time_ms > fast * 1.4  # the first pass alone is 1.6x slower


def test_no_dirty_slowdown_from_few_jobs() -> None:
    cal = fit_calibration(synthetic(0.95, 500, 100, MIN_PLANE_JOBS - 1, slowdown=2.0))
    assert cal.dirty_slowdown == 0.0 and cal.jobs == MIN_PLANE_JOBS - 1


def test_too_few_jobs_keep_the_default() -> None:
    assert fit_calibration(synthetic(0.5, 3000, 500, 2)) == DEFAULT_CALIBRATION
    assert fit_calibration([]) == DEFAULT_CALIBRATION


def test_absurd_fits_fall_back_per_constant() -> None:
    jobs = [Observation(LINK, 100, 50, 100 * MIB * (i + 1), 100 * MIB * (i + 1), 10.0)
            for i in range(4)]  # fmt: skip # faster than the link: efficiency would be > 1.2
    cal = fit_calibration(jobs)
    assert cal.efficiency == DEFAULT_CALIBRATION.efficiency
    assert cal.jobs == 4


def test_a_calibrated_model_predicts_the_synthetic_truth() -> None:
    cal = fit_calibration(synthetic(0.8, 500, 120, 6))
    truth = Calibration(efficiency=0.8, setup_ms=500, switchover_ms=120, bytes_factor=1.1)
    want = predict(inputs(dirty_rate_bytes_s=0.2 * LINK, working_set_bytes=256 * MIB), truth)
    got = predict(inputs(dirty_rate_bytes_s=0.2 * LINK, working_set_bytes=256 * MIB), cal)
    assert got.total_time_ms == pytest.approx(want.total_time_ms, rel=0.02)
    assert got.guest_pause_ms == pytest.approx(want.guest_pause_ms, abs=5)


def test_percentile() -> None:
    assert percentile([3, 1, 2], 0.5) == 2
    assert percentile([0, 10], 0.9) == pytest.approx(9)
    assert math.isnan(percentile([], 0.5))
