"""When to wake standby hosts and when consolidation may run (fleetops/power.py): DPM's
band, its two demand windows and the hysteresis between them."""

from __future__ import annotations

import pytest

from vmferry.errors import BadInputError
from vmferry.fleetops.power import DemandSample, DpmBand, PowerHost, power_decision

NOW = 10_000.0
HOSTS = [PowerHost("a", 10), PowerHost("b", 10), PowerHost("s1", 10, standby=True),
         PowerHost("s2", 20, standby=True)]  # fmt: skip


def steady(demand: dict[str, float], since: float = 2400, every: float = 60) -> list[DemandSample]:
    """Each host's demand, sampled every ``every`` s over the last ``since`` s."""
    count = int(since // every) + 1
    return [DemandSample(NOW - i * every, host, d) for host, d in demand.items()
            for i in range(count)]  # fmt: skip


def test_the_band_is_dpm_s_and_settable() -> None:
    band = DpmBand()
    assert (band.target, band.low, band.high) == (0.63, pytest.approx(0.45), 0.81)
    assert DpmBand(0.5, 0.1).high == 0.6
    for target, tolerance in ((0, 0.1), (1, 0.1), (0.5, -0.1), (0.5, 0.6), (0.9, 0.2)):
        with pytest.raises(BadInputError):
            DpmBand(target, tolerance)


def test_demand_above_the_band_wakes_the_largest_standby_host_first() -> None:
    # 18 of 20 (90 %): s2 (20) brings it to 18 / 40 = 45 %, at or under the target
    decision = power_decision(HOSTS, steady({"a": 9, "b": 9}), now=NOW)
    assert (decision.wake, decision.may_consolidate) == (("s2",), False)
    assert decision.utilisation_short == pytest.approx(0.9)
    assert decision.why == "90% over 300 s is above 81%: waking 1 brings it to 45%"


def test_it_wakes_the_fewest_that_reach_the_target_or_all_of_them() -> None:
    hosts = [PowerHost("a", 10), *(PowerHost(f"s{i}", 10, standby=True) for i in range(3))]
    assert power_decision(hosts, steady({"a": 9.5}), now=NOW).wake == ("s0",)  # 47.5 %
    assert power_decision(hosts, steady({"a": 30}), now=NOW).wake == ("s0", "s1", "s2")
    alone = power_decision(hosts[:1], steady({"a": 9.5}), now=NOW)
    assert alone.wake == () and alone.why.endswith("no host is in standby")


def test_only_the_short_window_decides_power_on() -> None:
    # busy for four minutes after 36 quiet ones: power-on sees it, the long mean is low
    samples = [s for s in steady({"a": 2, "b": 2}) if s.at < NOW - 240]
    samples += steady({"a": 10, "b": 10}, since=240)
    decision = power_decision(HOSTS, samples, now=NOW)
    assert decision.wake == ("s2",) and not decision.may_consolidate
    assert decision.utilisation_long is not None and decision.utilisation_long < 0.45
    later = power_decision(HOSTS, samples, now=NOW, on_window_s=1200)  # settable
    assert later.wake == () and later.utilisation_short is not None


def test_consolidation_needs_forty_quiet_minutes() -> None:
    quiet = power_decision(HOSTS, steady({"a": 3, "b": 4}), now=NOW)
    assert (quiet.wake, quiet.may_consolidate) == ((), True)
    assert quiet.why == "35% over 2400 s is below 45%: consolidation may run"
    # quiet for the last 5 minutes only: the 40-minute mean is inside the band
    recent = [s for s in steady({"a": 7, "b": 7}) if s.at < NOW - 300]
    recent += steady({"a": 3, "b": 3}, since=299)
    assert not power_decision(HOSTS, recent, now=NOW).may_consolidate
    short = power_decision(HOSTS, steady({"a": 3, "b": 3}, since=600), now=NOW)
    assert not short.may_consolidate
    assert short.why == "samples cover only the last 600 s of the 2400 s power-off window"
    missing = power_decision(HOSTS, steady({"a": 3}), now=NOW)
    assert (missing.may_consolidate, missing.why) == (False, "no samples over 2400 s for b")
    shorter = power_decision(HOSTS, steady({"a": 3, "b": 3}, since=600), now=NOW,
                             off_window_s=600)  # fmt: skip
    assert shorter.may_consolidate


def test_inside_the_band_nothing_happens_and_standby_samples_do_not_count() -> None:
    samples = steady({"a": 6, "b": 6, "s1": 10})
    decision = power_decision(HOSTS, samples, now=NOW)
    assert (decision.wake, decision.may_consolidate) == ((), False)
    assert decision.utilisation_long == pytest.approx(0.6)
    assert decision.why == "within the band (45%-81%): nothing to do"


def test_no_samples_decide_nothing() -> None:
    decision = power_decision(HOSTS, [], now=NOW)
    assert (decision.wake, decision.may_consolidate, decision.utilisation_short) == (
        (), False, None)  # fmt: skip


def test_after_waking_the_fleet_is_below_the_wake_point_and_above_no_power_off() -> None:
    """The hysteresis: what a wake leaves triggers neither a wake nor a power-off."""
    decision = power_decision(HOSTS, steady({"a": 9.5, "b": 9.5}), now=NOW)
    assert decision.wake == ("s2",)
    powered = [PowerHost(h.name, h.capacity, standby=h.standby and h.name not in decision.wake)
               for h in HOSTS]  # fmt: skip
    share = {"a": 19 / 3, "b": 19 / 3, "s2": 19 / 3}  # the same 19 over the woken host too
    again = power_decision(powered, steady(share), now=NOW)
    assert (again.wake, again.may_consolidate) == ((), False)


def test_windows_must_be_ordered() -> None:
    with pytest.raises(BadInputError, match="windows must be 0 < power-on <= power-off"):
        power_decision(HOSTS, [], now=NOW, on_window_s=600, off_window_s=300)
    with pytest.raises(BadInputError, match="capacity must be > 0"):
        PowerHost("z", 0)
