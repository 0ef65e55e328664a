"""The scheduler: invariants on random instances for both methods, waves, bounds, errors."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from vmferry.plan import (
    PlanInfeasibleError,
    PlanSpec,
    Schedule,
    TransferEstimate,
    plan,
    schedule_from_dict,
    schedule_to_dict,
)
from vmferry.plan.placement import host_link_gbps, host_slots
from vmferry.plan.problem import to_calendar
from vmferry.plan.schedule import make_waves
from vmferry.plan.synthetic import synthetic_plan


def check_invariants(spec: PlanSpec, s: Schedule) -> None:
    """Every VM once; no host slot, link or budget over its limit at any time; groups start
    together; windows respected; makespan >= lower bound; waves consistent."""
    assert sorted(m.vm for m in s.migrations) == sorted(v.name for v in spec.vms)
    by_vm = {m.vm: m for m in s.migrations}
    for v in spec.vms:
        m = by_vm[v.name]
        assert m.source == v.source and m.destination != m.source
        assert m.end_s == m.start_s + m.predicted_s and m.start_s >= 0
        if v.destination is not None:
            assert m.destination == v.destination and not m.placed
    times = sorted({m.start_s for m in s.migrations})
    for t in times:  # usage only grows at a start
        running = [m for m in s.migrations if m.start_s <= t < m.end_s]
        slots: dict[str, int] = defaultdict(int)
        bw: dict[str, int] = defaultdict(int)
        for m in running:
            for h in (m.source, m.destination):
                slots[h] += 1
                bw[h] += m.bandwidth_mbps
        for h, used in slots.items():
            assert used <= host_slots(spec.host(h), spec), (t, h)
            assert bw[h] <= round(host_link_gbps(spec.host(h), spec) * 1000), (t, h)
        if spec.fleet.bandwidth_budget_gbps is not None:
            assert sum(m.bandwidth_mbps for m in running) <= spec.fleet.bandwidth_budget_gbps * 1000
    groups: dict[str, set[int]] = defaultdict(set)
    for m in s.migrations:
        if m.group is not None:
            groups[m.group].add(m.start_s)
    assert all(len(starts) == 1 for starts in groups.values())
    if spec.windows:
        windows = spec.window_offsets()
        for m in s.migrations:
            assert any(a <= m.start_s and m.end_s <= b for a, b in windows), m
    assert s.makespan_s == max(m.end_s for m in s.migrations)
    assert s.makespan_s >= s.lower_bound_s == max(s.lower_bound_parts.values())
    if s.solver_bound_s is not None:
        assert s.solver_bound_s <= s.makespan_s
    waves = [w.number for w in s.waves]
    assert waves == list(range(1, len(waves) + 1))
    assert sorted(vm for w in s.waves for vm in w.vms) == sorted(by_vm)
    for w in s.waves:
        assert all(by_vm[vm].wave == w.number for vm in w.vms)
        assert len({by_vm[vm].start_s // s.wave_slice_s for vm in w.vms}) == 1
    starts = [w.start_s for w in s.waves]
    assert starts == sorted(starts)


def random_spec(seed: int, n: int, hosts: int) -> PlanSpec:
    rng = random.Random(seed)
    windows = None
    if rng.random() < 0.4:
        windows = [(0.0, 4000.0), (6000.0, 12000.0), (20000.0, 50000.0)]
    return synthetic_plan(
        n,
        hosts,
        seed=seed,
        slow_link_share=rng.choice((0.0, 0.3, 0.6)),
        group_share=rng.choice((0.0, 0.3)),
        anti_affinity_share=0.1,
        budget_gbps=rng.choice((6.0, 12.0, 100.0)),
        windows=windows,
    )


@pytest.mark.parametrize("seed", range(12))
def test_heuristic_invariants(seed: int) -> None:
    spec = random_spec(seed, n=40 + seed * 5, hosts=6 + seed % 4)
    check_invariants(spec, plan(spec, method="heuristic"))


@pytest.mark.parametrize("seed", range(4))
def test_cpsat_invariants(seed: int) -> None:
    spec = random_spec(100 + seed, n=16, hosts=5)
    s = plan(spec, method="cpsat", time_limit_s=2.0, workers=2)
    check_invariants(spec, s)
    assert s.makespan_s <= s.heuristic_makespan_s
    assert s.solver_status in {"optimal", "feasible"}
    assert s.method in {"cpsat", "heuristic"}


def test_larger_heuristic_instance() -> None:
    spec = synthetic_plan(600, 40, seed=7)
    s = plan(spec)  # auto: above CPSAT_AUTO_MAX_VMS, heuristic only
    assert s.method == "heuristic" and s.solver_bound_s is None
    check_invariants(spec, s)


def base(vms: list[dict[str, Any]], **extra: Any) -> PlanSpec:
    hosts = [
        {"name": "a", "cpus": 64, "memory_mb": 262144, "link_gbps": 10},
        {"name": "b", "cpus": 64, "memory_mb": 262144, "link_gbps": 10},
        {"name": "c", "cpus": 64, "memory_mb": 262144, "link_gbps": 1},
    ]
    return PlanSpec.model_validate({"version": 1, "hosts": hosts, "vms": vms, **extra})


def vm(name: str, src: str, dst: str | None, **kw: Any) -> dict[str, Any]:
    d = {"name": name, "source": src, "memory_mb": 1024, "vcpus": 1, **kw}
    if dst:
        d["destination"] = dst
    return d


def test_default_duration_and_share() -> None:
    s = plan(base([vm("x", "a", "b", memory_mb=10240), vm("y", "a", "c", memory_mb=1024)]))
    x, y = s.migration("x"), s.migration("y")
    assert x.bandwidth_mbps == 1250  # 10 Gbit/s over 8 slots
    assert x.predicted_s == 69  # 10 GiB * 8 / 1.25 Gbit/s, rounded up
    assert y.bandwidth_mbps == 250  # the 1 Gbit/s end: 4 slots
    assert s.lower_bound_parts["longest_migration"] == 69


def test_concurrency_limit_serialises() -> None:
    vms = [vm(f"v{i}", "c", "a", predicted_s=100) for i in range(8)]  # c: 1 Gbit/s, 4 slots
    s = plan(base(vms), method="heuristic")
    assert s.makespan_s == 200 == s.lower_bound_s
    assert sorted(m.start_s for m in s.migrations) == [0] * 4 + [100] * 4


def test_budget_limits_concurrency() -> None:
    vms = [vm(f"v{i}", "a", "b", predicted_s=100) for i in range(6)]
    spec = base(vms, fleet={"bandwidth_budget_gbps": 2.5})
    s = plan(spec)
    assert max(m.bandwidth_mbps for m in s.migrations) <= 2500
    check_invariants(spec, s)


def test_predictor_and_predicted_s() -> None:
    seen: list[TransferEstimate] = []

    def predict(e: TransferEstimate) -> float:
        seen.append(e)
        return 42.2

    spec = base([vm("x", "a", "b", max_downtime_ms=50), vm("y", "a", "b", predicted_s=10)])
    s = plan(spec, predict=predict)
    assert [e.vm for e in seen] == ["x"]
    assert seen[0].rate_bps == 1250e6 and seen[0].max_downtime_ms == 50
    assert s.migration("x").predicted_s == 43
    assert s.migration("x").bandwidth_mbps == 1250  # the rate the prediction assumed
    assert s.migration("y").predicted_s == 10
    assert s.migration("y").bandwidth_mbps == 859  # 1 GiB in 10 s


def test_group_starts_together_and_windows() -> None:
    vms = [vm("g1", "a", "b", group="g", predicted_s=50),
           vm("g2", "c", "b", group="g", predicted_s=300),
           *(vm(f"v{i}", "a", "c", predicted_s=80) for i in range(6))]  # fmt: skip
    spec = base(vms, windows=[{"start": 0, "end": 200}, {"start": 1000, "end": 2000}])
    for method in ("heuristic", "cpsat"):
        s = plan(spec, method=method, time_limit_s=2.0)  # type: ignore[arg-type]
        check_invariants(spec, s)
        assert s.migration("g1").start_s == s.migration("g2").start_s >= 1000


def test_impossible_schedules_name_the_constraint() -> None:
    long = base([vm("x", "a", "b", predicted_s=500)], windows=[{"start": 0, "end": 100}])
    with pytest.raises(PlanInfeasibleError, match="maintenance windows: vm x takes 500 s"):
        plan(long)
    group = [vm(f"g{i}", "c", "a", group="g") for i in range(5)]
    with pytest.raises(
        PlanInfeasibleError, match=r"concurrency: group 'g' .* on host c, which allows 4"
    ):
        plan(base(group))
    budget = base([vm("g1", "a", "b", group="g"), vm("g2", "a", "b", group="g")],
                  fleet={"bandwidth_budget_gbps": 2})  # fmt: skip
    with pytest.raises(
        PlanInfeasibleError, match=r"fleet bandwidth budget: group 'g' .* 2500 Mbit/s"
    ):
        plan(budget)


def test_waves_are_slices_of_start_times() -> None:
    waves = make_waves([0, 10, 700, 1300, 650], [5, 20, 900, 1400, 660], list("abcde"), 600)
    assert [(w.number, w.vms, w.start_s, w.end_s) for w in waves] == [
        (1, ("a", "b"), 0, 20),
        (2, ("e", "c"), 650, 900),
        (3, ("d",), 1300, 1400),
    ]


def test_to_calendar() -> None:
    assert to_calendar(50, []) == 50
    assert to_calendar(150, [(0, 100), (200, 300)]) == 250
    assert to_calendar(10, [(100, 200)]) == 110


def test_json_round_trip() -> None:
    spec = synthetic_plan(30, 5, seed=3, windows=[(0, 100000)])
    s = plan(spec, method="heuristic")
    data = schedule_to_dict(s)
    assert set(data["migrations"][0]) >= {"vm", "wave", "start_s", "end_s", "predicted_s"}
    assert schedule_from_dict(data) == s
